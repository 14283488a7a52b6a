/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <fcntl.h>
#include <linux/fs.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>

#include "error-message.h"
#include "fd-util.h"
#include "file-identity.h"
#include "job.h"
#include "lock.h"
#include "log.h"
#include "macro.h"
#include "target-file.h"

/* Is the file behind 'fd' a layer of the source's chain? 0 no, 1 the top, 2 a backing file. */
static int in_source_chain(int fd, Image *source) {
        FileIdentity target, layer;

        if (file_identity(fd, &target) < 0)
                return 0;
        for (Image *i = source; i; i = image_backing(i))
                if (file_identity(image_fd(i), &layer) >= 0 && file_identity_same(&target, &layer))
                        return i == source ? 1 : 2;
        return 0;
}

static int check_not_source(int fd, const char *path, Image *source, char **ret_error) {
        switch (in_source_chain(fd, source)) {
        case 1:
                return error_message(ret_error, -EINVAL, "Source and target cannot be the same");
        case 2:
                return error_message(ret_error, -EINVAL, "Target '%s' is a backing file of the source", path);
        default:
                return 0;
        }
}

static int check_device_size(TargetFile *t, uint64_t size, char **ret_error) {
        uint64_t device_size;

        if (ioctl(t->device_fd, BLKGETSIZE64, &device_size) < 0)
                return error_message(ret_error, negative_errno(), "Could not get the size of target device '%s': %m",
                                     t->path);
        if (device_size != size)
                return error_message(ret_error, -EINVAL, "Source and target image have different sizes");
        return 0;
}

/* A file written in place, reopened (through /proc, not by name) into a description of our own;
 * a device is claimed. */
static int adopt_in_place(TargetFile *t, int fd, Image *source, uint64_t size, char **ret_error) {
        struct stat st;
        int fl, r;

        fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fstat(fd, &st) < 0)
                return error_message(ret_error, negative_errno(), "Invalid descriptor for target '%s': %m", t->path);
        if ((fl & O_ACCMODE) != O_RDWR || (fl & O_PATH))
                return error_message(ret_error, -EACCES,
                                     "The descriptor for target '%s' is not open for reading and writing", t->path);
        /* Whoever opened it for appending only must not find it written at random offsets. */
        if (fl & O_APPEND)
                return error_message(ret_error, -EACCES, "The descriptor for target '%s' is open for appending only",
                                     t->path);
        if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
                return error_message(ret_error, -EINVAL, "Target '%s' is neither a regular file nor a block device",
                                     t->path);
        r = check_not_source(fd, t->path, source, ret_error);
        if (r < 0)
                return r;
        /* A resumed job's target holds what the job wrote into it before the restart. */
        if (S_ISREG(st.st_mode) && st.st_size > 0 && !t->overwrite && !t->resumed)
                return error_message(ret_error, -EEXIST, "Target '%s' is not empty", t->path);

        /* O_EXCL on a block device claims it: it fails while the device is mounted, part of a
         * RAID or device-mapper set, or claimed by another job. */
        t->device_fd = fd_reopen(fd, O_RDWR | (S_ISBLK(st.st_mode) ? O_EXCL : 0));
        if (t->device_fd == -EBUSY)
                return error_message(ret_error, -EBUSY, "Target device '%s' is in use", t->path);
        if (t->device_fd < 0)
                return error_message(ret_error, t->device_fd, "Could not reopen the descriptor for target '%s': %m",
                                     t->path);
        if (S_ISBLK(st.st_mode)) {
                t->device = true;
                return check_device_size(t, size, ret_error);
        }
        /* A regular file is emptied only once it is locked (target_image_create()). */
        return 0;
}

/* What the name held when the target was opened (found by whoever opened it, with the caller's
 * rights: the daemon does not look the caller's name up itself), if publishing is to replace it:
 * held, so that publishing can tell it is still the same file, and for a regular file locked as
 * QEMU would lock it for writing, so that an image in use (by a running VM, by another job) is
 * never replaced under its user. */
