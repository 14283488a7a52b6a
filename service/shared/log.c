/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <stdarg.h>
#include <stdio.h>

#include "escape.h"
#include "log.h"

static int max_level = LOG_INFO;

void log_set_max_level(int level) {
        max_level = level;
}

int log_get_max_level(void) {
        return max_level;
}

int log_internal(int level, int error, const char *file, int line, const char *format, ...) {
        int saved_errno = errno;
        char buffer[2048];
        va_list ap;

        /* Callers pass either a negative errno (our convention) or a positive one: normalize. */
        if (error < 0)
                error = -error;

        if (level > max_level)
                return -error;

        /* %m in the format refers to the error we were given, not to whatever errno happens to be. */
        errno = error;
        va_start(ap, format);
        (void) vsnprintf(buffer, sizeof(buffer), format, ap);
        va_end(ap);

        /* One line per message, whatever names of files and images it carries: a name with a
         * "\n<0>" in it must not forge a line of its own, at a level of its own. */
        _cleanup_free_ char *escaped = escape_untrusted(buffer);
        if (!escaped)
                for (char *p = buffer; *p; p++)
                        if ((unsigned char) *p < 0x20 || *p == 0x7f)
                                *p = '?';
        const char *text = escaped ?: buffer;

        if (max_level >= LOG_DEBUG)
                fprintf(stderr, "<%d>%s (%s:%d)\n", level, text, file, line);
        else
                fprintf(stderr, "<%d>%s\n", level, text);

        errno = saved_errno;
        return -error;
}
