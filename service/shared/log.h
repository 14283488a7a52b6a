/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Logging to stderr with sd-daemon(3) level prefixes ("<3>…"), which journald turns into priorities
 * when the daemon runs as a systemd service. The *_errno variants return the negative errno they
 * were given so that "return log_error_errno(r, …);" reports and propagates in one statement. */

#include <syslog.h>

#include "macro.h"

void log_set_max_level(int level);
int log_get_max_level(void);

int log_internal(int level, int error, const char *file, int line, const char *format, ...) _printf_(5, 6);

#define log_full_errno(level, error, ...) log_internal((level), (error), __FILE__, __LINE__, __VA_ARGS__)

#define log_debug(...) log_full_errno(LOG_DEBUG, 0, __VA_ARGS__)
#define log_info(...) log_full_errno(LOG_INFO, 0, __VA_ARGS__)
#define log_notice(...) log_full_errno(LOG_NOTICE, 0, __VA_ARGS__)
#define log_warning(...) log_full_errno(LOG_WARNING, 0, __VA_ARGS__)
#define log_error(...) log_full_errno(LOG_ERR, 0, __VA_ARGS__)

#define log_debug_errno(error, ...) log_full_errno(LOG_DEBUG, (error), __VA_ARGS__)
#define log_warning_errno(error, ...) log_full_errno(LOG_WARNING, (error), __VA_ARGS__)
#define log_error_errno(error, ...) log_full_errno(LOG_ERR, (error), __VA_ARGS__)

#define log_oom() log_error_errno(-ENOMEM, "Out of memory.")
