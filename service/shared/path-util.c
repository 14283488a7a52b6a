/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "path-util.h"

char *path_simplify_dup(const char *path) {
        size_t n = strlen(path), len = 0;
        bool absolute = path[0] == '/';
        char *out;

        out = malloc(n + 2);
        if (!out)
                return NULL;
        if (absolute)
                out[len++] = '/';

        for (const char *p = path; *p;) {
                const char *end;
                size_t k;

                while (*p == '/')
                        p++;
                end = strchrnul(p, '/');
                k = (size_t) (end - p);
                if (k == 0 || (k == 1 && p[0] == '.')) {
                        p = end;
                        continue;
                }
                if (k == 2 && p[0] == '.' && p[1] == '.' && len > (size_t) absolute &&
                    !(len >= 2 && out[len - 1] == '.' && out[len - 2] == '.' && (len == 2 || out[len - 3] == '/'))) {
                        /* Drop the last component (and its slash). */
                        while (len > (size_t) absolute && out[len - 1] != '/')
                                len--;
                        if (len > (size_t) absolute)
                                len--;
                        p = end;
                        continue;
                }
                if (k == 2 && p[0] == '.' && p[1] == '.' && absolute && len == 1) {
                        p = end;        /* "/.." is "/" */
                        continue;
                }
                if (len > 0 && out[len - 1] != '/')
                        out[len++] = '/';
                memcpy(out + len, p, k);
                len += k;
                p = end;
        }
        if (len == 0)
                out[len++] = '.';
        out[len] = 0;
        return out;
}

bool path_equal(const char *a, const char *b) {
        _cleanup_free_ char *x = path_simplify_dup(a), *y = path_simplify_dup(b);

        if (!x || !y)
                return strcmp(a, b) == 0;
        return strcmp(x, y) == 0;
}
