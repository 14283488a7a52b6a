/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
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

static bool path_is_upward(const char *p) {
        return p[0] == '.' && p[1] == '.' && IN_SET(p[2], '/', 0);
}

/* The next component of a simplified path, and where the one after it starts. */
static size_t component(const char *p, const char **ret_next) {
        size_t k = strcspn(p, "/");
        *ret_next = p + k + (p[k] == '/');
        return k;
}

int path_make_relative(const char *from_dir, const char *to, char **ret) {
        _cleanup_free_ char *from = path_simplify_dup(from_dir), *dest = path_simplify_dup(to);
        const char *f, *t;
        char *out, *w;

        if (!from || !dest)
                return -ENOMEM;
        if ((from[0] == '/') != (dest[0] == '/') || path_is_upward(from) || path_is_upward(dest))
                return -EINVAL;

        /* "." (relative) and "/" have no components of their own. */
        f = strcmp(from, ".") == 0 || strcmp(from, "/") == 0 ? "" : from + (from[0] == '/');
        t = strcmp(dest, ".") == 0 || strcmp(dest, "/") == 0 ? "" : dest + (dest[0] == '/');

        /* Past what they share, every component left of 'from' is a "..". */
        for (;;) {
                const char *fn, *tn;
                size_t fk = component(f, &fn), tk = component(t, &tn);
                if (fk == 0 || fk != tk || memcmp(f, t, fk) != 0)
                        break;
                f = fn;
                t = tn;
        }

        out = malloc(3 * strlen(f) + strlen(t) + 2);
        if (!out)
                return -ENOMEM;
        w = out;
        while (*f) {
                const char *fn;
                component(f, &fn);
                w = stpcpy(w, "../");
                f = fn;
        }
        w = stpcpy(w, t);
        if (w == out)
                w = stpcpy(w, ".");
        else if (w[-1] == '/')
                *--w = 0;
        *ret = out;
        return 0;
}
