/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <fcntl.h>
#include <linux/fs.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>

#include "job.h"
#include "log.h"
#include "macro.h"
#include "raw-image.h"

_printf_(3, 4) static int fail(char **ret_error, int r, const char *format, ...) {
        va_list ap;

        if (ret_error) {
                /* %m in the format names r. */
                errno = -r;
                va_start(ap, format);
                if (vasprintf(ret_error, format, ap) < 0)
                        *ret_error = NULL;
                va_end(ap);
        }
        return r;
}

int raw_source_open(RawSource *s, const char *path, char **ret_error) {
        int r;

        *s = (RawSource) RAW_SOURCE_NULL;

        if (!path || !*path)
                return fail(ret_error, -EINVAL, "No source given");
        s->path = strdup(path);
        if (!s->path)
                return fail(ret_error, -ENOMEM, "Out of memory");

        /* A source is only ever read. */
        s->fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (s->fd < 0) {
                r = fail(ret_error, negative_errno(), "Could not open source '%s': %m", path);
                goto fail;
        }
        if (fstat(s->fd, &s->st) < 0) {
                r = fail(ret_error, negative_errno(), "Could not stat source '%s': %m", path);
                goto fail;
        }
        if (S_ISREG(s->st.st_mode))
                s->size = (uint64_t) s->st.st_size;
        else if (S_ISBLK(s->st.st_mode)) {
                if (ioctl(s->fd, BLKGETSIZE64, &s->size) < 0) {
                        r = fail(ret_error, negative_errno(), "Could not get the size of source '%s': %m", path);
                        goto fail;
                }
        } else {
                r = fail(ret_error, -EINVAL, "Source '%s' is neither a regular file nor a block device", path);
                goto fail;
        }
        return 0;

fail:
        raw_source_close(s);
        return r;
}

void raw_source_close(RawSource *s) {
        s->fd = safe_close(s->fd);
        free(s->path);
        s->path = NULL;
}

int raw_target_open(RawTarget *t, const char *path, const struct stat *source_st, uint64_t size, bool overwrite,
                    bool named_temp_file, char **ret_error) {
        struct stat st;
        int r;

        *t = (RawTarget) RAW_TARGET_NULL;

        if (!path || !*path)
                return fail(ret_error, -EINVAL, "No target given");

        /* Check the target before creating anything. */
        if (stat(path, &st) >= 0) {
                if (st.st_dev == source_st->st_dev && st.st_ino == source_st->st_ino)
                        return fail(ret_error, -EINVAL, "Source and target cannot be the same");
                if (S_ISDIR(st.st_mode))
                        return fail(ret_error, -EISDIR, "Target '%s' is a directory", path);
                if (!S_ISREG(st.st_mode))
                        return fail(ret_error, -EINVAL, "Target '%s' exists and is not a regular file", path);
                if (!overwrite)
                        return fail(ret_error, -EEXIST, "Target '%s' already exists", path);
        } else if (errno != ENOENT)
                return fail(ret_error, negative_errno(), "Could not check target '%s': %m", path);

        t->overwrite = overwrite;
        t->path = strdup(path);
        if (!t->path)
                return fail(ret_error, -ENOMEM, "Out of memory");

        /* A file's copy keeps the source's permission bits; a device's copy is private. */
        r = tmpfile_open(&t->file, path, S_ISREG(source_st->st_mode) ? (source_st->st_mode & 0666) : 0600,
                         !named_temp_file);
        if (r == -EISDIR)
                r = fail(ret_error, r, "Target '%s' names a directory", path);
        else if (r < 0)
                r = fail(ret_error, r, "Could not create target '%s': %m", path);
        else if (ftruncate(t->file.fd, (off_t) size) < 0)
                r = fail(ret_error, negative_errno(), "Could not size target '%s': %m", path);
        if (r < 0) {
                raw_target_discard(t);
                return r;
        }
        return 0;
}

int raw_source_read(RawSource *s, Job *j, JobStepResult *out, void *buf, size_t len, uint64_t offset) {
        for (size_t done = 0; done < len;) {
                ssize_t k;

                atomic_fetch_add(&s->io_calls, 1);
                k = pread(s->fd, (uint8_t *) buf + done, len - done, (off_t) (offset + done));
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0) {
                        /* Zero bytes: the source shrank under us. */
                        int r = k < 0 ? negative_errno() : -EIO;
                        job_step_io_error(j, out, true, true, r, "Could not read '%s' at offset %" PRIu64 ": %s",
                                          s->path, offset + done, k < 0 ? strerror(-r) : "unexpected end of file");
                        return r;
                }
                done += (size_t) k;
        }
        return 0;
}

int raw_target_write(RawTarget *t, Job *j, JobStepResult *out, const void *buf, size_t len, uint64_t offset) {
        for (size_t done = 0; done < len;) {
                ssize_t k;

                atomic_fetch_add(&t->io_calls, 1);
                k = pwrite(t->file.fd, (const uint8_t *) buf + done, len - done, (off_t) (offset + done));
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0) {
                        int r = k < 0 ? negative_errno() : -EIO;
                        job_step_io_error(j, out, false, false, r, "Could not write '%s' at offset %" PRIu64 ": %s",
                                          t->path, offset + done, strerror(-r));
                        return r;
                }
                done += (size_t) k;
        }
        return 0;
}

int raw_target_prepare(RawTarget *t, char **ret_error) {
        struct stat st;

        if (fsync(t->file.fd) < 0)
                return fail(ret_error, negative_errno(), "Could not flush target '%s': %m", t->path);

        /* Fail now, while the whole transaction can still abort, not at commit. */
        if (!t->overwrite && fstatat(t->file.dir_fd, t->file.name, &st, AT_SYMLINK_NOFOLLOW) >= 0)
                return fail(ret_error, -EEXIST, "Target '%s' already exists", t->path);
        return 0;
}

void raw_target_commit(RawTarget *t, Job *j) {
        int r;

        r = tmpfile_publish(&t->file, t->overwrite);
        if (r >= 0)
                return;

        /* Commit cannot fail in QEMU's model; the most that can be done is to keep the data. */
        const char *kept = tmpfile_keep(&t->file);
        log_error_errno(r, "Job '%s': could not publish '%s' (%m); %s%s%s", job_id(j), t->path,
                        kept ? "the data was kept as '" : "the data is lost", strempty(kept), kept ? "'" : "");
}

void raw_target_discard(RawTarget *t) {
        tmpfile_discard(&t->file);
        free(t->path);
        t->path = NULL;
}
