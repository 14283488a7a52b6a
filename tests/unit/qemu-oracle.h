/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* QEMU's tools as the oracle: qemu-img and qemu-io make images and say what they contain. */

#include <gio/gio.h>
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

/* `qemu-img info -U`'s bitmaps of 'image', as "name:granularity:flag,flag" each, space-separated
 * (flags as QEMU names them: "auto", "in-use"). */
char *oracle_bitmap_list(const char *image);

typedef struct OracleRange {
        uint64_t start, length;
} OracleRange;

/* What qemu-nbd exports of persistent bitmap 'name' of the qcow2 'image' (`qemu-nbd -r -B NAME`,
 * read through `qemu-img map` with x-dirty-bitmap): the dirty ranges, merged, as OracleRange.
 * The socket and pid file live in 'dir'. qemu-nbd refuses a bitmap that is in use or
 * inconsistent: that fails the test. */
GArray *oracle_dirty(const char *image, const char *name, const char *dir);
/* The same for each of 'names' (NULL-terminated), from one qemu-nbd: name → GArray. */
GHashTable *oracle_dirty_all(const char *image, const char *const *names, const char *dir);

/* Does anyone hold QEMU's lock byte 'offset' of the file (100 + permission: holds it; 200 +
 * permission: denies it to others)? */
bool oracle_lock_byte_held(const char *path, int offset);
/* qemu-io, interactive, keeping the image open with its locks until its input ends, as a running
 * QEMU would: returned once it holds them (a writer byte 101, a reader 100; over qcow2 both deny
 * other writers, 201). oracle_qemu_io_release() ends it. */
GSubprocess *oracle_qemu_io_hold(const char *path, const char *format, bool read_only);
void oracle_qemu_io_release(GSubprocess *p);
