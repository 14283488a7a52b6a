/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backup-bitmap.h"
#include "error-message.h"
#include "fd-util.h"
#include "log.h"
#include "macro.h"

static const char *const bitmap_sync_mode_table[_BITMAP_SYNC_MAX] = {
        [BITMAP_SYNC_ON_SUCCESS] = "on-success",
        [BITMAP_SYNC_NEVER] = "never",
        [BITMAP_SYNC_ALWAYS] = "always",
};

const char *bitmap_sync_mode_to_string(BitmapSyncMode m) {
        return m >= 0 && m < _BITMAP_SYNC_MAX ? bitmap_sync_mode_table[m] : NULL;
}

BitmapSyncMode bitmap_sync_mode_from_string(const char *s) {
        for (BitmapSyncMode m = 0; s && m < _BITMAP_SYNC_MAX; m++)
                if (strcmp(bitmap_sync_mode_table[m], s) == 0)
                        return m;
        return _BITMAP_SYNC_INVALID;
}

void backup_bitmap_done(BackupBitmap *bb) {
        bb->writer = image_close(bb->writer);
        bb->copy = image_dirty_map_free(bb->copy);
        bb->fd = safe_close(bb->fd);
        free(bb->name);
        free(bb->path);
        *bb = (BackupBitmap) BACKUP_BITMAP_NULL;
}

/* QEMU's block-copy bitmap: each cluster any dirty granule touches. */
static int make_copy_map(BackupBitmap *bb, const ImageDirtyMap *m, uint32_t cluster) {
        uint64_t start, length;
        int r;

        r = image_dirty_map_new(m->size, cluster, &bb->copy);
        if (r < 0)
                return r;
        for (uint64_t off = 0; image_dirty_map_next(m, off, &start, &length); off = start + length)
                image_dirty_map_set(bb->copy, start, length);
        return 0;
}

int backup_bitmap_open(BackupBitmap *bb, Image *source, int fd, const char *name, BitmapSyncMode mode,
                       bool drives_copy, uint32_t cluster, char **ret_error) {
        ImageDirtyMap *m = NULL;
        int r;

        assert(bb && source && name);

        r = image_bitmap_load(source, name, &m);
        if (r == -ENOENT || r == -EOPNOTSUPP)
                return error_message(ret_error, -ENOENT, "Bitmap '%s' could not be found", name);
        /* An inconsistent bitmap (-EBUSY) is a fact about the image, not a file in use. */
        if (r < 0)
                return error_message(ret_error, r == -EBUSY ? -EUCLEAN : r, "%s", strempty(image_error(source)));

        bb->name = strdup(name);
        bb->path = strdup(image_path(source));
        bb->mode = mode;
        bb->drives_copy = drives_copy;
        bb->size = m->size;
        bb->granularity = m->granularity;
        r = bb->name && bb->path ? 0 : -ENOMEM;
        if (r >= 0 && drives_copy)
                r = make_copy_map(bb, m, MAX(cluster, (uint32_t) BACKUP_BITMAP_CLUSTER_MIN));
        image_dirty_map_free(m);
        if (r < 0)
                return error_message(ret_error, r, "Could not read bitmap '%s' of '%s': %m", name, image_path(source));

        if (!backup_bitmap_writes(bb))
                return 0;
        /* Writing the bitmap takes the caller's right to write the file: a descriptor the
         * caller's rights opened for writing, never one reopened with the daemon's. */
        int fl = fd >= 0 ? fcntl(fd, F_GETFL) : -1;
        if (fl < 0 || (fl & O_ACCMODE) != O_RDWR || (fl & O_PATH))
                return error_message(ret_error, -EACCES, "Bitmap '%s' is readonly and cannot be modified", name);
        bb->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (bb->fd < 0)
                return error_message(ret_error, negative_errno(), "Could not keep the descriptor of '%s': %m", bb->path);
        /* The source is held with our readers' locks by now: nobody writes it from here on. */
        struct stat st;
        if (fstat(bb->fd, &st) < 0)
                return error_message(ret_error, negative_errno(), "Could not look at '%s': %m", bb->path);
        bb->mtime = st.st_mtim;
        bb->ctime = st.st_ctim;
        return 0;
}

static bool same_time(const struct timespec *a, const struct timespec *b) {
        return a->tv_sec == b->tv_sec && a->tv_nsec == b->tv_nsec;
}

/* 1 if the file's mtime and ctime are those of when the job held it, 0 if not. */
static int unchanged(const BackupBitmap *bb) {
        struct stat st;

        if (fstat(bb->fd, &st) < 0)
                return negative_errno();
        return same_time(&st.st_mtim, &bb->mtime) && same_time(&st.st_ctim, &bb->ctime);
}

bool backup_bitmap_next(const BackupBitmap *bb, uint64_t offset, uint64_t *ret_start, uint64_t *ret_length) {
        return image_dirty_map_next(bb->copy, offset, ret_start, ret_length);
}

uint64_t backup_bitmap_dirty_bytes(const BackupBitmap *bb) {
        return bb->copy ? image_dirty_map_count(bb->copy) : 0;
}

uint64_t backup_bitmap_dirty_bytes_from(const BackupBitmap *bb, uint64_t offset) {
        uint64_t start, length, n = 0;

        for (uint64_t off = offset; backup_bitmap_next(bb, off, &start, &length); off = start + length)
                n += start + length - MAX(start, offset);
        return n;
}

static uint64_t map_bytes(uint64_t size, uint32_t granularity) {
        return granularity ? ((size + granularity - 1) / granularity + 63) / 64 * 8 : 0;
}

