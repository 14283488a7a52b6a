/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "backup.h"
#include "copy-io.h"
#include "image.h"
#include "job.h"
#include "log.h"
#include "error-message.h"
#include "macro.h"
#include "step-budget.h"
#include "target-file.h"

/* A sparse raw source is copied extent by extent, each a synchronous read from the device, one
 * after the other: while one is copied, the next ones' data are already on their way
 * (read-ahead, which only asks the device), so that the reads overlap as qemu-img convert's
 * parallel requests do. Bounded, since what is read ahead waits in the page cache until the copy
 * gets there: at most BACKUP_LOOKAHEAD_EXTENTS data extents ahead of the copy, the first
 * BACKUP_LOOKAHEAD_EXTENT_MAX of each (copy-io reads ahead within an extent as it copies it),
 * none further than BACKUP_LOOKAHEAD_SPAN past the range being copied, BACKUP_LOOKAHEAD_CALLS
 * looks at the allocation per range copied, and only for a job that is not throttled (a
 * throttled one gets there much later). A dense source is one extent: nothing lies ahead of it.
 * Measured on a 1 GiB raw image of 10 % data in 1 MiB extents, cold cache: 175 ms without,
 * 130 ms with 32 MiB and 8 extents ahead, 114 ms with 128 MiB and 16. */
#define BACKUP_LOOKAHEAD_SPAN (UINT64_C(128) << 20)
#define BACKUP_LOOKAHEAD_EXTENTS 16U
#define BACKUP_LOOKAHEAD_EXTENT_MAX (UINT64_C(2) << 20)
#define BACKUP_LOOKAHEAD_CALLS 32U

struct Backup {
        Image *source;
        TargetFile target;              /* built unseen and published at commit, or a device */
        Image *writer;                  /* the image in it, raw or qcow2 */
        bool sync_top;
        bool target_backing;            /* the target is an overlay of an earlier backup */
        BackupBitmap bitmap;            /* with sync=bitmap, only what it marks is copied */
        uint64_t dirty_left;            /* sync=bitmap: bytes of it not done yet */

        CopyIo io;                      /* how chunks move: no buffer of its own (copy-io.h) */

        uint64_t offset;                /* everything before it is done */
        uint64_t resumed_done;          /* of the job's bytes, done before a restart (backup_resumed_progress()) */
        /* Read ahead (backup_look_ahead()): the source's extents are looked at up to 'ahead', and
         * the data extents read ahead but not copied yet end at ahead_ends[], oldest first. */
        uint64_t ahead;
        uint64_t ahead_ends[BACKUP_LOOKAHEAD_EXTENTS];
        unsigned ahead_first, ahead_n;
        atomic_uint_fast64_t io_calls;
};

void backup_free(Backup *b) {
        if (!b)
                return;
        image_close(b->writer);
        image_close(b->source);
        target_file_discard(&b->target);
        backup_bitmap_done(&b->bitmap);
        free(b);
}

DEFINE_TRIVIAL_CLEANUP_FUNC(Backup *, backup_free);

/* A job built again after a restart goes on from its last checkpoint: everything below it was
 * durable in the target when the checkpoint was reported (backup_checkpoint()), and the target
 * is the file the job was writing (target_image_reopen()).
 *
 * Above the checkpoint the target may hold more: whatever the job wrote after it before the
 * daemon stopped, even half a request if it was killed (kill -9, a crash) in the middle of one,
 * and for qcow2 the clusters it counted but had not mapped yet, which target_image_reopen() counts
 * free again. That is harmless for a backup: everything it wrote there is the same source data at
 * the same offsets, since the source cannot have changed (it is held with readers' locks while
 * the job runs, and the daemon refuses to continue a backup whose source changed while it was
 * stopped), and it never writes anything but zeroes where the source reads zeroes. So above the
 * checkpoint each byte of the target reads either as the source, or as a target that was never
 * written there: the copy from the checkpoint on writes every range the source has data in again,
 * and skips what reads as zeroes (COPY_IO_TARGET_ZEROED holds for the resumed target as for a new
 * one), exactly as an uninterrupted run would have.
 *
 * The offset is rounded down to the target's cluster (and the copy map's, with sync=bitmap) so
 * that no cluster is rewritten in part. With sync=bitmap the source's bitmap is cleared at commit
 * only (backup-bitmap.h), so a resumed job copies what it marked, as the first run would have:
 * the dirty bytes below the checkpoint count as done. */
