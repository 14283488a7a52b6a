/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Paths as the service wants them: absolute, without "." or ".." components. A relative path is
 * taken relative to the working directory (the service does not share it), "." and ".." are
 * taken away by name, and symbolic links are left alone: the service resolves names with the
 * caller's rights, and a polkit rule reads the path the kernel will walk. A ".." after a
 * component that is a symbolic link cannot be taken away by name (the kernel would go to the
 * link target's parent): that is -ELOOP. */
int path_make_absolute(const char *path, char **ret);
