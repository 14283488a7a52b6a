/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Small helpers in the spirit of systemd's basic/macro.h: scope-bound cleanup, ownership transfer,
 * array sizes. Everything here is header-only and has no dependency beyond libc. */

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _likely_(x) (__builtin_expect(!!(x), 1))
#define _unlikely_(x) (__builtin_expect(!!(x), 0))
#define _warn_unused_result_ __attribute__((warn_unused_result))

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

/* GLib (the tests) defines the same two. */
#ifndef MIN
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#endif
#ifndef MAX
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#endif

/* Hand over ownership of a pointer, leaving NULL behind so that a _cleanup_ handler does nothing. */
#define TAKE_PTR(p)                     \
        ({                              \
                typeof(p) _p_ = (p);    \
                (p) = NULL;             \
                _p_;                    \
        })

#define TAKE_FD(fd)                     \
        ({                              \
                int _fd_ = (fd);        \
                (fd) = -EBADF;          \
                _fd_;                   \
        })

static inline void freep(void *p) {
        free(*(void **) p);
}
#define _cleanup_free_ _cleanup_(freep)

/* Close an fd, preserving errno, and return -EBADF so that callers can write fd = safe_close(fd). */
static inline int safe_close(int fd) {
        if (fd >= 0) {
                int saved_errno = errno;
                (void) close(fd);
                errno = saved_errno;
        }
        return -EBADF;
}

static inline void closep(int *fd) {
        safe_close(*fd);
}
#define _cleanup_close_ _cleanup_(closep)

static inline void fclosep(FILE **f) {
        if (*f)
                (void) fclose(*f);
}

#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func)         \
        static inline void func##p(type *p) {           \
                if (*p)                                 \
                        func(*p);                       \
        }

static inline const char *strempty(const char *s) {
        return s ?: "";
}

static inline int negative_errno(void) {
        /* errno is always positive after a failing libc call; guard against a zero anyway so that a
         * caller never mistakes a failure for success. */
        return errno > 0 ? -errno : -EIO;
}

#define NSEC_PER_SEC UINT64_C(1000000000)
#define NSEC_PER_MSEC UINT64_C(1000000)
#define NSEC_PER_USEC UINT64_C(1000)
#define USEC_PER_SEC UINT64_C(1000000)

/* IN_SET(x, a, b, c): is x one of the listed values? */
#define IN_SET(x, first, ...)                                                   \
        ({                                                                      \
                const typeof(first) _set_[] = { first, __VA_ARGS__ };           \
                const typeof(first) _x_ = (x);                                  \
                bool _found_ = false;                                           \
                for (size_t _i_ = 0; _i_ < ELEMENTSOF(_set_); _i_++)            \
                        if (_set_[_i_] == _x_) {                                \
                                _found_ = true;                                 \
                                break;                                          \
                        }                                                       \
                _found_;                                                        \
        })

/* An assertion that is never compiled out: for calls whose side effect is needed. */
#define assert_se(expr)                                                                         \
        do {                                                                                    \
                if (_unlikely_(!(expr)))                                                        \
                        abort();                                                                \
        } while (0)
