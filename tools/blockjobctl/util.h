/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* What every part of blockjobctl shares: the bus names, cleanup helpers, messages, exit statuses,
 * and the escaping of whatever the service sends before it is printed. */

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-bus.h>

#define BUS_NAME "org.blockjobd.Jobs1"
#define MANAGER_PATH "/org/blockjobd/Jobs1"
#define MANAGER_IFACE "org.blockjobd.Jobs1.Manager"
#define JOB_IFACE "org.blockjobd.Jobs1.Job"
#define JOB_PREFIX "/org/blockjobd/Jobs1/job"

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

static inline void freep(void *p) {
        free(*(void **) p);
}
#define _cleanup_free_ _cleanup_(freep)

static inline void *take_ptr_(void **p) {
        void *v = *p;
        *p = NULL;
        return v;
}
#define TAKE_PTR(p) ((__typeof__(p)) take_ptr_((void **) &(p)))

static inline bool streq(const char *a, const char *b) {
        return a && b && strcmp(a, b) == 0;
}

/* The exit statuses, documented in --help and blockjobctl(1). Internally, functions return a
 * negative errno; what the user learns from the exit status is one of these. */
enum {
        EXIT_OK = 0,
        EXIT_JOB_FAILED = 1,            /* the job failed or was cancelled */
        EXIT_USAGE = 2,                 /* a wrong command line */
        EXIT_REFUSED = 3,               /* blockjobd refused the call (no such job, wrong state, bad file, ...) */
        EXIT_NOT_AUTHORIZED = 4,        /* polkit or the file's permissions said no */
        EXIT_LOST = 5,                  /* no bus, blockjobd went away, or the job vanished before its result */
        EXIT_STOPPED = 6,               /* the job is paused by an I/O error and waits for resume or cancel */
        EXIT_INTERRUPTED = 130,         /* Ctrl-C or SIGTERM while waiting; the job goes on */
};

/* The exit status main() returns, set by the first failure that has an opinion. */
extern int exit_status;
void set_exit_status(int status);

/* "blockjobctl: ..." on stderr; return -EINVAL (or the errno given with log_errno). */
int log_error(const char *format, ...) _printf_(1, 2);
int log_warning(const char *format, ...) _printf_(1, 2);
/* A usage error: the message, exit status 2. Returns -EINVAL. */
int log_usage(const char *format, ...) _printf_(1, 2);
/* Out of memory: there is nothing left to do. */
_Noreturn void oom(void);

/* Text from the service (ids, file names, messages), printable: see service/shared/escape.h. */
char *esc(const char *s);

/* The failure of a call: prints "WHAT: MESSAGE" with the service's own text, sets the exit status
 * from the error's name (not authorized, refused, lost), and returns a negative errno. */
int bus_fail(const sd_bus_error *error, int r, const char *what, ...) _printf_(3, 4);
int exit_status_for_bus_error(const sd_bus_error *error);

/* JSON output: a string, escaped as on a terminal, then as JSON. */
void json_string(FILE *f, const char *s);