static void backup_resume(Backup *b, uint64_t checkpoint) {
        uint64_t size = image_size(b->source), align = MAX(image_cluster_size(b->writer), UINT32_C(4096));

        if (b->bitmap.drives_copy)
                align = MAX(align, (uint64_t) b->bitmap.copy->granularity);
        b->offset = MIN(checkpoint, size) / align * align;
        if (b->bitmap.drives_copy) {
                b->dirty_left = backup_bitmap_dirty_bytes_from(&b->bitmap, b->offset);
                b->resumed_done = backup_bitmap_dirty_bytes(&b->bitmap) - b->dirty_left;
        } else
                b->resumed_done = b->offset;
}

int backup_open(const BackupParams *p, Backup **ret, char **ret_error) {
        _cleanup_(backup_freep) Backup *b = NULL;
        int r;

        assert(p && ret);

        if (p->chunk_size > BACKUP_CHUNK_MAX)
                return error_message(ret_error, -EINVAL, "Chunk size %" PRIu64 " is larger than %" PRIu64,
                                     p->chunk_size, BACKUP_CHUNK_MAX);
        if (!p->copy.target || !*p->copy.target || !p->copy.files)
                return error_message(ret_error, -EINVAL, "No target given");

        b = calloc(1, sizeof(*b));
        if (!b)
                return -ENOMEM;
        b->target = (TargetFile) TARGET_FILE_NULL;
        b->bitmap = (BackupBitmap) BACKUP_BITMAP_NULL;
        b->sync_top = p->copy.sync_top;

        /* The source is read, with its backing chain, and must not change meanwhile. */
        r = copy_open_source(&p->copy, 0, &b->source, ret_error);
        if (r < 0)
                return r;
        if (p->target_backing) {
                /* An overlay of an earlier backup: what is not copied reads through to it. */
                if (b->sync_top)
                        return error_message(ret_error, -EINVAL,
                                             "Option 'target-backing' cannot be used with sync mode 'top'");
                ImageChainFds backing = {
                        .fds = p->target_backing_files ? p->target_backing_files->chain : NULL,
                        .n = p->target_backing_files ? p->target_backing_files->n_chain : 0,
                };
                BackupBacking bb = {
                        .name = p->target_backing,
                        .path = p->target_backing_path ?: p->target_backing,
                        .format = p->target_backing_format,
                        .chain = &backing,
                };
                r = target_file_adopt(&b->target, p->copy.target, p->copy.files, b->source, image_size(b->source),
                                      p->copy.overwrite, p->copy.resume.resume, ret_error);
                if (r >= 0)
                        r = backup_backing_create(&b->target, b->source, &bb, p->copy.target_format,
                                                  p->copy.resume.resume, &b->writer, ret_error);
                b->target_backing = true;
        } else
                r = copy_open_target(&p->copy, b->source, b->sync_top, &b->target, &b->writer, ret_error);
        if (r < 0)
                return r;
        if (p->bitmap) {
                /* QEMU's backup cluster: the target's, 64 KiB at least. */
                r = backup_bitmap_open(&b->bitmap, b->source, p->copy.files->n_chain > 0 ? p->copy.files->chain[0] : -EBADF,
                                       p->bitmap, p->bitmap_mode, p->sync_bitmap, image_cluster_size(b->writer), ret_error);
                if (r < 0)
                        return r;
                b->dirty_left = backup_bitmap_dirty_bytes(&b->bitmap);
        } else if (p->sync_bitmap)
                return error_message(ret_error, -EINVAL, "must provide a valid bitmap name for 'bitmap' sync mode");

        /* A new target reads zeroes wherever nothing is written, unless it is a qcow2 image
         * whose backing file would show through: zeroes read from the source need no write. So
         * does a resumed one, above its checkpoint too (see backup_resume()). */
        copy_io_init(&b->io, b->source, b->writer, p->chunk_size ?: BACKUP_CHUNK_DEFAULT,
                     !target_file_in_place(&b->target) && !image_backing(b->writer) ? COPY_IO_TARGET_ZEROED : 0);
        if (p->copy.resume.resume)
                backup_resume(b, p->copy.resume.offset);

        *ret = TAKE_PTR(b);
        return 0;
}

uint64_t backup_size(const Backup *b) {
        return b->bitmap.drives_copy ? backup_bitmap_dirty_bytes(&b->bitmap) : image_size(b->source);
}

