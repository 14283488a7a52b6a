/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Paths as strings, never looked up: "/a//b/./c/../d" and "/a/b/d" are the same spelling. */

#include <stdbool.h>

/* The path with repeated slashes, "." and trailing slashes dropped and ".." applied to the part
 * before it ("/.." is "/"); relative paths stay relative. NULL when out of memory. */
char *path_simplify_dup(const char *path);
/* Do 'a' and 'b' spell the same path, once simplified? */
bool path_equal(const char *a, const char *b);
