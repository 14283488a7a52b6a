/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "escape.h"
#include "log.h"

/* Fields of our own in a journal entry: MESSAGE, PRIORITY, CODE_FILE, CODE_LINE, CODE_FUNC,
 * SYSLOG_IDENTIFIER, ERRNO. */
#define LOG_OWN_FIELDS 7
/* Fields a caller may add: more is a programming error, and the rest are dropped. */
#define LOG_EXTRA_FIELDS_MAX 16

static int max_level = LOG_INFO;
static LogJournalSendv journal_sendv;

void log_set_max_level(int level) {
        max_level = level;
}

int log_get_max_level(void) {
        return max_level;
}

/* JOURNAL_STREAM is "<device>:<inode>" of the stream systemd connected; it is inherited, so it
 * counts only if standard error is still that very stream (not redirected by whoever ran us). */
static bool stderr_is_journal(void) {
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;
        char *end;

        if (!e || !*e)
                return false;
        errno = 0;
        dev = strtoull(e, &end, 10);
        if (errno != 0 || end == e || *end != ':')
                return false;
        e = end + 1;
        ino = strtoull(e, &end, 10);
        if (errno != 0 || end == e || *end != '\0')
                return false;

        if (fstat(STDERR_FILENO, &st) < 0)
                return false;
        return st.st_dev == (dev_t) dev && st.st_ino == (ino_t) ino;
}

void log_open(LogJournalSendv sendv) {
        journal_sendv = sendv && stderr_is_journal() ? sendv : NULL;
}

bool log_to_journal(void) {
        return journal_sendv;
}

static void log_to_stderr(int level, const char *text, const char *file, int line) {
        if (max_level >= LOG_DEBUG)
                fprintf(stderr, "<%d>%s (%s:%d)\n", level, text, file, line);
        else
                fprintf(stderr, "<%d>%s\n", level, text);
}

#define IOVEC_STR(s) ((struct iovec) { .iov_base = (char *) (s), .iov_len = strlen(s) })

/* Returns false if the journal did not take it: the caller says it on stderr then. */
static bool log_to_journal_fields(int level, int error, const char *text, const char *file, int line,
                                  const char *func, const char *const *fields) {
        struct iovec iov[LOG_OWN_FIELDS + LOG_EXTRA_FIELDS_MAX];
        char priority[sizeof("PRIORITY=") + 12], code_line[sizeof("CODE_LINE=") + 12], errno_field[sizeof("ERRNO=") + 12];
        _cleanup_free_ char *message = NULL, *code_file = NULL, *code_func = NULL, *identifier = NULL;
        size_t n = 0;

        if (asprintf(&message, "MESSAGE=%s", text) < 0 || asprintf(&code_file, "CODE_FILE=%s", file) < 0 ||
            asprintf(&code_func, "CODE_FUNC=%s", func) < 0 ||
            asprintf(&identifier, "SYSLOG_IDENTIFIER=%s", program_invocation_short_name) < 0)
                return false;
        (void) snprintf(priority, sizeof(priority), "PRIORITY=%d", level);
        (void) snprintf(code_line, sizeof(code_line), "CODE_LINE=%d", line);

        iov[n++] = IOVEC_STR(message);
        iov[n++] = IOVEC_STR(priority);
        iov[n++] = IOVEC_STR(code_file);
        iov[n++] = IOVEC_STR(code_line);
        iov[n++] = IOVEC_STR(code_func);
        iov[n++] = IOVEC_STR(identifier);
        if (error > 0) {
                (void) snprintf(errno_field, sizeof(errno_field), "ERRNO=%d", error);
                iov[n++] = IOVEC_STR(errno_field);
        }
        for (size_t i = 0; fields && fields[i] && n < ELEMENTSOF(iov); i++)
                iov[n++] = IOVEC_STR(fields[i]);

        return journal_sendv(iov, (int) n) >= 0;
}

static int log_dispatch(int level, int error, const char *file, int line, const char *func,
                        const char *const *fields, const char *format, va_list ap) {
        int saved_errno = errno;
        char buffer[2048];

        /* %m in the format refers to the error we were given, not to whatever errno happens to be. */
        errno = error;
        (void) vsnprintf(buffer, sizeof(buffer), format, ap);

        /* One line per message, whatever names of files and images it carries: a name with a
         * "\n<0>" in it must not forge a line of its own, at a level of its own. */
        _cleanup_free_ char *escaped = escape_untrusted(buffer);
        if (!escaped)
                for (char *p = buffer; *p; p++)
                        if ((unsigned char) *p < 0x20 || *p == 0x7f)
                                *p = '?';
        const char *text = escaped ?: buffer;

        if (!journal_sendv || !log_to_journal_fields(level, error, text, file, line, func, fields))
                log_to_stderr(level, text, file, line);

        errno = saved_errno;
        return -error;
}

/* Callers pass either a negative errno (our convention) or a positive one: normalized here, and
 * returned negative. */
static int log_fullv(int level, int error, const char *file, int line, const char *func, const char *const *fields,
                     const char *format, va_list ap) {
        if (error < 0)
                error = -error;
        if (level <= max_level)
                (void) log_dispatch(level, error, file, line, func, fields, format, ap);
        return -error;
}

int log_internal(int level, int error, const char *file, int line, const char *func, const char *format, ...) {
        va_list ap;
        int r;

        va_start(ap, format);
        r = log_fullv(level, error, file, line, func, NULL, format, ap);
        va_end(ap);
        return r;
}

int log_struct_internal(int level, int error, const char *file, int line, const char *func, const char *const *fields,
                        const char *format, ...) {
        va_list ap;
        int r;

        va_start(ap, format);
        r = log_fullv(level, error, file, line, func, fields, format, ap);
        va_end(ap);
        return r;
}