uint64_t backup_resumed_progress(const Backup *b) {
        return b->resumed_done;
}

ImageFormat backup_source_format(const Backup *b) {
        return image_format(b->source);
}

TargetFile *backup_target_file(Backup *b) {
        return &b->target;
}

uint64_t backup_memory(const Backup *b) {
        /* The copy buffer is the worker thread's, not the job's (copy-io.h). */
        return sizeof(*b) + image_memory_estimate(b->source) + image_memory_estimate(b->writer) +
               backup_bitmap_memory(&b->bitmap);
}

void backup_list_files(const Backup *b, FileUseFunc f, void *userdata) {
        /* A bitmap to be written is written in the top layer (its directory, never its data):
         * no other job may read the file meanwhile, as QEMU's locks will say at prepare. */
        if (backup_bitmap_writes(&b->bitmap)) {
                f(image_fd(b->source), NULL, image_path(b->source), FILE_USE_WRITE, userdata);
                image_chain_list_files(image_backing(b->source), NULL, FILE_USE_READ, f, userdata);
        } else
                image_chain_list_files(b->source, NULL, FILE_USE_READ, f, userdata);
        /* The earlier backups it rests on are read. */
        if (b->target_backing)
                image_chain_list_files(image_backing(b->writer), NULL, FILE_USE_READ, f, userdata);
        target_file_list(&b->target, f, userdata);
}

const CopyIoStats *backup_copy_stats(const Backup *b) {
        return &b->io.stats;
}

uint64_t backup_io_calls(const Backup *b) {
        return atomic_load(&((Backup *) b)->io_calls);
}

typedef enum RangeAction {
        RANGE_SKIP,                     /* the target reads right already */
        RANGE_ZERO,                     /* the target must read zeroes there */
        RANGE_COPY,
} RangeAction;

/* What the next range needs, and how long it is. With sync=full, whatever reads as data is
 * copied; with sync=top, what the top image itself allocates: data is copied, and zeroes are
 * written where the target has a backing file that would show through. A target that did not
 * start as zeroes (a device) gets zeroes wherever nothing is copied. Ranges end at 'end' (the
 * end of what the bitmap marks, with sync=bitmap). */
static int backup_next_range(Backup *b, uint64_t end, RangeAction *ret_action, uint64_t *ret_length) {
        uint64_t left = end - b->offset;
        RangeAction action;
        int r;

        atomic_fetch_add(&b->io_calls, 1);
        if (b->sync_top) {
                LayerKind kind;
                r = image_layer_status(b->source, b->offset, left, &kind, ret_length);
                if (r < 0)
                        return r;
                action = kind == LAYER_DATA ? RANGE_COPY :
                         kind == LAYER_ZERO && image_backing(b->writer) ? RANGE_ZERO : RANGE_SKIP;
        } else {
                ImageExtent e;
                r = image_block_status(b->source, b->offset, left, &e);
                if (r < 0)
                        return r;
                /* Zeroes over an earlier backup must be written, or it would show through. */
                action = !e.zero ? RANGE_COPY : b->target_backing ? RANGE_ZERO : RANGE_SKIP;
                *ret_length = MIN(e.length, left);
        }
        if (action == RANGE_SKIP && target_file_in_place(&b->target))
                action = RANGE_ZERO;
        *ret_action = action;
        return 0;
}

static void source_error(Job *j, Backup *b, JobStepResult *out, int r) {
        job_step_io_error(j, out, true, true, r, "%s", image_error(b->source) ?: strerror(-r));
}

/* Writes zeroes over a range that needs no copy. */
static int backup_zero_range(Job *j, Backup *b, JobStepResult *out, uint64_t length) {
        int r;

        atomic_fetch_add(&b->io_calls, 1);
        r = image_write_zeroes(b->writer, b->offset, length);
        if (r < 0)
                job_step_io_error(j, out, false, false, r, "%s", image_error(b->writer) ?: strerror(-r));
        return r;
}

/* Copies the start of [offset, offset + n) from the source to the target, however copy-io finds
 * best; returns the bytes done. */
