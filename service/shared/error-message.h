/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Failing with a message for the caller. Functions that open or create things (images, targets,
 * files opened for a caller) return a negative errno and, through 'ret_error', a message that
 * names what failed and why: it ends up in a D-Bus error reply. Messages are escaped as
 * escape.h says, since the names in them come from images and callers. */

#include <stdarg.h>

#include "macro.h"

/* Formats the message into *ret_error (if ret_error is not NULL; a message already there is
 * replaced) and returns r, so that "return error_message(ret_error, r, ...);" fails in one
 * statement. %m in the format names -r. */
int error_message(char **ret_error, int r, const char *format, ...) _printf_(3, 4);
/* The message alone (NULL when out of memory). */
char *error_message_format(int r, const char *format, va_list ap) _printf_(2, 0);