uint64_t backup_bitmap_memory(const BackupBitmap *bb) {
        if (!bb->name)
                return 0;
        /* The copy map; and once the layer is open to change its bitmaps, this one's map and a
         * map to replace it with (the layer's other enabled bitmaps are not loaded: see
         * open_writer()). */
        return sizeof(*bb) + (bb->copy ? map_bytes(bb->copy->size, bb->copy->granularity) : 0) +
               2 * map_bytes(bb->size, bb->granularity);
}

static int open_writer(BackupBitmap *bb, char **ret_error) {
        if (bb->writer)
                return 0;
        /* The top layer alone: the bitmap is its, and nothing is read through it. Opening for
         * writing changes nothing in the file (the image layer writes bitmaps only when data or
         * bitmaps are written); it takes QEMU's write lock, or fails while anyone else, QEMU or
         * one of our jobs, reads the file unsharing writes or writes it. Only bitmaps are changed,
         * so the layer's other enabled bitmaps, which would record data writes, are not loaded. */
        return image_open_fd(bb->fd, bb->path, IMAGE_FORMAT_QCOW2,
                             IMAGE_OPEN_WRITE | IMAGE_OPEN_NO_BACKING | IMAGE_OPEN_BITMAPS_ONLY, &bb->writer, ret_error);
}

int backup_bitmap_prepare(BackupBitmap *bb, char **ret_error) {
        _cleanup_free_ char *error = NULL;
        int r;

        if (!backup_bitmap_writes(bb))
                return 0;
        r = open_writer(bb, &error);
        if (r < 0)
                return error_message(ret_error, r, "Cannot write bitmap '%s': %s", bb->name, strempty(error));

        /* Nobody wrote the file between our readers' locks and our write lock (see above). */
        r = unchanged(bb);
        if (r < 0)
                return error_message(ret_error, r, "Could not look at '%s': %m", bb->path);
        if (r == 0) {
                bb->writer = image_close(bb->writer);
                return error_message(ret_error, -ESTALE,
                                     "Cannot write bitmap '%s': '%s' was changed by another process at the end of the backup",
                                     bb->name, bb->path);
        }
        return 0;
}

/* A bitmap that could not be cleared at the job's end. As in QEMU, where the bitmap is reclaimed
 * in memory and stored later, this cannot fail the job: the backup is complete and the job
 * concludes. The bitmap keeps its bits, which is safe (the next incremental backup copies them
 * again), and the job's journal (journalctl BLOCKJOBD_JOB=<id>) says so, as a warning. */
static void log_kept_bits(const BackupBitmap *bb, const char *job, const char *what, const char *why) {
        _cleanup_free_ char *field_job = NULL, *field_bitmap = NULL;

        if (asprintf(&field_job, "BLOCKJOBD_JOB=%s", job) < 0)
                field_job = NULL;
        if (asprintf(&field_bitmap, "BLOCKJOBD_BITMAP=%s", bb->name) < 0)
                field_bitmap = NULL;
        const char *fields[] = { field_job, field_bitmap, NULL };
        log_struct(LOG_WARNING, field_job && field_bitmap ? fields : NULL,
                   "Job '%s': could not clear bitmap '%s' of '%s'%s, which keeps its bits (the next incremental backup copies them again): %s",
                   job, bb->name, bb->path, what, strempty(why));
}

void backup_bitmap_commit(BackupBitmap *bb, const char *job) {
        int r;

        if (!backup_bitmap_writes(bb))
                return;
        /* Prepare opened it; without it the job would not commit. */
        assert(bb->writer);
        r = image_bitmap_clear(bb->writer, bb->name);
        if (r < 0)
                log_kept_bits(bb, job, "", image_error(bb->writer));
        bb->writer = image_close(bb->writer);
}

/* What is left to copy, at the bitmap's granularity (QEMU merges the copy bitmap into it). */
static int left_to_copy(const BackupBitmap *bb, uint64_t done, ImageDirtyMap **ret) {
        ImageDirtyMap *m = NULL;
        uint64_t start, length;
        int r;

        r = image_dirty_map_new(bb->size, bb->granularity, &m);
        if (r < 0)
                return r;
        if (!bb->drives_copy)
                image_dirty_map_set(m, done, bb->size - MIN(done, bb->size));
        else
                for (uint64_t off = done; backup_bitmap_next(bb, off, &start, &length); off = start + length)
                        image_dirty_map_set(m, MAX(start, done), start + length - MAX(start, done));
        *ret = m;
        return 0;
}

void backup_bitmap_abort(BackupBitmap *bb, const char *job, uint64_t done, bool target_kept) {
        _cleanup_free_ char *error = NULL;
        ImageDirtyMap *m = NULL;
        int r;

        /* QEMU's 'always' clears what was copied because the partial target stays behind with
         * it. A new file is removed at abort: what was copied is in no backup, and clearing it
         * would make the next incremental miss it. */
        if (!bb->name || bb->mode != BITMAP_SYNC_ALWAYS || !target_kept) {
                bb->writer = image_close(bb->writer);
                return;
        }
        r = open_writer(bb, &error);
        if (r >= 0) {
                /* A write that slipped in before our write lock must not be forgotten: then the
                 * bitmap keeps everything. */
                r = unchanged(bb);
                if (r == 0) {
                        r = -ESTALE;
                        error = strdup("the file was changed by another process at the end of the backup");
                }
        }
        if (r >= 0)
                r = left_to_copy(bb, done, &m);
        if (r >= 0) {
                r = image_bitmap_replace(bb->writer, bb->name, m);
                if (r < 0)
                        error = strdup(strempty(image_error(bb->writer)));
        }
        if (r < 0)
                log_kept_bits(bb, job, " of what was copied", error);
        image_dirty_map_free(m);
        bb->writer = image_close(bb->writer);
}
