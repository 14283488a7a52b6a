/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Paths as strings, never looked up: "/a//b/./c/../d" and "/a/b/d" are the same spelling. */

#include <stdbool.h>

/* The path with repeated slashes, "." and trailing slashes dropped and ".." applied to the part
 * before it ("/.." is "/"); relative paths stay relative. NULL when out of memory. */
char *path_simplify_dup(const char *path);
/* Do 'a' and 'b' spell the same path, once simplified? */
bool path_equal(const char *a, const char *b);
/* The path that names 'to' from directory 'from_dir', lexically: "/a/b" to "/a/c/d" is "../c/d".
 * Both are simplified first and must be absolute (or both relative, neither starting with "..");
 * -EINVAL otherwise. Nothing is looked up, so a symlinked directory that a ".." leaves is taken
 * as the place its name says, not where it leads. */
int path_make_relative(const char *from_dir, const char *to, char **ret);
