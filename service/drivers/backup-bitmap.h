/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* A backup's persistent dirty bitmap (QEMU's BackupCommon 'bitmap' and 'bitmap-mode'): with
 * sync=bitmap it says what to copy; with any sync mode, bitmap-mode says what becomes of it at the
 * job's end.
 *
 * The bitmap is one of the source's top layer's, read when the job is created. The copy map is
 * QEMU's block-copy bitmap: the bitmap's dirty granules at the backup's cluster (the target's
 * cluster, 64 KiB at least), so that a partly dirty cluster is copied whole, read from the
 * source, as QEMU's backup does; the job's total is the bytes of its dirty clusters.
 *
 * At the end, as QEMU's backup_cleanup_sync_bitmap(): on-success clears the bitmap when the job
 * commits (in a grouped transaction: when every member commits) and leaves it as it was when the
 * job fails or is cancelled; always clears it at commit, and at abort leaves in it what was not
 * copied (with sync=full or top: the whole disk past what was copied, as QEMU's copy bitmap
 * starts full) if the target is kept; never leaves it alone. QEMU's always assumes the partial
 * target stays: here that holds only for a target written in place (a block device or a
 * caller's target-fd, target-file.h). A new file is removed at abort, so what was copied into it
 * is in no backup: always then leaves the bitmap as it was, as on-success does, or the next
 * incremental would miss those changes.
 *
 * Writing the bitmap never writes the source's data: only the bitmap directory and tables change,
 * through image_bitmap_clear() / image_bitmap_replace(), which are crash safe. The source is read
 * during the job through a read-only image holding QEMU's reader locks (nobody writes it
 * meanwhile); the bitmap is written once the copy is over: at prepare the read-only image is
 * closed and the top layer alone is opened for writing from the descriptor the caller's rights
 * opened read-write, taking QEMU's write lock. If someone else holds the file then (a QEMU, or
 * another job reading it), prepare fails and so does the job, leaving the bitmap as it was: a
 * job never reports success with a bitmap it could not clear. Between our readers' locks going
 * and the write lock coming, a writer could slip in, write the disk (its bitmap recording it, or
 * not: a bit already set stays set) and go; clearing the bitmap would then forget that write.
 * So the file's mtime and ctime, taken once the readers' locks were held, must be unchanged once
 * the write lock is: any write (QEMU marks bitmaps in_use as soon as it opens an image for
 * writing) fails the job instead, bitmap untouched. */

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "image.h"

typedef enum BitmapSyncMode {
        BITMAP_SYNC_ON_SUCCESS,
        BITMAP_SYNC_NEVER,
        BITMAP_SYNC_ALWAYS,
        _BITMAP_SYNC_MAX,
        _BITMAP_SYNC_INVALID = -EINVAL,
} BitmapSyncMode;

const char *bitmap_sync_mode_to_string(BitmapSyncMode m);
BitmapSyncMode bitmap_sync_mode_from_string(const char *s);

/* The backup's cluster for copying what a bitmap marks, as QEMU picks it. */
#define BACKUP_BITMAP_CLUSTER_MIN (UINT64_C(64) << 10)

typedef struct BackupBitmap {
        char *name;                     /* NULL: no bitmap */
        BitmapSyncMode mode;
        bool drives_copy;               /* sync=bitmap: only what it marks is copied */
        ImageDirtyMap *copy;            /* sync=bitmap: what it marks, at the backup's cluster */
        uint64_t size;
        uint32_t granularity;           /* the bitmap's */
        int fd;                         /* the source's top layer, read-write (for the modes that write it) */
        struct timespec mtime, ctime;   /* of that file, once the job held its readers' locks */
        char *path;
        Image *writer;                  /* that layer, open for writing, from prepare on */
} BackupBitmap;

#define BACKUP_BITMAP_NULL { .fd = -EBADF }

/* Reads bitmap 'name' of 'source' (its top layer), with QEMU's texts: "Bitmap 'NAME' could not
 * be found", "Bitmap 'NAME' is inconsistent and cannot be used". A mode that writes it needs
 * 'fd' (the top layer's descriptor, duplicated here) open for reading and writing: else QEMU's
 * "Bitmap 'NAME' is readonly and cannot be modified". 'cluster': of the copy map. */
int backup_bitmap_open(BackupBitmap *bb, Image *source, int fd, const char *name, BitmapSyncMode mode,
                       bool drives_copy, uint32_t cluster, char **ret_error);
void backup_bitmap_done(BackupBitmap *bb);

static inline bool backup_bitmap_writes(const BackupBitmap *bb) {
        return bb->name && bb->mode != BITMAP_SYNC_NEVER;
}

/* sync=bitmap: the first range to copy at or after 'offset'; false if none is left. */
bool backup_bitmap_next(const BackupBitmap *bb, uint64_t offset, uint64_t *ret_start, uint64_t *ret_length);
/* sync=bitmap: the bytes to copy in all, and those at or after 'offset'. */
uint64_t backup_bitmap_dirty_bytes(const BackupBitmap *bb);
uint64_t backup_bitmap_dirty_bytes_from(const BackupBitmap *bb, uint64_t offset);
/* Memory the bitmap takes, in the job and when the layer is open for writing. */
uint64_t backup_bitmap_memory(const BackupBitmap *bb);

/* Prepare: the copy is over and the source's read-only image closed: opens the top layer for
 * writing (a mode that writes the bitmap), failing if the file is in use. */
int backup_bitmap_prepare(BackupBitmap *bb, char **ret_error);
/* Commit: on-success and always clear the bitmap. Logged, not failed: a bitmap left as it was
 * only makes the next backup copy more. */
void backup_bitmap_commit(BackupBitmap *bb, const char *job);
/* Abort: always, if the target is kept ('target_kept': written in place), leaves in it what was
 * not copied, 'done' being the offset everything before which was copied; with a target that is
 * discarded, and in the other modes, it is left as it was. The source's read-only image must be
 * closed. */
void backup_bitmap_abort(BackupBitmap *bb, const char *job, uint64_t done, bool target_kept);
