/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "error-message.h"

char *error_message_format(int r, const char *format, va_list ap) {
        char *s;

        errno = r < 0 ? -r : r;
        if (vasprintf(&s, format, ap) < 0)
                return NULL;
        return s;
}

int error_message(char **ret_error, int r, const char *format, ...) {
        va_list ap;

        if (!ret_error)
                return r;
        free(*ret_error);
        va_start(ap, format);
        *ret_error = error_message_format(r, format, ap);
        va_end(ap);
        return r;
}
