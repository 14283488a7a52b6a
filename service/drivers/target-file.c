/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <fcntl.h>
#include <linux/fs.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>

#include "fd-util.h"
#include "job.h"
#include "log.h"
#include "error-message.h"
#include "macro.h"
#include "lock.h"
#include "target-file.h"

static int open_device(TargetFile *t, const char *path, uint64_t size, char **ret_error) {
        uint64_t device_size;
        struct stat st;

        /* O_EXCL on a block device claims it: it fails while the device is mounted, part of a
         * RAID or device-mapper set, or claimed by another job. */
        t->device_fd = open(path, O_RDWR | O_EXCL | O_CLOEXEC | O_NOCTTY);
        if (t->device_fd < 0) {
                if (errno == EBUSY)
                        return error_message(ret_error, -EBUSY, "Target device '%s' is in use", path);
                return error_message(ret_error, negative_errno(), "Could not open target device '%s': %m", path);
        }
        /* The path might have been replaced since we looked at it. */
        if (fstat(t->device_fd, &st) < 0)
                return error_message(ret_error, negative_errno(), "Could not stat target device '%s': %m", path);
        if (!S_ISBLK(st.st_mode))
                return error_message(ret_error, -EINVAL, "Target '%s' changed while it was opened", path);
        if (ioctl(t->device_fd, BLKGETSIZE64, &device_size) < 0)
                return error_message(ret_error, negative_errno(), "Could not get the size of target device '%s': %m",
                                     path);
        if (device_size != size)
                return error_message(ret_error, -EINVAL, "Source and target image have different sizes");
        t->device = true;
        return 0;
}

static bool same_file(const struct stat *a, const struct stat *b) {
        return (a->st_dev == b->st_dev && a->st_ino == b->st_ino) ||
               (S_ISBLK(a->st_mode) && S_ISBLK(b->st_mode) && a->st_rdev == b->st_rdev);
}

/* A descriptor given to write in place, reopened (through /proc, not by name) into a description
 * of our own; a device is claimed as one opened by name is. */
static int adopt_in_place(TargetFile *t, const TargetGiven *g, const struct stat *source_st, uint64_t size,
                          char **ret_error) {
        struct stat st;
        int fl;

        fl = fcntl(g->fd, F_GETFL);
        if (fl < 0 || fstat(g->fd, &st) < 0)
                return error_message(ret_error, negative_errno(), "Invalid descriptor for target '%s': %m", t->path);
        if ((fl & O_ACCMODE) != O_RDWR || (fl & O_PATH))
                return error_message(ret_error, -EACCES,
                                     "The descriptor for target '%s' is not open for reading and writing", t->path);
        if (same_file(&st, source_st))
                return error_message(ret_error, -EINVAL, "Source and target cannot be the same");
        if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
                return error_message(ret_error, -EINVAL, "Target '%s' is neither a regular file nor a block device",
                                     t->path);
        if (S_ISREG(st.st_mode) && st.st_size > 0 && !t->overwrite)
                return error_message(ret_error, -EEXIST, "Target '%s' is not empty", t->path);

        t->device_fd = fd_reopen(g->fd, O_RDWR | (S_ISBLK(st.st_mode) ? O_EXCL : 0));
        if (t->device_fd == -EBUSY)
                return error_message(ret_error, -EBUSY, "Target device '%s' is in use", t->path);
        if (t->device_fd < 0)
                return error_message(ret_error, t->device_fd, "Could not reopen the descriptor for target '%s': %m",
                                     t->path);

        if (S_ISBLK(st.st_mode)) {
                uint64_t device_size;

                t->device = true;
                if (ioctl(t->device_fd, BLKGETSIZE64, &device_size) < 0)
                        return error_message(ret_error, negative_errno(),
                                             "Could not get the size of target device '%s': %m", t->path);
                if (device_size != size)
                        return error_message(ret_error, -EINVAL, "Source and target image have different sizes");
        }
        /* A regular file is emptied only once it is locked (target_image_create()). */
        return 0;
}

