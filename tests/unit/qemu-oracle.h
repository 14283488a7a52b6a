/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* QEMU's tools as the oracle: qemu-img and qemu-io make images and say what they contain. */

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct OracleExtent {
        uint64_t start, length;
        int depth;
        bool present, zero, data;
} OracleExtent;

/* Is the oracle installed? If not, says what to install. */
bool oracle_available(void);

/* Runs a command line (split like a shell would, no shell features) and fails the test unless it
 * exits 0. Returns its standard output (g_free it). */
char *oracle_run(const char *format, ...) G_GNUC_PRINTF(1, 2);
/* The same, but returns the exit status and fills the outputs. */
int oracle_try(char **ret_out, char **ret_err, const char *format, ...) G_GNUC_PRINTF(3, 4);

/* `qemu-img map --output=json`, adjacent extents with equal attributes merged. */
GArray *oracle_map(const char *image);
/* Merge adjacent extents that say the same (qemu-img map also splits where host offsets jump). */
void oracle_merge(GArray *extents);
/* What the guest reads: `qemu-img convert -O raw` of the image, in memory. */
GBytes *oracle_read_all(const char *image, const char *dir);