static int backup_copy_range(Job *j, Backup *b, JobStepResult *out, uint64_t n, uint64_t *ret_done) {
        Image *failed = NULL;
        int r;

        atomic_fetch_add(&b->io_calls, 1);
        r = copy_io_copy(&b->io, b->offset, n, ret_done, &failed);
        if (r < 0 && failed == b->io.target)
                job_step_io_error(j, out, false, false, r, "%s", image_error(b->writer) ?: strerror(-r));
        else if (r < 0 && failed)
                source_error(j, b, out, r);
        else if (r < 0)
                job_step_io_error(j, out, true, true, r, "%s", strerror(-r));
        return r;
}

/* sync=bitmap: moves past what the bitmap leaves clean, and says where the dirty range ends;
 * false once nothing is left. Otherwise everything is to be done. */
static bool backup_window(Backup *b, uint64_t *ret_end) {
        uint64_t size = image_size(b->source), start, length;

        if (!b->bitmap.drives_copy) {
                *ret_end = size;
                return true;
        }
        if (!backup_bitmap_next(&b->bitmap, b->offset, &start, &length)) {
                b->offset = size;
                return false;
        }
        b->offset = MAX(b->offset, start);
        *ret_end = MIN(start + length, size);
        return true;
}

static void backup_look_ahead(Backup *b, uint64_t from) {
        uint64_t size = image_size(b->source);

        if (b->sync_top || !image_is_raw_file(b->source))
                return;
        /* What the copy has passed is no longer ahead of it. */
        while (b->ahead_n > 0 && b->ahead_ends[b->ahead_first] <= from) {
                b->ahead_first = (b->ahead_first + 1) % BACKUP_LOOKAHEAD_EXTENTS;
                b->ahead_n--;
        }
        b->ahead = MAX(b->ahead, from);
        for (unsigned calls = 0; calls < BACKUP_LOOKAHEAD_CALLS && b->ahead_n < BACKUP_LOOKAHEAD_EXTENTS &&
                                 b->ahead < size && b->ahead - from < BACKUP_LOOKAHEAD_SPAN;
             calls++) {
                ImageExtent e;
                /* A failure here is found again, and reported, when the copy gets there. */
                if (image_block_status(b->source, b->ahead, size - b->ahead, &e) < 0)
                        return;
                b->ahead += e.length;
                if (e.zero)
                        continue;
                image_readahead(b->source, b->ahead - e.length, MIN(e.length, BACKUP_LOOKAHEAD_EXTENT_MAX));
                b->ahead_ends[(b->ahead_first + b->ahead_n++) % BACKUP_LOOKAHEAD_EXTENTS] = b->ahead;
        }
}

/* A checkpoint: what was copied so far, durable, and everything below b->offset reported as
 * done (DriverResume.offset after a restart). A flush that fails is a target I/O error under the
 * job's policy, and no checkpoint. */
static void backup_checkpoint(Job *j, Backup *b, JobStepResult *out) {
        int r;

        atomic_fetch_add(&b->io_calls, 1);
        r = copy_io_flush(&b->io);
        if (r < 0) {
                /* The end is durable only once this works: a step that finished goes on. */
                bool finished = out->finished;
                out->finished = false;
                if (job_step_io_error(j, out, false, false, r, "%s", image_error(b->writer) ?: strerror(-r)) ==
                    JOB_ERROR_ACTION_IGNORE)
                        out->finished = finished;       /* prepare flushes again, and fails the job if that fails */
                return;
        }
        out->checkpoint = true;
        out->checkpoint_value = b->offset;
}