/* A new file the helper created: ours to fill and publish, as if we had created it. */
/* A name within a directory, as the opener (a process of the caller's) sent it. */
static bool valid_entry_name(const char *name) {
        return name && *name && !strchr(name, '/') && strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

static int adopt_new_file(TargetFile *t, const TargetGiven *g, const struct stat *source_st, char **ret_error) {
        struct stat st, dir;

        /* Only what the daemon itself would have made: an empty regular file, a directory, a
         * plain name in it, a hidden temporary name. */
        if (fstat(g->fd, &st) < 0 || fstat(g->dir_fd, &dir) < 0)
                return error_message(ret_error, negative_errno(), "Invalid descriptor for target '%s': %m", t->path);
        if (!S_ISREG(st.st_mode) || st.st_size != 0 || !S_ISDIR(dir.st_mode) || !valid_entry_name(g->name) ||
            (g->temp_name && (!valid_entry_name(g->temp_name) || strncmp(g->temp_name, ".#", 2) != 0)))
                return error_message(ret_error, -EPROTO, "The new file for target '%s' is not what was asked for",
                                     t->path);
        t->owner = g->owner;

        if (fstatat(g->dir_fd, g->name, &st, AT_SYMLINK_NOFOLLOW) >= 0) {
                if (same_file(&st, source_st))
                        return error_message(ret_error, -EINVAL, "Source and target cannot be the same");
                if (!t->overwrite)
                        return error_message(ret_error, -EEXIST, "Target '%s' already exists", t->path);
        }

        t->file.fd = fcntl(g->fd, F_DUPFD_CLOEXEC, 3);
        t->file.dir_fd = fcntl(g->dir_fd, F_DUPFD_CLOEXEC, 3);
        t->file.name = strdup(g->name);
        t->file.temp_name = g->temp_name ? strdup(g->temp_name) : NULL;
        if (t->file.fd < 0 || t->file.dir_fd < 0)
                return error_message(ret_error, negative_errno(), "Could not take over target '%s': %m", t->path);
        if (!t->file.name || (g->temp_name && !t->file.temp_name))
                return error_message(ret_error, -ENOMEM, "Out of memory");
        return 0;
}

bool target_file_in_chain(const TargetFile *t, const Image *chain) {
        struct stat st;

        if (target_file_in_place(t))
                return fstat(t->device_fd, &st) >= 0 && image_chain_contains(chain, &st);
        return t->file.dir_fd >= 0 && fstatat(t->file.dir_fd, t->file.name, &st, 0) >= 0 &&
               image_chain_contains(chain, &st);
}

int target_file_open(TargetFile *t, const char *path, const TargetGiven *given, const struct stat *source_st,
                     uint64_t size, bool overwrite, bool named_temp_file, char **ret_error) {
        struct stat st;
        bool device = false;
        int r;

        *t = (TargetFile) TARGET_FILE_NULL;

        if (!path || !*path)
                return error_message(ret_error, -EINVAL, "No target given");

        if (given) {
                t->overwrite = overwrite;
                t->path = strdup(path);
                if (!t->path)
                        return error_message(ret_error, -ENOMEM, "Out of memory");
                r = given->dir_fd >= 0 ? adopt_new_file(t, given, source_st, ret_error)
                                       : adopt_in_place(t, given, source_st, size, ret_error);
                if (r < 0)
                        target_file_discard(t);
                return r;
        }

        /* Check the target before creating anything. */
        if (stat(path, &st) >= 0) {
                if (same_file(&st, source_st))
                        return error_message(ret_error, -EINVAL, "Source and target cannot be the same");
                if (S_ISDIR(st.st_mode))
                        return error_message(ret_error, -EISDIR, "Target '%s' is a directory", path);
                if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
                        return error_message(ret_error, -EINVAL,
                                             "Target '%s' is neither a regular file nor a block device", path);
                /* Writing over a device destroys what is on it just as replacing a file does. */
                if (!overwrite)
                        return error_message(ret_error, -EEXIST, "Target '%s' already exists", path);
                device = S_ISBLK(st.st_mode);
        } else if (errno != ENOENT)
                return error_message(ret_error, negative_errno(), "Could not check target '%s': %m", path);

        t->overwrite = overwrite;
        t->path = strdup(path);
        if (!t->path)
                return error_message(ret_error, -ENOMEM, "Out of memory");

        if (device)
                r = open_device(t, path, size, ret_error);
        else {
                /* A file's copy keeps the source's permission bits; a device's copy is private. */
                r = tmpfile_open(&t->file, path, S_ISREG(source_st->st_mode) ? (source_st->st_mode & 0666) : 0600,
                                 !named_temp_file);
                if (r == -EISDIR)
                        r = error_message(ret_error, r, "Target '%s' names a directory", path);
                else if (r < 0)
                        r = error_message(ret_error, r, "Could not create target '%s': %m", path);
        }
        if (r < 0) {
                target_file_discard(t);
                return r;
        }
        return 0;
}

int target_file_fd(const TargetFile *t) {
        return t->device_fd >= 0 ? t->device_fd : t->file.fd;
}

bool target_file_in_place(const TargetFile *t) {
        return t->device_fd >= 0;
}

int target_image_create(TargetFile *t, Image *source, ImageFormat format, bool sync_top, Image **ret,
                        char **ret_error) {
        int r;

        if (t->device) {
                if (!IN_SET(format, IMAGE_FORMAT_PROBE, IMAGE_FORMAT_RAW))
                        return error_message(ret_error, -EINVAL,
                                             "Target device '%s' can only be written as a raw image", t->path);
                return image_open_fd(t->device_fd, t->path, IMAGE_FORMAT_RAW, IMAGE_OPEN_WRITE, ret, ret_error);
        }

        if (format == IMAGE_FORMAT_PROBE)
                format = image_format(source);
        ImageCreateParams cp = { .format = format, .size = image_size(source) };
        if (format == IMAGE_FORMAT_QCOW2 && sync_top && image_backing(source)) {
                cp.backing_name = image_path(image_backing(source));
                cp.backing_format = image_format(image_backing(source));
        }
        /* A new file, or a given one, emptied once we hold the write lock: the image is made in
         * it. */
        int fd = target_file_fd(t);
        if (target_file_in_place(t)) {
                r = image_lock(fd, IMAGE_PERM_CONSISTENT_READ | IMAGE_PERM_WRITE | IMAGE_PERM_RESIZE,
                               IMAGE_PERM_CONSISTENT_READ | IMAGE_PERM_WRITE_UNCHANGED, t->path, ret_error);
                if (r < 0)
                        return r;
                if (ftruncate(fd, 0) < 0)
                        return error_message(ret_error, negative_errno(), "Could not empty target '%s': %m", t->path);
        }
        r = image_create_fd(fd, t->path, &cp, ret_error);
        if (r < 0)
                return r;
        return image_open_fd(fd, t->path, format, IMAGE_OPEN_WRITE, ret, ret_error);
}

int target_file_prepare(TargetFile *t, char **ret_error) {
        struct stat st;

        if (fsync(target_file_fd(t)) < 0)
                return error_message(ret_error, negative_errno(), "Could not flush target '%s': %m", t->path);

        /* Fail now, while the whole transaction can still abort, not at commit. */
        if (target_file_in_place(t))
                return 0;
        if (!t->overwrite && fstatat(t->file.dir_fd, t->file.name, &st, AT_SYMLINK_NOFOLLOW) >= 0)
                return error_message(ret_error, -EEXIST, "Target '%s' already exists", t->path);
        if (t->overwrite && tmpfile_may_replace(&t->file, t->owner) == 0)
                return error_message(ret_error, -EPERM, "Target '%s' belongs to another user in a sticky directory",
                                     t->path);
        return 0;
}

void target_file_commit(TargetFile *t, Job *j) {
        int r;

        if (target_file_in_place(t))
                return;
        /* Whatever appeared at the name since prepare: replaced only as its user could. */
        if (t->overwrite && tmpfile_may_replace(&t->file, t->owner) == 0)
                r = -EPERM;
        else
                r = tmpfile_publish(&t->file, t->overwrite);
        if (r >= 0)
                return;

        /* Commit cannot fail in QEMU's model; the most that can be done is to keep the data. */
        const char *kept = tmpfile_keep(&t->file);
        log_error_errno(r, "Job '%s': could not publish '%s' (%m); %s%s%s", job_id(j), t->path,
                        kept ? "the data was kept as '" : "the data is lost", strempty(kept), kept ? "'" : "");
}

void target_file_discard(TargetFile *t) {
        tmpfile_discard(&t->file);
        t->device_fd = safe_close(t->device_fd);
        free(t->path);
        t->path = NULL;
}