static int hold_replaced(TargetFile *t, int replaced_fd, Image *source, char **ret_error) {
        _cleanup_close_ int fd = -EBADF;
        struct stat st;
        int fl, r;

        if (replaced_fd < 0)
                return 0;       /* free: published without replacing anything */
        fd = fcntl(replaced_fd, F_DUPFD_CLOEXEC, 3);
        if (fd < 0 || fstat(fd, &st) < 0 || (fl = fcntl(fd, F_GETFL)) < 0)
                return error_message(ret_error, negative_errno(), "Could not check target '%s': %m", t->path);
        if (S_ISDIR(st.st_mode))
                return error_message(ret_error, -EISDIR, "Target '%s' is a directory", t->path);
        if (!t->overwrite)
                return error_message(ret_error, -EEXIST, "Target '%s' already exists", t->path);
        if (tmpfile_may_replace_file(&t->file, &st, t->owner) <= 0)
                return error_message(ret_error, -EPERM, "Target '%s' belongs to another user in a sticky directory",
                                     t->path);

        if (S_ISREG(st.st_mode)) {
                /* QEMU's locks need a description open for reading; one the caller could open. */
                if ((fl & O_PATH) || (fl & O_ACCMODE) == O_WRONLY)
                        return error_message(ret_error, -EACCES, "Target '%s' is not open for reading", t->path);
                r = check_not_source(fd, t->path, source, ret_error);
                if (r < 0)
                        return r;
                r = image_lock(fd, IMAGE_PERM_ALL, 0, t->path, ret_error);
                if (r == -EBUSY)
                        return error_message(ret_error, -EBUSY,
                                             "Target '%s' is in use by another process and is not replaced", t->path);
                if (r < 0)
                        return r;
        }
        t->replaced_fd = TAKE_FD(fd);
        return 0;
}

/* A new file: ours to fill and publish, as if we had created it. */
static int adopt_new_file(TargetFile *t, JobFiles *files, Image *source, char **ret_error) {
        struct stat st, dir;
        int r;

        /* Only what the daemon itself would have made: an empty regular file in a directory (for
         * a resumed job: the file it was writing, under its hidden name, which the image it holds
         * must then show: target_image_reopen()). */
        if (fstat(files->target_fd, &st) < 0 || fstat(files->target_dir_fd, &dir) < 0)
                return error_message(ret_error, negative_errno(), "Invalid descriptor for target '%s': %m", t->path);
        if (!S_ISREG(st.st_mode) || (st.st_size != 0 && !t->resumed) || !S_ISDIR(dir.st_mode) ||
            (t->resumed && !files->target_temp_name))
                return error_message(ret_error, -EPROTO, "The new file for target '%s' is not what was asked for",
                                     t->path);
        t->owner = files->target_owner;

        t->file.fd = fcntl(files->target_fd, F_DUPFD_CLOEXEC, 3);
        /* Many jobs publish into one directory: they share one descriptor of it. */
        r = tmpfile_share_dir(&t->file, files->target_dir_fd);
        t->file.name = strdup(files->target_name);
        t->file.temp_name = files->target_temp_name ? strdup(files->target_temp_name) : NULL;
        /* One owner removes the hidden file, once: a second unlink could hit whatever took the
         * name meanwhile. */
        if (!files->target_temp_name || t->file.temp_name)
                job_files_hand_over(files);
        if (t->file.fd < 0)
                return error_message(ret_error, negative_errno(), "Could not take over target '%s': %m", t->path);
        if (r < 0)
                return error_message(ret_error, r, "Could not take over the directory of target '%s': %m", t->path);
        if (!t->file.name || (files->target_temp_name && !t->file.temp_name))
                return error_message(ret_error, -ENOMEM, "Out of memory");

        /* Root's copy of a file keeps the file's permission bits, as cp would; anyone else's is
         * private to them (the opener made it 0600), whatever the source allowed. */
        const struct stat *source_st = image_stat(source);
        if (t->owner == 0 && S_ISREG(source_st->st_mode) && fchmod(t->file.fd, source_st->st_mode & 0666) < 0)
                return error_message(ret_error, negative_errno(), "Could not set the mode of target '%s': %m",
                                     t->path);

        return hold_replaced(t, files->target_replaced_fd, source, ret_error);
}

int target_file_adopt(TargetFile *t, const char *path, JobFiles *files, Image *source, uint64_t size,
                      bool overwrite, bool resume, char **ret_error) {
        int r;

        *t = (TargetFile) TARGET_FILE_NULL;

        if (!path || !*path || !job_files_has_target(files))
                return error_message(ret_error, -EINVAL, "No target given");

        t->overwrite = overwrite;
        t->resumed = resume;
        t->path = strdup(path);
        if (!t->path)
                return error_message(ret_error, -ENOMEM, "Out of memory");
        r = files->target_dir_fd >= 0 ? adopt_new_file(t, files, source, ret_error)
                                      : adopt_in_place(t, files->target_fd, source, size, ret_error);
        if (r < 0)
                target_file_discard(t);
        return r;
}

