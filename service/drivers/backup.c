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
#include "tmpfile.h"

struct Backup {
        char *source_path;
        char *target_path;
        int source_fd;
        TmpFile target;
        bool overwrite;

        uint64_t size;
        uint64_t chunk;
        void *buffer;

        uint64_t offset;                /* everything before it is done */
        uint64_t data_end;              /* end of the source data extent that holds 'offset' */

        atomic_uint_fast64_t io_calls;
};

_printf_(2, 3) static int backup_fail(char **ret_error, const char *format, ...) {
        va_list ap;
        int r = -errno;

        if (ret_error) {
                va_start(ap, format);
                if (vasprintf(ret_error, format, ap) < 0)
                        *ret_error = NULL;
                va_end(ap);
        }
        return r < 0 ? r : -EIO;
}

#define FAIL(r, ...) ({ errno = -(r); backup_fail(ret_error, __VA_ARGS__); })

static int source_size(int fd, const struct stat *st, uint64_t *ret) {
        if (S_ISREG(st->st_mode)) {
                *ret = (uint64_t) st->st_size;
                return 0;
        }
        if (S_ISBLK(st->st_mode)) {
                uint64_t size;
                if (ioctl(fd, BLKGETSIZE64, &size) < 0)
                        return negative_errno();
                *ret = size;
                return 0;
        }
        return -EBADFD;
}

void backup_free(Backup *b) {
        if (!b)
                return;
        safe_close(b->source_fd);
        tmpfile_discard(&b->target);
        free(b->buffer);
        free(b->source_path);
        free(b->target_path);
        free(b);
}

DEFINE_TRIVIAL_CLEANUP_FUNC(Backup *, backup_free);

int backup_open(const BackupParams *p, Backup **ret, char **ret_error) {
        _cleanup_(backup_freep) Backup *b = NULL;
        struct stat source_st, target_st;
        int r;

        assert(p && ret);

        if (!p->source || !*p->source)
                return FAIL(-EINVAL, "No source given");
        if (!p->target || !*p->target)
                return FAIL(-EINVAL, "No target given");
        if (p->chunk_size > BACKUP_CHUNK_MAX)
                return FAIL(-EINVAL, "Chunk size %" PRIu64 " is larger than %" PRIu64, p->chunk_size,
                            BACKUP_CHUNK_MAX);

        b = calloc(1, sizeof(*b));
        if (!b)
                return FAIL(-ENOMEM, "Out of memory");
        b->source_fd = -EBADF;
        b->target = (TmpFile) TMPFILE_NULL;
        b->overwrite = p->overwrite;
        b->chunk = p->chunk_size ?: BACKUP_CHUNK_DEFAULT;
        b->source_path = strdup(p->source);
        b->target_path = strdup(p->target);
        if (!b->source_path || !b->target_path)
                return FAIL(-ENOMEM, "Out of memory");

        /* The source is only ever read. */
        b->source_fd = open(p->source, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (b->source_fd < 0)
                return FAIL(negative_errno(), "Could not open source '%s': %m", p->source);
        if (fstat(b->source_fd, &source_st) < 0)
                return FAIL(negative_errno(), "Could not stat source '%s': %m", p->source);
        r = source_size(b->source_fd, &source_st, &b->size);
        if (r == -EBADFD)
                return FAIL(-EINVAL, "Source '%s' is neither a regular file nor a block device", p->source);
        if (r < 0)
                return FAIL(r, "Could not get the size of source '%s': %m", p->source);

        /* Check the target before creating anything. */
        if (stat(p->target, &target_st) >= 0) {
                if (target_st.st_dev == source_st.st_dev && target_st.st_ino == source_st.st_ino)
                        return FAIL(-EINVAL, "Source and target cannot be the same");
                if (S_ISDIR(target_st.st_mode))
                        return FAIL(-EISDIR, "Target '%s' is a directory", p->target);
                if (!S_ISREG(target_st.st_mode))
                        return FAIL(-EINVAL, "Target '%s' exists and is not a regular file", p->target);
                if (!p->overwrite)
                        return FAIL(-EEXIST, "Target '%s' already exists", p->target);
        } else if (errno != ENOENT)
                return FAIL(negative_errno(), "Could not check target '%s': %m", p->target);

        /* A file copy keeps the source's permission bits; a device's copy is private. */
        r = tmpfile_open(&b->target, p->target,
                         S_ISREG(source_st.st_mode) ? (source_st.st_mode & 0666) : 0600, !p->named_temp_file);
        if (r == -EISDIR)
                return FAIL(r, "Target '%s' names a directory", p->target);
        if (r < 0)
                return FAIL(r, "Could not create target '%s': %m", p->target);

        if (ftruncate(b->target.fd, (off_t) b->size) < 0)
                return FAIL(negative_errno(), "Could not size target '%s': %m", p->target);

        if (posix_memalign(&b->buffer, 4096, b->chunk) != 0)
                return FAIL(-ENOMEM, "Out of memory");

        *ret = TAKE_PTR(b);
        return 0;
}

uint64_t backup_size(const Backup *b) {
        return b->size;
}

uint64_t backup_io_calls(const Backup *b) {
        return atomic_load(&((Backup *) b)->io_calls);
}

/* Find the data extent at b->offset; ranges before it are holes. Returns the hole skipped. */
static int backup_seek_data(Backup *b, uint64_t *ret_hole) {
        off_t data, hole;

        atomic_fetch_add(&b->io_calls, 1);
        data = lseek(b->source_fd, (off_t) b->offset, SEEK_DATA);
        if (data < 0) {
                if (errno == ENXIO) {
                        /* Nothing but hole up to the end. */
                        *ret_hole = b->size - b->offset;
                        b->data_end = b->size;
                        return 0;
                }
                if (!IN_SET(errno, EINVAL, EOPNOTSUPP))
                        return negative_errno();
                /* No hole support here: everything is data. */
                data = (off_t) b->offset;
                hole = (off_t) b->size;
        } else {
                hole = lseek(b->source_fd, data, SEEK_HOLE);
                if (hole < 0)
                        hole = (off_t) b->size;
        }

        *ret_hole = MIN((uint64_t) data, b->size) - b->offset;
        b->data_end = MIN((uint64_t) hole, b->size);
        return 0;
}

static void backup_step(Job *j, void *data, const JobStepInput *in, JobStepResult *out) {
        Backup *b = data;
        uint64_t n, hole = 0, done;
        int r;

        if (b->offset < b->size && b->offset >= b->data_end) {
                r = backup_seek_data(b, &hole);
                if (r < 0) {
                        job_step_io_error(j, out, true, true, r, "Could not read '%s' at offset %" PRIu64 ": %s",
                                          b->source_path, b->offset, strerror(-r));
                        return;
                }
                b->offset += hole;
        }

        n = MIN(b->chunk, b->data_end - b->offset);
        if (in->max_bytes > 0)
                n = MIN(n, in->max_bytes);

        for (done = 0; done < n;) {
                ssize_t k;

                atomic_fetch_add(&b->io_calls, 1);
                k = pread(b->source_fd, (uint8_t *) b->buffer + done, n - done, (off_t) (b->offset + done));
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0) {
                        r = k < 0 ? negative_errno() : -EIO;
                        job_step_io_error(j, out, true, true, r, "Could not read '%s' at offset %" PRIu64 ": %s",
                                          b->source_path, b->offset + done,
                                          k < 0 ? strerror(-r) : "unexpected end of file");
                        goto keep_position;
                }
                done += (uint64_t) k;
        }

        for (done = 0; done < n;) {
                ssize_t k;

                atomic_fetch_add(&b->io_calls, 1);
                k = pwrite(b->target.fd, (uint8_t *) b->buffer + done, n - done, (off_t) (b->offset + done));
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0) {
                        r = k < 0 ? negative_errno() : -EIO;
                        job_step_io_error(j, out, false, false, r, "Could not write '%s' at offset %" PRIu64 ": %s",
                                          b->target_path, b->offset + done, strerror(-r));
                        goto keep_position;
                }
                done += (uint64_t) k;
        }

        b->offset += n;
        out->dispatched = n;

