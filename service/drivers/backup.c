/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <fcntl.h>
#include <linux/fs.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include "backup.h"
#include "job.h"
#include "log.h"
#include "macro.h"
#include "raw-image.h"

struct Backup {
        RawSource source;
        RawTarget target;

        uint64_t chunk;
        void *buffer;

        uint64_t offset;                /* everything before it is done */
        uint64_t data_end;              /* end of the source data extent that holds 'offset' */

        atomic_uint_fast64_t io_calls;
};

void backup_free(Backup *b) {
        if (!b)
                return;
        raw_source_close(&b->source);
        raw_target_discard(&b->target);
        free(b->buffer);
        free(b);
}

DEFINE_TRIVIAL_CLEANUP_FUNC(Backup *, backup_free);

int backup_open(const BackupParams *p, Backup **ret, char **ret_error) {
        _cleanup_(backup_freep) Backup *b = NULL;
        int r;

        assert(p && ret);

        if (p->chunk_size > BACKUP_CHUNK_MAX) {
                if (ret_error && asprintf(ret_error, "Chunk size %" PRIu64 " is larger than %" PRIu64, p->chunk_size,
                                          BACKUP_CHUNK_MAX) < 0)
                        *ret_error = NULL;
                return -EINVAL;
        }

        b = calloc(1, sizeof(*b));
        if (!b)
                return -ENOMEM;
        b->source = (RawSource) RAW_SOURCE_NULL;
        b->target = (RawTarget) RAW_TARGET_NULL;
        b->chunk = p->chunk_size ?: BACKUP_CHUNK_DEFAULT;

        r = raw_source_open(&b->source, p->source, ret_error);
        if (r < 0)
                return r;
        if (!p->target || !*p->target) {
                if (ret_error)
                        *ret_error = strdup("No target given");
                return -EINVAL;
        }
        r = raw_target_open(&b->target, p->target, &b->source, p->overwrite, p->named_temp_file, ret_error);
        if (r < 0)
                return r;

        if (posix_memalign(&b->buffer, 4096, b->chunk) != 0)
                return -ENOMEM;

        *ret = TAKE_PTR(b);
        return 0;
}

uint64_t backup_size(const Backup *b) {
        return b->source.size;
}

uint64_t backup_io_calls(const Backup *b) {
        Backup *m = (Backup *) b;
        return atomic_load(&m->io_calls) + atomic_load(&m->source.io_calls) + atomic_load(&m->target.io_calls);
}

/* Find the data extent at b->offset; ranges before it are holes. Returns the hole skipped. */
static int backup_seek_data(Backup *b, uint64_t *ret_hole) {
        off_t data, hole;

        atomic_fetch_add(&b->io_calls, 1);
        data = lseek(b->source.fd, (off_t) b->offset, SEEK_DATA);
        if (data < 0) {
                if (errno == ENXIO) {
                        /* Nothing but hole up to the end. */
                        *ret_hole = b->source.size - b->offset;
                        b->data_end = b->source.size;
                        return 0;
                }
                if (!IN_SET(errno, EINVAL, EOPNOTSUPP))
                        return negative_errno();
                /* No hole support here: everything is data. */
                data = (off_t) b->offset;
                hole = (off_t) b->source.size;
        } else {
                hole = lseek(b->source.fd, data, SEEK_HOLE);
                if (hole < 0)
                        hole = (off_t) b->source.size;
        }

        *ret_hole = MIN((uint64_t) data, b->source.size) - b->offset;
        b->data_end = MIN((uint64_t) hole, b->source.size);
        return 0;
}

static void backup_step(Job *j, void *data, const JobStepInput *in, JobStepResult *out) {
        Backup *b = data;
        uint64_t n, hole = 0;
        int r;

        if (b->offset < b->source.size && b->offset >= b->data_end) {
                r = backup_seek_data(b, &hole);
                if (r < 0) {
                        job_step_io_error(j, out, true, true, r, "Could not read '%s' at offset %" PRIu64 ": %s",
                                          b->source.path, b->offset, strerror(-r));
                        return;
                }
                b->offset += hole;
        }

        n = MIN(b->chunk, b->data_end - b->offset);
        if (in->max_bytes > 0)
                n = MIN(n, in->max_bytes);

        if (raw_source_read(&b->source, j, out, b->buffer, n, b->offset) < 0 ||
            raw_target_write(&b->target, j, out, b->buffer, n, b->offset) < 0)
                goto keep_position;

        b->offset += n;
        out->dispatched = n;

keep_position:
        /* Holes skipped count as progress even when the copy after them failed. */
        out->progress = hole + (out->io_error.set ? 0 : n);
        out->has_remaining = true;
        out->remaining = b->source.size - b->offset;
        if (!out->io_error.set && b->offset >= b->source.size)
                out->finished = true;
}

static int backup_prepare(Job *j, void *data, char **ret_error) {
        Backup *b = data;
        return raw_target_prepare(&b->target, ret_error);
}

static void backup_commit(Job *j, void *data) {
        Backup *b = data;
        raw_target_commit(&b->target, j);
}

static void backup_abort(Job *j, void *data) {
        Backup *b = data;
        raw_target_discard(&b->target);
}

static void backup_clean(Job *j, void *data) {
        Backup *b = data;

        /* Published or discarded by now; an unpublished file would vanish here as well. */
        raw_source_close(&b->source);
        raw_target_discard(&b->target);
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
