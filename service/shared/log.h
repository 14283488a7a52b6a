/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Logging, to the journal when standard error is the journal (JOURNAL_STREAM names it, as
 * systemd sets it for a service whose StandardError= is the journal) so that structured fields
 * survive, and otherwise to stderr with sd-daemon(3) level prefixes ("<3>…"). The *_errno
 * variants return the negative errno they were given so that "return log_error_errno(r, …);"
 * reports and propagates in one statement.
 *
 * Text is escaped (escape.h) wherever it goes: on stderr so that a name with "\n<0>" in it cannot
 * forge a line of its own, and in the journal's MESSAGE so that journalctl shows the same as
 * stderr would. Other journal fields are binary-safe and carry what they are given. */

#include <stdbool.h>
#include <sys/uio.h>
#include <syslog.h>

#include "macro.h"

void log_set_max_level(int level);
int log_get_max_level(void);

/* sd_journal_sendv(), handed in by the daemon: this file stays free of libsystemd, so that the
 * programs that share it (blockjobd-opener, which runs as the caller) need not link it. */
typedef int (*LogJournalSendv)(const struct iovec *iov, int n);
/* Decides where logs go: the journal through 'sendv' if standard error is the journal, else
 * stderr. Call once at start, before any thread runs. NULL: stderr. */
void log_open(LogJournalSendv sendv);
/* Whether entries go to the journal (log_open() found standard error to be it). */
bool log_to_journal(void);

int log_internal(int level, int error, const char *file, int line, const char *func, const char *format, ...)
        _printf_(6, 7);
/* An entry with fields of its own: 'fields' are "NAME=value" strings (NULL-terminated), sent as
 * they are to the journal, left out on stderr, where only the message goes. */
int log_struct_internal(int level, int error, const char *file, int line, const char *func, const char *const *fields,
                        const char *format, ...) _printf_(7, 8);

#define log_full_errno(level, error, ...) \
        log_internal((level), (error), __FILE__, __LINE__, __func__, __VA_ARGS__)
#define log_struct(level, fields, ...) \
        log_struct_internal((level), 0, __FILE__, __LINE__, __func__, (fields), __VA_ARGS__)

#define log_debug(...) log_full_errno(LOG_DEBUG, 0, __VA_ARGS__)
#define log_info(...) log_full_errno(LOG_INFO, 0, __VA_ARGS__)
#define log_notice(...) log_full_errno(LOG_NOTICE, 0, __VA_ARGS__)
#define log_warning(...) log_full_errno(LOG_WARNING, 0, __VA_ARGS__)
#define log_error(...) log_full_errno(LOG_ERR, 0, __VA_ARGS__)

#define log_debug_errno(error, ...) log_full_errno(LOG_DEBUG, (error), __VA_ARGS__)
#define log_notice_errno(error, ...) log_full_errno(LOG_NOTICE, (error), __VA_ARGS__)
#define log_warning_errno(error, ...) log_full_errno(LOG_WARNING, (error), __VA_ARGS__)
#define log_error_errno(error, ...) log_full_errno(LOG_ERR, (error), __VA_ARGS__)

#define log_oom() log_error_errno(-ENOMEM, "Out of memory.")