int target_file_set_hidden_name(TargetFile *t, const char *name, char **ret_error) {
        int r;

        if (target_file_in_place(t) || t->file.fd < 0)
                return 0;
        /* A resumed job's file has it already. */
        if (t->resumed && t->file.temp_name && strcmp(t->file.temp_name, name) == 0)
                return 0;
        r = tmpfile_set_hidden_name(&t->file, name);
        if (r < 0)
                return error_message(ret_error, r, "Could not give target '%s' its hidden name '%s': %m", t->path, name);
        return 0;
}

int target_file_fd(const TargetFile *t) {
        return t->device_fd >= 0 ? t->device_fd : t->file.fd;
}

bool target_file_in_place(const TargetFile *t) {
        return t->device_fd >= 0;
}

/* A file written in place, locked for writing before the image in it is made or opened. */
static int lock_in_place(TargetFile *t, char **ret_error) {
        return image_lock(target_file_fd(t), IMAGE_PERM_CONSISTENT_READ | IMAGE_PERM_WRITE | IMAGE_PERM_RESIZE,
                          IMAGE_PERM_CONSISTENT_READ | IMAGE_PERM_WRITE_UNCHANGED, t->path, ret_error);
}

/* Before an image is made in the target: a file given to be written in place is emptied once we
 * hold its write lock (a new file is ours and empty already). */
int target_file_prepare_image(TargetFile *t, char **ret_error) {
        int fd = target_file_fd(t), r;

        if (!target_file_in_place(t))
                return 0;
        /* Never what a resumed job wrote. */
        assert(!t->resumed);
        r = lock_in_place(t, ret_error);
        if (r < 0)
                return r;
        if (ftruncate(fd, 0) < 0)
                return error_message(ret_error, negative_errno(), "Could not empty target '%s': %m", t->path);
        return 0;
}

/* The format the target gets: 'format', or with PROBE the source's; a device is raw. */
static int target_format(const TargetFile *t, Image *source, ImageFormat format, ImageFormat *ret, char **ret_error) {
        if (t->device) {
                if (!IN_SET(format, IMAGE_FORMAT_PROBE, IMAGE_FORMAT_RAW))
                        return error_message(ret_error, -EINVAL,
                                             "Target device '%s' can only be written as a raw image", t->path);
                *ret = IMAGE_FORMAT_RAW;
                return 0;
        }
        *ret = format == IMAGE_FORMAT_PROBE ? image_format(source) : format;
        return 0;
}

/* A qcow2 copy of the source's top layer alone records the source's backing file. */
static bool target_with_backing(ImageFormat format, Image *source, bool sync_top) {
        return format == IMAGE_FORMAT_QCOW2 && sync_top && image_backing(source);
}

int target_image_create(TargetFile *t, Image *source, const ImageChainFds *backing, ImageFormat format,
                        bool sync_top, Image **ret, char **ret_error) {
        int r;

        r = target_format(t, source, format, &format, ret_error);
        if (r < 0)
                return r;
        if (t->device)
                return image_open_fd(t->device_fd, t->path, IMAGE_FORMAT_RAW, IMAGE_OPEN_WRITE | IMAGE_OPEN_BORROW_FD,
                                     ret, ret_error);

        ImageCreateParams cp = { .format = format, .size = image_size(source) };
        bool with_backing = target_with_backing(format, source, sync_top);
        if (with_backing) {
                if (!backing || backing->n == 0)
                        return error_message(ret_error, -EINVAL, "The backing chain of '%s' was not given",
                                             image_path(source));
                cp.backing_name = image_path(image_backing(source));
                cp.backing_format = image_format(image_backing(source));
        }
        /* A new file, or a given one, emptied once we hold the write lock: the image is made in
         * it. */
        r = target_file_prepare_image(t, ret_error);
        if (r < 0)
                return r;
        int fd = target_file_fd(t);
        r = image_create_fd(fd, t->path, &cp, ret_error);
        if (r < 0)
                return r;
        /* The image writes through our descriptor, and its write lock is on it: one descriptor
         * per target, and the lock goes only when the file is closed for good (after the image,
         * at commit or abort). */
        if (!with_backing)
                return image_open_fd(fd, t->path, format, IMAGE_OPEN_WRITE | IMAGE_OPEN_NO_BACKING | IMAGE_OPEN_BORROW_FD,
                                     ret, ret_error);

        /* The new image's chain is the source's, from the descriptors the source came with. */
        int fds[JOB_FILES_CHAIN_MAX + 1];
        ImageChainFds chain = { .fds = fds, .n = backing->n + 1 };
        if (backing->n >= ELEMENTSOF(fds))
                return error_message(ret_error, -E2BIG, "Backing chain of '%s' is too deep", image_path(source));
        fds[0] = fd;
        memcpy(fds + 1, backing->fds, backing->n * sizeof(int));
        ImageOpenOptions o = { .fds = &chain };
        return image_open_full(t->path, format, IMAGE_OPEN_WRITE | IMAGE_OPEN_BORROW_FD, &o, ret, ret_error);
}