keep_position:
        /* Holes skipped count as progress even when the copy after them failed. */
        out->progress = hole + (out->io_error.set ? 0 : n);
        out->has_remaining = true;
        out->remaining = b->size - b->offset;
        if (!out->io_error.set && b->offset >= b->size)
                out->finished = true;
}

static int backup_prepare(Job *j, void *data, char **ret_error) {
        Backup *b = data;
        struct stat st;

        if (fsync(b->target.fd) < 0)
                return FAIL(negative_errno(), "Could not flush target '%s': %m", b->target_path);

        /* Fail now, while the whole transaction can still abort, not at commit. */
        if (!b->overwrite && fstatat(b->target.dir_fd, b->target.name, &st, AT_SYMLINK_NOFOLLOW) >= 0)
                return FAIL(-EEXIST, "Target '%s' already exists", b->target_path);
        return 0;
}

static void backup_commit(Job *j, void *data) {
        Backup *b = data;
        int r;

        r = tmpfile_publish(&b->target, b->overwrite);
        if (r >= 0)
                return;

        /* Commit cannot fail in QEMU's model; the most that can be done is to keep the data. */
        const char *kept = tmpfile_keep(&b->target);
        log_error_errno(r, "Job '%s': could not publish backup as '%s' (%m); %s%s%s", job_id(j), b->target_path,
                        kept ? "the data was kept as '" : "the data is lost", strempty(kept), kept ? "'" : "");
}

static void backup_abort(Job *j, void *data) {
        Backup *b = data;
        tmpfile_discard(&b->target);
}

static void backup_clean(Job *j, void *data) {
        Backup *b = data;

        b->source_fd = safe_close(b->source_fd);
        /* Published or discarded by now; an unpublished file would vanish here as well. */
        tmpfile_discard(&b->target);
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
