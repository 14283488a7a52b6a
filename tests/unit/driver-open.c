/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <unistd.h>

#include "driver-open.h"
#include "open-files.h"

static int open_files(JobFiles *f, const char *chain, ImageFormat format, bool write, const char *target,
                      bool overwrite, bool named_temp_file, char **ret_error) {
        int r;

        r = open_chain_files(chain, format, write, NULL, f, ret_error);
        if (r < 0)
                return r;
        if (!target)
                return 0;
        return open_target_files(target, overwrite, named_temp_file, f, ret_error);
}

/* A resumed job's new target (issue 15): the file it was writing, under its hidden name, in its
 * named form, as the opener hands it over after a restart. */
static int open_resumed_target(const char *target, const char *hidden, JobFiles *f, char **ret_error) {
        g_autofree char *dir = g_path_get_dirname(target), *name = g_path_get_basename(target);
        int dir_fd, fd, r;

        dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dir_fd < 0)
                return -errno;
        fd = openat(dir_fd, hidden, O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
        if (fd < 0) {
                r = -errno;
                close(dir_fd);
                *ret_error = g_strdup_printf("Could not open '%s': %s", hidden, g_strerror(-r));
                return r;
        }
        return job_files_set_new_target(f, fd, dir_fd, name, hidden, geteuid(), -EBADF);
}

/* A copy job's files, opened as the opener opens them, and what the driver is given. */
static int open_copy_full(JobFiles *files, const char *source, ImageFormat source_format, bool source_write,
                          const char *target, bool overwrite, bool sync_top, ImageFormat target_format,
                          bool named_temp_file, CopyParams *ret, char **ret_error) {
        *ret = (CopyParams) {
                .source = source,
                .target = target,
                .files = files,
                .source_format = source_format,
                .overwrite = overwrite,
                .sync_top = sync_top,
                .target_format = target_format,
        };
        return open_files(files, source, source_format, source_write, target, overwrite, named_temp_file, ret_error);
}

static int open_copy(JobFiles *files, const char *source, ImageFormat source_format, const char *target,
                     bool overwrite, bool sync_top, ImageFormat target_format, bool named_temp_file, CopyParams *ret,
                     char **ret_error) {
        return open_copy_full(files, source, source_format, false, target, overwrite, sync_top, target_format,
                              named_temp_file, ret, ret_error);
}

/* The files go with the driver that took them; whatever it did not take is closed. */
static int done_with_files(JobFiles *files, int r) {
        if (r >= 0)
                job_files_hand_over(files);
        job_files_done(files);
        return r;
}

int test_backup_open(const TestBackupParams *p, Backup **ret, char **ret_error) {
        JobFiles files = JOB_FILES_INIT;
        BackupParams bp = {
                .chunk_size = p->chunk_size,
                .bitmap = p->bitmap,
                .bitmap_mode = p->bitmap_mode,
                .sync_bitmap = p->sync_bitmap,
        };
        bool source_write = p->bitmap && p->bitmap_mode != BITMAP_SYNC_NEVER && !p->source_read_only;
        int r;

        JobFiles backing = JOB_FILES_INIT;
        g_autofree char *backing_path = NULL;
        r = open_copy_full(&files, p->source, p->source_format, source_write,
                           p->target_passed || p->resume.resume ? NULL : p->target, p->overwrite, p->sync_top,
                           p->target_format, p->named_temp_file, &bp.copy, ret_error);
        bp.copy.target = p->target;
        bp.copy.resume = p->resume;
        if (r >= 0 && p->resume.resume && !p->target_passed)
                r = open_resumed_target(p->target, p->hidden, &files, ret_error);
        if (r >= 0 && p->target_passed) {
                /* As the bus takes a caller's target-fd (bus-options.c). */
                int fd = open(p->target, O_RDWR | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
                if (fd < 0)
                        r = -errno;
                else
                        job_files_set_target_in_place(&files, fd);
                bp.copy.target = p->target;
        }
        if (r >= 0 && p->target_backing) {
                g_autofree char *dir = g_path_get_dirname(p->target);
                backing_path = g_path_is_absolute(p->target_backing) ? g_strdup(p->target_backing)
                                                                     : g_build_filename(dir, p->target_backing, NULL);
                r = open_chain_files(backing_path, p->target_backing_format, false, NULL, &backing, ret_error);
                bp.target_backing = p->target_backing;
                bp.target_backing_path = backing_path;
                bp.target_backing_format = p->target_backing_format;
                bp.target_backing_files = &backing;
        }
        if (r >= 0)
                r = backup_open(&bp, ret, ret_error);
        job_files_done(&backing);
        return done_with_files(&files, r);
}

int test_mirror_open(const TestMirrorParams *p, Mirror **ret, char **ret_error) {
        JobFiles files = JOB_FILES_INIT;
        MirrorParams mp = {
                .granularity = p->granularity,
                .buf_size = p->buf_size,
                .poll_ns = p->poll_ns,
                .max_interval_ns = p->max_interval_ns,
        };
        int r;

        r = open_copy(&files, p->source, p->source_format, p->resume.resume ? NULL : p->target, p->overwrite,
                      p->sync_top, p->target_format, p->named_temp_file, &mp.copy, ret_error);
        mp.copy.target = p->target;
        mp.copy.resume = p->resume;
        if (r >= 0 && p->resume.resume)
                r = open_resumed_target(p->target, p->hidden, &files, ret_error);
        if (r >= 0)
                r = mirror_open(&mp, ret, ret_error);
        return done_with_files(&files, r);
}

int test_commit_open(const TestCommitParams *p, Commit **ret, char **ret_error) {
        JobFiles files = JOB_FILES_INIT;
        int r;

        r = open_files(&files, p->image, IMAGE_FORMAT_QCOW2, true, NULL, false, false, ret_error);
        if (r >= 0) {
                CommitParams cp = {
                        .image = p->image,
                        .top = p->top,
                        .base = p->base,
                        .backing_file = p->backing_file,
                        .base_format = p->base_format,
                        .files = &files,
                };
                r = commit_open(&cp, ret, ret_error);
        }
        return done_with_files(&files, r);
}

int test_stream_open(const TestStreamParams *p, Stream **ret, char **ret_error) {
        JobFiles files = JOB_FILES_INIT;
        int r;

        r = open_files(&files, p->image, IMAGE_FORMAT_QCOW2, true, NULL, false, false, ret_error);
        if (r >= 0) {
                StreamParams sp = {
                        .image = p->image,
                        .base = p->base,
                        .backing_file = p->backing_file,
                        .base_format = p->base_format,
                        .files = &files,
                };
                r = stream_open(&sp, ret, ret_error);
        }
        return done_with_files(&files, r);
}