static void backup_step(Job *j, void *data, const JobStepInput *in, JobStepResult *out) {
        StepBudget budget = step_budget_start(in);
        Backup *b = data;
        uint64_t size = image_size(b->source), progress = 0, dispatched = 0, length, end;
        RangeAction action;

        /* The daemon is stopping: nothing copied, what was, durable. */
        if (in->checkpoint_only) {
                out->has_remaining = true;
                out->remaining = b->bitmap.drives_copy ? (b->offset < size ? b->dirty_left : 0) : size - b->offset;
                backup_checkpoint(j, b, out);
                return;
        }

        /* Range after range: what needs no copy is skipped without I/O (and counts as progress),
         * the rest is copied a chunk at a time, while the step's budget lasts. With sync=bitmap
         * only the dirty ranges are looked at, and only they count. */
        for (unsigned skips = 0; b->offset < size && skips < STEP_SKIPS_MAX && step_budget_left(&budget);) {
                if (!backup_window(b, &end))
                        break;
                int r = backup_next_range(b, end, &action, &length);
                if (r < 0) {
                        source_error(j, b, out, r);
                        break;
                }
                if (action == RANGE_COPY) {
                        /* Clones read nothing. */
                        if (in->max_bytes == 0 && b->io.offload != COPY_IO_CLONE)
                                backup_look_ahead(b, b->offset + length);
                        /* copy-io takes a chunk of it, or a larger clone. */
                        uint64_t cloned = b->io.stats.cloned;
                        if (backup_copy_range(j, b, out, step_budget_clamp(&budget, length), &length) < 0)
                                break;
                        /* A clone moves no data, and takes well under a millisecond: for a job
                         * that is not throttled, the step's time alone bounds how many it makes,
                         * rather than one step (a round trip through the event loop) per
                         * COPY_IO_CLONE_MAX. A throttled job's clones count, as the limit says. */
                        if (in->max_bytes > 0 || b->io.stats.cloned == cloned)
                                step_budget_spend(&budget, length);
                        dispatched += length;
                } else {
                        /* Zeroes: a bounded range at a time, since a device without discard
                         * support needs them written. */
                        if (action == RANGE_ZERO) {
                                length = MIN(length, STEP_ZEROES_MAX);
                                if (backup_zero_range(j, b, out, length) < 0)
                                        break;
                        }
                        skips++;
                }
                b->offset += length;
                progress += length;
                if (b->bitmap.drives_copy)
                        b->dirty_left -= MIN(length, b->dirty_left);
        }

        out->progress = progress;
        out->dispatched = dispatched;
        out->has_remaining = true;
        out->remaining = b->bitmap.drives_copy ? (b->offset < size ? b->dirty_left : 0) : size - b->offset;
        if (!out->io_error.set && b->offset >= size)
                out->finished = true;
        /* A checkpoint when one is due, and at the end (job-driver.h): a job that is waiting or
         * pending when the daemon stops comes back with nothing left to copy. */
        if (!out->io_error.set && (in->checkpoint || out->finished))
                backup_checkpoint(j, b, out);
}

static int backup_prepare(Job *j, void *data, char **ret_error) {
        Backup *b = data;
        int r;

        /* The image consistent and durable, then the file. A raw image keeps nothing of its own
         * to write: its flush is an fdatasync() of the descriptor it shares with the target,
         * which the target's fsync() makes anyway (fsync() is fdatasync() and the rest of the
         * inode); a second flush of the same file would only wait for the device again. */
        if (!(image_format(b->writer) == IMAGE_FORMAT_RAW && image_fd(b->writer) == target_file_fd(&b->target))) {
                r = image_flush(b->writer);
                if (r < 0) {
                        *ret_error = strdup(strempty(image_error(b->writer)));
                        return r;
                }
        }
        r = target_file_prepare(&b->target, ret_error);
        if (r < 0 || !backup_bitmap_writes(&b->bitmap))
                return r;

        /* The copy is over: our readers' locks go, and the bitmap's layer is opened for writing
         * the bitmap at commit (backup-bitmap.h), or the job fails now, bitmap untouched. */
        b->source = image_close(b->source);
        return backup_bitmap_prepare(&b->bitmap, ret_error);
}

static void backup_commit(Job *j, void *data) {
        Backup *b = data;
        target_file_commit(&b->target, j);
        backup_bitmap_commit(&b->bitmap, job_id(j));
}

static void backup_abort(Job *j, void *data) {
        Backup *b = data;
        /* Asked before the discard, which forgets it: a target written in place keeps what was
         * copied into it, a new file is removed (backup-bitmap.h: what 'always' clears). */
        bool target_kept = target_file_in_place(&b->target);

        b->writer = image_close(b->writer);
        target_file_discard(&b->target);
        if (b->bitmap.name) {
                b->source = image_close(b->source);
                backup_bitmap_abort(&b->bitmap, job_id(j), b->offset, target_kept);
        }
}

static void backup_clean(Job *j, void *data) {
        Backup *b = data;

        /* Published or discarded by now; an unpublished file would vanish here as well. The
         * source's locks go with it. */
        b->source = image_close(b->source);
        b->writer = image_close(b->writer);
        target_file_discard(&b->target);
}

static void backup_free_data(void *data) {
        backup_free(data);
}

const JobDriver backup_driver = {
        .type = JOB_TYPE_BACKUP,
        .step = backup_step,
        .prepare = backup_prepare,
        .commit = backup_commit,
        .abort = backup_abort,
        .clean = backup_clean,
        .free = backup_free_data,
};
