/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "paths.h"

int path_make_absolute(const char *path, char **ret) {
        char *joined = NULL, *out, *save = NULL;
        size_t len = 0;

        if (!path || !*path)
                return -EINVAL;
        if (path[0] == '/')
                joined = strdup(path);
        else {
                char *cwd = getcwd(NULL, 0);
                if (!cwd)
                        return -errno;
                if (asprintf(&joined, "%s/%s", cwd, path) < 0)
                        joined = NULL;
                free(cwd);
        }
        if (!joined)
                return -ENOMEM;

        out = malloc(strlen(joined) + 2);
        if (!out) {
                free(joined);
                return -ENOMEM;
        }
        out[0] = 0;
        for (char *c = strtok_r(joined, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
                if (strcmp(c, ".") == 0)
                        continue;
                if (strcmp(c, "..") == 0) {
                        struct stat st;
                        /* "link/.." is the link target's parent to the kernel, not this directory. */
                        if (len > 0 && lstat(out, &st) >= 0 && S_ISLNK(st.st_mode)) {
                                free(joined);
                                free(out);
                                return -ELOOP;
                        }
                        while (len > 0 && out[len - 1] != '/')
                                len--;
                        if (len > 0)
                                len--;  /* the '/' before it */
                        out[len] = 0;
                        continue;
                }
                out[len++] = '/';
                strcpy(out + len, c);
                len += strlen(c);
        }
        if (len == 0)
                strcpy(out, "/");
        free(joined);
        *ret = out;
        return 0;
}