static bool same_name(const char *a, const char *b) {
        return a && b ? strcmp(a, b) == 0 : a == b;
}

_printf_(3, 4) static int not_the_image(const TargetFile *t, char **ret_error, const char *format, ...) {
        _cleanup_free_ char *why = NULL;
        va_list ap;
        int r;

        va_start(ap, format);
        r = vasprintf(&why, format, ap);
        va_end(ap);
        if (r < 0)
                return error_message(ret_error, -ENOMEM, "Out of memory");
        return error_message(ret_error, -EINVAL, "The target '%s' is not the image the job was writing: %s", t->path,
                             why);
}

int target_image_reopen(TargetFile *t, Image *source, ImageFormat format, const char *backing_name,
                        ImageFormat backing_format, const ImageChainFds *backing, Image **ret, char **ret_error) {
        _cleanup_free_ char *error = NULL;
        Image *img = NULL;
        uint64_t size, leaked;
        int r;

        assert(t->resumed);
        r = target_format(t, source, format, &format, ret_error);
        if (r < 0)
                return r;
        if (target_file_in_place(t) && !t->device) {
                r = lock_in_place(t, ret_error);
                if (r < 0)
                        return r;
        }

        /* Opened as the format the job writes, never probed; on the descriptors of the chain it
         * rests on, if any, as target_image_create() opens a new one. */
        int fd = target_file_fd(t);
        if (!backing_name)
                r = image_open_fd(fd, t->path, format, IMAGE_OPEN_WRITE | IMAGE_OPEN_NO_BACKING | IMAGE_OPEN_BORROW_FD,
                                  &img, &error);
        else {
                int fds[JOB_FILES_CHAIN_MAX + 1];
                if (!backing || backing->n == 0 || backing->n >= ELEMENTSOF(fds))
                        return error_message(ret_error, -EINVAL, "The backing chain of '%s' was not given", t->path);
                ImageChainFds chain = { .fds = fds, .n = backing->n + 1 };
                fds[0] = fd;
                memcpy(fds + 1, backing->fds, backing->n * sizeof(int));
                ImageOpenOptions o = { .fds = &chain };
                r = image_open_full(t->path, format, IMAGE_OPEN_WRITE | IMAGE_OPEN_BORROW_FD, &o, &img, &error);
        }
        if (IN_SET(r, -ENOMEM, -EBUSY, -EACCES, -EPERM))
                return error_message(ret_error, r, "%s", strempty(error));
        if (r < 0)
                return not_the_image(t, ret_error, "%s", strempty(error));

        /* The size a new one would have had (qcow2: whole sectors, as image_create() makes it). */
        size = image_size(source);
        if (format == IMAGE_FORMAT_QCOW2)
                size = (size + 511) / 512 * 512;
        if (image_size(img) != size)
                r = not_the_image(t, ret_error, "it has %" PRIu64 " bytes, not %" PRIu64, image_size(img), size);
        else if (!same_name(image_backing_name(img), backing_name) ||
                 (backing_name && image_backing_format(img) != backing_format))
                r = not_the_image(t, ret_error, "its backing file is '%s' (%s), not '%s' (%s)",
                                  image_backing_name(img) ?: "none", image_format_to_string(image_backing_format(img)),
                                  backing_name ?: "none", image_format_to_string(backing_format));
        else {
                /* A writer killed between two checkpoints may have leaked clusters. */
                r = image_repair_leaks(img, &leaked);
                if (r < 0)
                        r = IN_SET(r, -EUCLEAN, -EOPNOTSUPP) ? not_the_image(t, ret_error, "%s", strempty(image_error(img)))
                                                              : error_message(ret_error, r, "%s", strempty(image_error(img)));
                else if (leaked > 0)
                        log_debug("Target '%s': %" PRIu64 " leaked clusters left by the job before the restart counted free again",
                                  t->path, leaked);
        }
        if (r < 0) {
                image_close(img);
                return r;
        }
        *ret = img;
        return 0;
}

