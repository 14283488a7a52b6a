/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "units.h"

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

static const struct {
        const char *suffix;
        unsigned shift;
} size_suffixes[] = {
        { "", 0 },      { "B", 0 },
        { "K", 10 },    { "KiB", 10 },
        { "M", 20 },    { "MiB", 20 },
        { "G", 30 },    { "GiB", 30 },
        { "T", 40 },    { "TiB", 40 },
};

int parse_size(const char *s, uint64_t *ret, const char **ret_why) {
        const char *p = s, *fraction = NULL, *why = "give a number of bytes, with K, M, G or T if you like";
        uint64_t whole = 0;
        size_t n_fraction = 0;
        int shift = -1;

        if (!s || !*s)
                goto invalid;
        /* Digits, maybe a fraction: no signs, exponents, hex or spaces, which strtod() would take. */
        if (*p < '0' || *p > '9')
                goto invalid;
        for (; *p >= '0' && *p <= '9'; p++) {
                if (whole > (UINT64_MAX - (uint64_t) (*p - '0')) / 10)
                        return -ERANGE;
                whole = whole * 10 + (uint64_t) (*p - '0');
        }
        if (*p == '.') {
                fraction = ++p;
                for (; *p >= '0' && *p <= '9'; p++)
                        n_fraction++;
                if (n_fraction == 0)
                        goto invalid;
        }
        for (size_t i = 0; i < ELEMENTSOF(size_suffixes); i++)
                if (strcasecmp(p, size_suffixes[i].suffix) == 0)
                        shift = (int) size_suffixes[i].shift;
        if (shift < 0) {
                why = "the units are B, K, M, G and T (powers of 1024)";
                goto invalid;
        }

        bool nonzero_fraction = false;
        for (size_t i = 0; i < n_fraction; i++)
                nonzero_fraction = nonzero_fraction || fraction[i] != '0';
        if (nonzero_fraction && shift == 0) {
                why = "a fraction needs a unit: K, M, G or T";
                goto invalid;
        }

        if (shift > 0 && whole > (UINT64_MAX >> shift))
                return -ERANGE;
        uint64_t bytes = whole << shift;
        if (nonzero_fraction) {
                /* The fraction's bytes, rounded down: a long double holds 2^40 times 18 digits
                 * well enough for that. */
                long double f = 0, scale = 1;
                for (size_t i = 0; i < n_fraction && i < 18; i++) {
                        scale /= 10;
                        f += (long double) (fraction[i] - '0') * scale;
                }
                uint64_t extra = (uint64_t) (f * (long double) (1ULL << shift));
                if (bytes > UINT64_MAX - extra)
                        return -ERANGE;
                bytes += extra;
                if (bytes == 0) {
                        why = "that is less than one byte; 0 is written 0";
                        goto invalid;
                }
        }
        *ret = bytes;
        return 0;

invalid:
        if (ret_why)
                *ret_why = why;
        return -EINVAL;
}

char *format_bytes(char buf[static FORMAT_BYTES_MAX], uint64_t bytes) {
        static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
        double v = (double) bytes;
        size_t u = 0;

        if (bytes < 1024) {
                snprintf(buf, FORMAT_BYTES_MAX, "%" PRIu64 " B", bytes);
                return buf;
        }
        while (v >= 1024 && u + 1 < ELEMENTSOF(units)) {
                v /= 1024;
                u++;
        }
        /* 1023.96 MiB would print as "1024.0 MiB": one unit up instead. */
        if (v >= 1023.95 && u + 1 < ELEMENTSOF(units)) {
                v /= 1024;
                u++;
        }
        snprintf(buf, FORMAT_BYTES_MAX, "%.1f %s", v, units[u]);
        return buf;
}

char *format_duration(char buf[static FORMAT_DURATION_MAX], uint64_t usec) {
        uint64_t s = (usec + 500000) / 1000000;

        if (s < 60)
                snprintf(buf, FORMAT_DURATION_MAX, "%" PRIu64 "s", s);
        else if (s < 3600)
                snprintf(buf, FORMAT_DURATION_MAX, "%" PRIu64 "m%02" PRIu64 "s", s / 60, s % 60);
        else if (s < 86400)
                snprintf(buf, FORMAT_DURATION_MAX, "%" PRIu64 "h%02" PRIu64 "m", s / 3600, s % 3600 / 60);
        else
                snprintf(buf, FORMAT_DURATION_MAX, "%" PRIu64 "d%02" PRIu64 "h", s / 86400, s % 86400 / 3600);
        return buf;
}
