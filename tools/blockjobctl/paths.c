/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "macro.h"
#include "path-util.h"
#include "paths.h"

/* Does a ".." in 'path' (absolute) leave a symbolic link? The kernel takes "link/.." as the parent
 * of the link's target, not of the directory the name shows, so simplifying it away would name
 * another file. */
static int dotdot_after_symlink(const char *path) {
        for (const char *p = strstr(path, "/.."); p; p = strstr(p + 1, "/..")) {
                if (p[3] != '/' && p[3] != '\0')
                        continue;               /* "/..name" */
                _cleanup_free_ char *prefix = strndup(path, p - path), *dir = NULL;
                if (!prefix)
                        return -ENOMEM;
                dir = path_simplify_dup(*prefix ? prefix : "/");
                if (!dir)
                        return -ENOMEM;
                struct stat st;
                if (lstat(dir, &st) >= 0 && S_ISLNK(st.st_mode))
                        return -ELOOP;
        }
        return 0;
}

int path_make_absolute(const char *path, char **ret) {
        _cleanup_free_ char *joined = NULL;
        int r;

        if (!path || !*path)
                return -EINVAL;
        if (path[0] == '/')
                joined = strdup(path);
        else {
                _cleanup_free_ char *cwd = getcwd(NULL, 0);
                if (!cwd)
                        return -errno;
                if (asprintf(&joined, "%s/%s", cwd, path) < 0)
                        joined = NULL;
        }
        if (!joined)
                return -ENOMEM;

        r = dotdot_after_symlink(joined);
        if (r < 0)
                return r;
        char *out = path_simplify_dup(joined);
        if (!out)
                return -ENOMEM;
        *ret = out;
        return 0;
}