int target_file_prepare(TargetFile *t, char **ret_error) {
        struct stat st;

        if (fsync(target_file_fd(t)) < 0)
                return error_message(ret_error, negative_errno(), "Could not flush target '%s': %m", t->path);

        /* Fail now, while the whole transaction can still abort, not at commit. */
        if (target_file_in_place(t))
                return 0;
        if (t->replaced_fd < 0 && fstatat(t->file.dir_fd, t->file.name, &st, AT_SYMLINK_NOFOLLOW) >= 0)
                return error_message(ret_error, -EEXIST, "Target '%s' already exists", t->path);
        return 0;
}

void target_file_commit(TargetFile *t, Job *j) {
        int r;

        if (target_file_in_place(t))
                return;
        /* The name holds what it held when the job was created (or nothing), or nothing is
         * replaced. */
        r = tmpfile_publish(&t->file, t->replaced_fd);
        if (r >= 0) {
                t->replaced_fd = safe_close(t->replaced_fd);
                return;
        }

        /* Commit cannot fail in QEMU's model; the most that can be done is to keep the data. */
        const char *kept = tmpfile_keep(&t->file);
        if (r == -ESTALE || r == -EEXIST)
                log_error("Job '%s': '%s' was %s while the job ran, and is left as it is; %s%s%s", job_id(j), t->path,
                          r == -EEXIST ? "created" : "replaced",
                          kept ? "the data was kept as '" : "the data is lost", strempty(kept), kept ? "'" : "");
        else
                log_error_errno(r, "Job '%s': could not publish '%s' (%m); %s%s%s", job_id(j), t->path,
                                kept ? "the data was kept as '" : "the data is lost", strempty(kept), kept ? "'" : "");
}

void target_file_keep(TargetFile *t) {
        /* tmpfile_discard() removes only a file it knows a name of. */
        free(t->file.temp_name);
        t->file.temp_name = NULL;
}

void target_file_discard(TargetFile *t) {
        tmpfile_discard(&t->file);
        t->device_fd = safe_close(t->device_fd);
        t->replaced_fd = safe_close(t->replaced_fd);
        free(t->path);
        t->path = NULL;
}

void target_file_list(const TargetFile *t, FileUseFunc f, void *userdata) {
        if (target_file_in_place(t)) {
                f(t->device_fd, NULL, t->path, FILE_USE_WRITE, userdata);
                return;
        }
        if (t->file.dir_fd >= 0)
                f(t->file.dir_fd, t->file.name, t->path, FILE_USE_WRITE, userdata);
        if (t->replaced_fd >= 0)
                f(t->replaced_fd, NULL, t->path, FILE_USE_WRITE, userdata);
}

int copy_open_source(const CopyParams *p, unsigned flags, Image **ret, char **ret_error) {
        ImageChainFds chain = { .fds = p->files->chain, .n = p->files->n_chain };
        ImageOpenOptions o = { .fds = &chain, .memory_max = p->memory_max };

        return image_open_full(p->source, p->source_format, flags, &o, ret, ret_error);
}

int copy_open_target(const CopyParams *p, Image *source, bool sync_top, TargetFile *t, Image **ret_writer,
                     char **ret_error) {
        /* Replacing or writing a file of the source's own chain would change the source. */
        int r = target_file_adopt(t, p->target, p->files, source, image_size(source), p->overwrite, p->resume.resume,
                                  ret_error);
        if (r < 0)
                return r;

        /* A qcow2 copy of the top alone rests on the source's own backing files. */
        ImageChainFds backing = { .fds = p->files->chain + 1, .n = p->files->n_chain > 0 ? p->files->n_chain - 1 : 0 };
        if (!p->resume.resume)
                return target_image_create(t, source, &backing, p->target_format, sync_top, ret_writer, ret_error);

        ImageFormat format;
        r = target_format(t, source, p->target_format, &format, ret_error);
        if (r < 0)
                return r;
        bool with_backing = target_with_backing(format, source, sync_top);
        return target_image_reopen(t, source, format, with_backing ? image_path(image_backing(source)) : NULL,
                                   with_backing ? image_format(image_backing(source)) : IMAGE_FORMAT_PROBE, &backing,
                                   ret_writer, ret_error);
}
