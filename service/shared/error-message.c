/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "error-message.h"
#include "escape.h"
#include "macro.h"

char *error_message_format(int r, const char *format, va_list ap) {
        _cleanup_free_ char *s = NULL;

        errno = r < 0 ? -r : r;
        if (vasprintf(&s, format, ap) < 0)
                return NULL;
        /* Messages name files, and names come from images and callers: whatever bytes they hold
         * are shown escaped, so that the message is valid UTF-8 (D-Bus refuses anything else)
         * and holds no control characters, wherever it ends up. */
        return escape_untrusted(s);
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
