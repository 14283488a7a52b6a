/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "escape.h"

static bool continuation(unsigned char c, unsigned char lo, unsigned char hi) {
        return c >= lo && c <= hi;
}

/* The length of the valid UTF-8 sequence at p, 0 if there is none (a stray or missing
 * continuation byte, an overlong form, a surrogate, beyond U+10FFFF). The terminating NUL is
 * never a continuation byte, so this does not read past the string. */
static size_t utf8_sequence_length(const unsigned char *p) {
        unsigned char c = p[0];

        if (c < 0x80)
                return 1;
        if (c >= 0xc2 && c <= 0xdf)
                return continuation(p[1], 0x80, 0xbf) ? 2 : 0;
        if (c >= 0xe0 && c <= 0xef) {
                unsigned char lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
                return continuation(p[1], lo, hi) && continuation(p[2], 0x80, 0xbf) ? 3 : 0;
        }
        if (c >= 0xf0 && c <= 0xf4) {
                unsigned char lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
                return continuation(p[1], lo, hi) && continuation(p[2], 0x80, 0xbf) &&
                       continuation(p[3], 0x80, 0xbf) ? 4 : 0;
        }
        return 0;
}

static bool is_control(const unsigned char *p, size_t n) {
        if (n == 1)
                return p[0] < 0x20 || p[0] == 0x7f;
        /* C1: U+0080 to U+009F, which UTF-8 spells c2 80 to c2 9f. */
        return n == 2 && p[0] == 0xc2 && p[1] < 0xa0;
}

/* Does the escaper write the byte at p as \xNN? n is what utf8_sequence_length() said of the
 * sequence it starts (0: not valid UTF-8). Control characters always; the backslash only where
 * the text must give back its bytes (xescape()). */
static bool must_escape(const unsigned char *p, size_t n, bool backslash) {
        return n == 0 || is_control(p, n) || (backslash && n == 1 && p[0] == '\\');
}

static char *escape(const char *s, bool backslash) {
        static const char hex[] = "0123456789abcdef";
        const unsigned char *p = (const unsigned char *) s;
        char *ret, *q;

        /* At most four characters for each byte. */
        ret = q = malloc(strlen(s) * 4 + 1);
        if (!ret)
                return NULL;

        while (*p) {
                size_t n = utf8_sequence_length(p);

                if (!must_escape(p, n, backslash)) {
                        memcpy(q, p, n);
                        q += n;
                        p += n;
                        continue;
                }
                /* A control character is escaped whole; of invalid UTF-8, one byte at a time,
                 * and the next byte is looked at afresh. */
                for (size_t i = 0; i < (n ?: 1); i++) {
                        *q++ = '\\';
                        *q++ = 'x';
                        *q++ = hex[p[i] >> 4];
                        *q++ = hex[p[i] & 0xf];
                }
                p += n ?: 1;
        }
        *q = '\0';
        return ret;
}

char *escape_untrusted(const char *s) {
        return escape(s, false);
}

char *xescape(const char *s) {
        return escape(s, true);
}

static int lower_hex_digit(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        return -1;
}

int xunescape(const char *s, char **ret) {
        char *decoded, *q, *again;
        bool canonical;

        decoded = q = malloc(strlen(s) + 1);
        if (!decoded)
                return -ENOMEM;

        for (const char *p = s; *p;) {
                int hi, lo;

                if (*p != '\\') {
                        *q++ = *p++;
                        continue;
                }
                if (p[1] != 'x' || (hi = lower_hex_digit(p[2])) < 0 || (lo = lower_hex_digit(p[3])) < 0 ||
                    (hi == 0 && lo == 0)) {
                        free(decoded);
                        return -EINVAL;
                }
                *q++ = (char) (hi << 4 | lo);
                p += 4;
        }
        *q = '\0';

        /* Only what xescape() writes is accepted: a byte left raw that it would escape (a control
         * character, invalid UTF-8), or escaped where it would be left raw, means the text did not
         * come from it. Escaping the result again and comparing says exactly that. */
        again = xescape(decoded);
        if (!again) {
                free(decoded);
                return -ENOMEM;
        }
        canonical = strcmp(again, s) == 0;
        free(again);
        if (!canonical) {
                free(decoded);
                return -EINVAL;
        }
        *ret = decoded;
        return 0;
}
