/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <fcntl.h>
#include <libgen.h>
#include <linux/fs.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/statfs.h>

#include "fd-util.h"
#include "fs-type.h"
#include "error-message.h"
#include "image-fault.h"
#include "image-internal.h"
#include "lock.h"
#include "path-util.h"
#include "qcow2.h"

static const char *const format_names[_IMAGE_FORMAT_MAX] = {
        [IMAGE_FORMAT_PROBE] = "probe",
        [IMAGE_FORMAT_RAW] = "raw",
        [IMAGE_FORMAT_QCOW2] = "qcow2",
};

const char *image_format_to_string(ImageFormat f) {
        return f >= 0 && f < _IMAGE_FORMAT_MAX ? format_names[f] : NULL;
}

ImageFormat image_format_from_string(const char *s) {
        for (int f = IMAGE_FORMAT_RAW; f < _IMAGE_FORMAT_MAX; f++)
                if (s && strcmp(format_names[f], s) == 0)
                        return f;
        return _IMAGE_FORMAT_MAX;
}

/* ---- fault injection (tests) ---------------------------------------------------------------- */

static ImageFaultHook fault_hook;

void image_set_fault_hook(ImageFaultHook hook) {
        fault_hook = hook;
}

static int inject_fault(Image *img, ImageIo io, uint64_t offset, uint64_t length);

/* ---- errors -------------------------------------------------------------------------------- */

int image_fail(Image *img, int r, const char *format, ...) {
        va_list ap;

        va_start(ap, format);
        free(img->error);
        img->error = error_message_format(r, format, ap);
        va_end(ap);
        return r;
}

const char *image_error(const Image *img) {
        return img->error;
}

/* ---- file access --------------------------------------------------------------------------- */

int image_file_write(Image *img, const void *buf, uint64_t offset, size_t length) {
        img->file_unsynced = true;
        for (size_t done = 0; done < length;) {
                ssize_t k = pwrite(img->fd, (const uint8_t *) buf + done, length - done, (off_t) (offset + done));
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        return image_fail(img, k < 0 ? negative_errno() : -EIO,
                                          "Could not write '%s' at offset %" PRIu64 ": %m", img->path, offset + done);
                done += (size_t) k;
        }
        return 0;
}

int image_file_sync(Image *img) {
        if (fdatasync(img->fd) < 0)
                return image_fail(img, negative_errno(), "Could not flush '%s': %m", img->path);
        img->file_unsynced = false;
        return 0;
}

int image_file_read(Image *img, void *buf, uint64_t offset, size_t length) {
        size_t done = 0;

        while (done < length) {
                ssize_t k = pread(img->fd, (uint8_t *) buf + done, length - done, (off_t) (offset + done));
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return image_fail(img, negative_errno(), "Could not read '%s' at offset %" PRIu64 ": %m",
                                          img->path, offset + done);
                if (k == 0)
                        break;          /* end of file */
                done += (size_t) k;
        }
        memset((uint8_t *) buf + done, 0, length - done);
        return 0;
}

int image_file_allocation(Image *img, uint64_t offset, uint64_t length, bool *ret_hole, uint64_t *ret_length) {
        off_t data, hole;

        if (!S_ISREG(img->st.st_mode)) {
                *ret_hole = false;
                *ret_length = length;
                return 0;
        }

        data = lseek(img->fd, (off_t) offset, SEEK_DATA);
        if (data < 0 && errno == ENXIO) {
                /* Nothing but hole from here on (or past the end of the file). */
                *ret_hole = true;
                *ret_length = length;
                return 0;
        }
        if (data < 0 && IN_SET(errno, EINVAL, EOPNOTSUPP)) {
                *ret_hole = false;
                *ret_length = length;
                return 0;
        }
        if (data < 0)
                return image_fail(img, negative_errno(), "Could not get the allocation of '%s': %m", img->path);
        if ((uint64_t) data > offset) {
                *ret_hole = true;
                *ret_length = MIN(length, (uint64_t) data - offset);
                return 0;
        }
        hole = lseek(img->fd, (off_t) offset, SEEK_HOLE);
        if (hole < 0)
                return image_fail(img, negative_errno(), "Could not get the allocation of '%s': %m", img->path);
        *ret_hole = false;
        *ret_length = MIN(length, MAX((uint64_t) hole, offset + 1) - offset);
        return 0;
}

/* ---- opening ------------------------------------------------------------------------------- */

static const ImageOps *ops_for(ImageFormat f) {
        switch (f) {
        case IMAGE_FORMAT_RAW:
                return &raw_ops;
        case IMAGE_FORMAT_QCOW2:
                return &qcow2_ops;
        default:
                return NULL;
        }
}

static ImageFormat probe(int fd) {
        uint8_t magic[4];

        if (pread(fd, magic, sizeof(magic), 0) == (ssize_t) sizeof(magic) && memcmp(magic, "QFI\xfb", 4) == 0)
                return IMAGE_FORMAT_QCOW2;
        return IMAGE_FORMAT_RAW;
}

Image *image_close(Image *img) {
        if (!img)
                return NULL;
        image_close(img->backing);
        if (img->ops && img->ops->close)
                img->ops->close(img);
        if (img->shared_fd)
                shared_fd_unref(img->shared_fd);
        else if (!img->fd_borrowed)
                safe_close(img->fd);
        free(img->path);
        free(img->backing_name);
        free(img->error);
        free(img);
        return NULL;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(Image *, image_close);

static uint64_t lock_perm(unsigned flags) {
        return IMAGE_PERM_CONSISTENT_READ | ((flags & IMAGE_OPEN_WRITE) ? IMAGE_PERM_WRITE | IMAGE_PERM_RESIZE : 0);
}

static uint64_t lock_shared(unsigned flags) {
        /* As QEMU: readers and writers alike let others read, and deny writes unless told. */
        if (flags & IMAGE_OPEN_SHARE_WRITE)
                return IMAGE_PERM_ALL;
        return IMAGE_PERM_CONSISTENT_READ | IMAGE_PERM_WRITE_UNCHANGED;
}

/* Only local files: QEMU's pseudo-protocols (json:, nbd://, ...) are not for us. */
static bool backing_name_is_local(const char *name) {
        return strncmp(name, "json:", 5) != 0 && !strstr(name, "://");
}

static int backing_path(const Image *img, char **ret) {
        _cleanup_free_ char *copy = NULL;
        char *s;

        if (img->backing_name[0] == '/') {
                s = strdup(img->backing_name);
                if (!s)
                        return -ENOMEM;
                *ret = s;
                return 0;
        }
        /* Relative names are relative to the image that names them. */
        copy = strdup(img->path);
        if (!copy)
                return -ENOMEM;
        if (asprintf(&s, "%s/%s", dirname(copy), img->backing_name) < 0)
                return -ENOMEM;
        *ret = s;
        return 0;
}

static int open_layer(int fd, bool own, const char *name, ImageFormat format, unsigned flags, Image **ret,
                      char **ret_error);

static bool same_file(const struct stat *a, const struct stat *b) {
        return a && b && a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

/* Opens an image file by name ('parent': the image that names it, for messages). First as a path
 * only, to see where it is before anything is asked of it: a file on FUSE is refused, since its
 * server can make every call on it wait for ever, close() included. Then for real, through that
 * path (no second look-up), non-blocking so that a FIFO in its place cannot hang us (it is
 * refused as soon as it is looked at); then blocking again, as image I/O expects. */
static int open_by_name(const char *path, const char *parent, unsigned flags, char **ret_error) {
        _cleanup_close_ int opath = -EBADF;
        _cleanup_free_ char *fuse = NULL;
        int fd, fl, r;

        opath = open(path, O_PATH | O_CLOEXEC);
        if (opath < 0)
                r = negative_errno();
        else if ((fuse = fd_fuse_type(opath)))
                return error_message(ret_error, -EMEDIUMTYPE,
                                     "'%s' is on a FUSE file system (%s), which blockjobd does not use: its server could make the daemon wait for ever",
                                     path, fuse);
        else {
                fd = fd_reopen(opath, ((flags & IMAGE_OPEN_WRITE) ? O_RDWR : O_RDONLY) | O_NONBLOCK);
                r = fd;
                if (fd >= 0) {
                        fl = fcntl(fd, F_GETFL);
                        if (fl >= 0 && fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) >= 0)
                                return fd;
                        r = negative_errno();
                        safe_close(fd);
                }
        }
        if (parent)
                return error_message(ret_error, r, "Could not open backing file '%s' of '%s': %m", path, parent);
        return error_message(ret_error, r, "Could not open '%s': %m", path);
}

/* A descriptor someone else opened: it must allow what we are going to do with it, and we take
 * our own open file description of the same file (through /proc, no name is looked up), so that
 * our image locks are ours alone, as with a file we opened ourselves, and go when we close it
 * (the caller's copy would keep them on a shared description). Returns the new descriptor. */
static int check_given_fd(int fd, const char *name, unsigned flags, char **ret_error) {
        struct stat st;
        int fl;

        fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fstat(fd, &st) < 0)
                return error_message(ret_error, negative_errno(), "Invalid descriptor for '%s': %m", name);
        /* Before reopening: a FIFO's open would wait for a writer. */
        if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
                return error_message(ret_error, -EINVAL, "'%s' is neither a regular file nor a block device", name);
        if ((fl & O_ACCMODE) == O_WRONLY || (fl & O_PATH))
                return error_message(ret_error, -EACCES, "The descriptor for '%s' is not open for reading", name);
        if ((flags & IMAGE_OPEN_WRITE) && (fl & O_ACCMODE) != O_RDWR)
                return error_message(ret_error, -EACCES, "The descriptor for '%s' is not open for writing", name);
        return 0;
}

static int open_given_fd(int fd, const char *name, unsigned flags, char **ret_error) {
        int r;

        r = check_given_fd(fd, name, flags, ret_error);
        if (r < 0)
                return r;
        r = fd_reopen(fd, (flags & IMAGE_OPEN_WRITE) ? O_RDWR : O_RDONLY);
        if (r < 0)
                return error_message(ret_error, r, "Could not reopen the descriptor for '%s': %m", name);
        return r;
}

/* The format that img's backing file (the file 'st', called 'path') is opened as: the one img
 * records, or for the file the caller knows (options->base), the one the caller gives, which
 * must then agree with a recorded one. Never probed: the content of a file says nothing about
 * whether it is what it looks like. */
static int backing_format(const Image *img, const char *path, const struct stat *st, const ImageOpenOptions *options,
                          ImageFormat *ret, char **ret_error) {
        ImageFormat given = IMAGE_FORMAT_PROBE;

        if (options && same_file(options->base, st))
                given = options->base_format;
        if (!IN_SET(given, IMAGE_FORMAT_PROBE, IMAGE_FORMAT_RAW, IMAGE_FORMAT_QCOW2))
                return error_message(ret_error, -EINVAL, "Unknown format for backing file '%s'", path);

        if (img->backing_format != IMAGE_FORMAT_PROBE) {
                if (given != IMAGE_FORMAT_PROBE && given != img->backing_format)
                        return error_message(ret_error, -EINVAL,
                                             "Backing file '%s' of '%s' is recorded as a %s image, but was given as %s",
                                             path, img->path, image_format_to_string(img->backing_format),
                                             image_format_to_string(given));
                *ret = img->backing_format;
                return 0;
        }
        if (given == IMAGE_FORMAT_PROBE)
                return error_message(ret_error, -EINVAL,
                                     "Image '%s' does not record the format of its backing file '%s', and blockjobd does not guess it; "
                                     "record it with 'qemu-img rebase -u -b %s -F FORMAT %s' (FORMAT: raw or qcow2)",
                                     img->path, img->backing_name, img->backing_name, img->path);
        *ret = given;
        return 0;
}

/* Opens img's backing file. Returns 0 without opening it if it is options->stop_before. */
static int open_backing(Image *img, const Image *top, int depth, const ImageOpenOptions *options, char **ret_error) {
        _cleanup_free_ char *path = NULL;
        _cleanup_close_ int fd = -EBADF;
        unsigned flags = top->flags & IMAGE_OPEN_NO_LOCK;
        ImageFormat format = IMAGE_FORMAT_PROBE;  /* set by backing_format(); gcc 12 -O2 cannot tell */
        Image *b = NULL;
        struct stat st;
        int r;

        if (!backing_name_is_local(img->backing_name))
                return error_message(ret_error, -EOPNOTSUPP, "Backing file '%s' of '%s' is not a local file",
                                     img->backing_name, img->path);
        if (depth >= IMAGE_CHAIN_DEPTH_MAX)
                return error_message(ret_error, -ELOOP, "Backing chain of '%s' is deeper than %d images", top->path,
                                     IMAGE_CHAIN_DEPTH_MAX);

        r = backing_path(img, &path);
        if (r < 0)
                return error_message(ret_error, r, "Out of memory");

        if (options && options->fds) {
                /* Given, not opened: the layer at this depth. */
                if ((size_t) depth >= options->fds->n)
                        return error_message(ret_error, -EPERM,
                                             "Backing file '%s' of '%s' was not passed (the chain has %zu file%s)",
                                             path, img->path, options->fds->n, options->fds->n == 1 ? "" : "s");
                if (fstat(options->fds->fds[depth], &st) < 0)
                        return error_message(ret_error, negative_errno(), "Could not stat '%s': %m", path);
        } else {
                if (options && options->before_following) {
                        r = options->before_following(img, options->userdata, ret_error);
                        if (r < 0)
                                return r;
                }
                if (stat(path, &st) < 0)
                        return error_message(ret_error, negative_errno(), "Could not open backing file '%s' of '%s': %m",
                                             path, img->path);
        }
        if (options && same_file(options->stop_before, &st))
                return 0;
        r = backing_format(img, path, &st, options, &format, ret_error);
        if (r < 0)
                return r;
        if (options && same_file(options->writable, &st))
                flags |= IMAGE_OPEN_WRITE;

        if (options && options->fds) {
                fd = open_given_fd(options->fds->fds[depth], path, flags, ret_error);
                if (fd < 0)
                        return fd;
        } else {
                fd = open_by_name(path, img->path, flags, ret_error);
                if (fd < 0)
                        return fd;
        }
        if (fstat(fd, &st) < 0)
                return error_message(ret_error, negative_errno(), "Could not stat '%s': %m", path);

        /* A chain that comes back to one of its images never ends. */
        for (const Image *i = top; i; i = i->backing)
                if (i->st.st_dev == st.st_dev && i->st.st_ino == st.st_ino)
                        return error_message(ret_error, -ELOOP, "Backing chain of '%s' loops back to '%s'", top->path,
                                             path);

        /* Backing images are read, and must not change under us (unless this is the one the
         * caller is going to write). */
        r = open_layer(fd, true, path, format, flags, &b, ret_error);
        if (r < 0)
                return r;
        img->backing = b;
        return 0;
}

/* The key under which a layer's description is shared: the same file through the same mount,
 * opened the same way, holding the same locks. Only a description the image layer opened itself
 * ('own': a caller's copy would keep the locks after the last image went), read-only (a writer
 * must conflict with the readers, in this process too), and locked (the table is for jobs;
 * blockjobd-opener and the tests that open without locks keep to descriptions of their own). */
static bool layer_key(int fd, bool own, unsigned flags, SharedFdKey *ret) {
        uint64_t kind;

        if (!own || (flags & (IMAGE_OPEN_WRITE | IMAGE_OPEN_NO_LOCK | IMAGE_OPEN_BORROW_FD)))
                return false;
        kind = UINT64_C(1) << 63 | (uint64_t) O_RDONLY | lock_perm(flags) << 8 | lock_shared(flags) << 16;
        return shared_fd_key(fd, kind, ret) >= 0;
}

/* The layer's descriptor: the caller's itself, a description shared with other layers (found, or
 * made from 'fd' once it holds its locks), or a duplicate of 'fd' of its own. The locks are taken
 * here, once per description. */
static int layer_fd(Image *img, int fd, bool own, char **ret_error) {
        SharedFdKey key;
        bool shareable;
        int r;

        if (img->flags & IMAGE_OPEN_BORROW_FD) {
                img->fd = fd;
                img->fd_borrowed = true;
        } else {
                shareable = layer_key(fd, own, img->flags, &key);
                if (shareable) {
                        img->shared_fd = shared_fd_get(&key);
                        if (img->shared_fd) {
                                /* Locked as this layer would lock it, by whoever came first. */
                                img->fd = shared_fd_fd(img->shared_fd);
                                return 0;
                        }
                }
                img->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
                if (img->fd < 0)
                        return error_message(ret_error, negative_errno(), "Could not duplicate descriptor of '%s': %m",
                                             img->path);
                if (shareable) {
                        r = image_lock(img->fd, lock_perm(img->flags), lock_shared(img->flags), img->path, ret_error);
                        if (r < 0)
                                return r;
                        /* If another layer's description came first meanwhile, that one is used,
                         * and this one (and its locks) goes. */
                        img->shared_fd = shared_fd_add(&key, TAKE_FD(img->fd));
                        if (!img->shared_fd)
                                return error_message(ret_error, -ENOMEM, "Out of memory");
                        img->fd = shared_fd_fd(img->shared_fd);
                        return 0;
                }
        }

        if (!(img->flags & IMAGE_OPEN_NO_LOCK))
                return image_lock(img->fd, lock_perm(img->flags), lock_shared(img->flags), img->path, ret_error);
        return 0;
}

static int open_layer(int fd, bool own, const char *name, ImageFormat format, unsigned flags, Image **ret,
                      char **ret_error) {
        _cleanup_(image_closep) Image *img = NULL;
        int r;

        img = calloc(1, sizeof(*img));
        if (!img)
                return error_message(ret_error, -ENOMEM, "Out of memory");
        img->fd = -EBADF;
        img->flags = flags;
        img->file_unsynced = flags & IMAGE_OPEN_WRITE;
        img->backing_format = IMAGE_FORMAT_PROBE;
        img->path = strdup(name);
        if (!img->path)
                return error_message(ret_error, -ENOMEM, "Out of memory");
        r = layer_fd(img, fd, own, ret_error);
        if (r < 0)
                return r;

        if (fstat(img->fd, &img->st) < 0)
                return error_message(ret_error, negative_errno(), "Could not stat '%s': %m", name);
        if (S_ISREG(img->st.st_mode))
                img->file_size = (uint64_t) img->st.st_size;
        else if (S_ISBLK(img->st.st_mode)) {
                if (ioctl(img->fd, BLKGETSIZE64, &img->file_size) < 0)
                        return error_message(ret_error, negative_errno(), "Could not get the size of '%s': %m", name);
        } else
                return error_message(ret_error, -EINVAL, "'%s' is neither a regular file nor a block device", name);

        if (format == IMAGE_FORMAT_PROBE) {
                format = S_ISREG(img->st.st_mode) ? probe(img->fd) : IMAGE_FORMAT_RAW;
                img->probed = true;
        }
        img->ops = ops_for(format);
        if (!img->ops)
                return error_message(ret_error, -EINVAL, "Unknown image format of '%s'", name);

        r = img->ops->open(img, ret_error);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(img);
        return 0;
}

/* Within the bound so far? Checked after each layer: one layer (at most QEMU's 32 MiB of L1) may
 * go past it before the chain is refused. */
static int check_memory(const Image *img, const ImageOpenOptions *options, char **ret_error) {
        uint64_t m;

        if (!options || options->memory_max == 0)
                return 0;
        m = image_memory_estimate(img);
        if (m <= options->memory_max)
                return 0;
        return error_message(ret_error, -E2BIG,
                             "The backing chain of '%s' would need more than %" PRIu64 " MiB of memory for its tables and bitmaps, more than the %" PRIu64 " MiB a job may have",
                             img->path, m >> 20, options->memory_max >> 20);
}

static int open_fd_full(int fd, bool own, const char *name, ImageFormat format, unsigned flags,
                        const ImageOpenOptions *options, Image **ret, char **ret_error) {
        _cleanup_(image_closep) Image *img = NULL;
        int r;

        r = open_layer(fd, own, name, format, flags, &img, ret_error);
        if (r < 0)
                return r;

        /* What only looks like qcow2 is not followed: the raw disk of a guest may say anything. */
        if (img->probed && img->ops->format == IMAGE_FORMAT_QCOW2 && img->backing_name &&
            !(flags & IMAGE_OPEN_NO_BACKING))
                return error_message(ret_error, -EINVAL,
                                     "Image '%s' looks like a qcow2 image with backing file '%s'; blockjobd follows backing files only when the image's format is given: pass source-format=qcow2",
                                     name, img->backing_name);

        int depth = 1;
        if (!(flags & IMAGE_OPEN_NO_BACKING))
                for (Image *i = img; i && i->backing_name; i = i->backing, depth++) {
                        r = check_memory(img, options, ret_error);
                        if (r < 0)
                                return r;
                        r = open_backing(i, img, depth, options, ret_error);
                        if (r < 0)
                                return r;
                }
        r = check_memory(img, options, ret_error);
        if (r < 0)
                return r;
        /* Only now, within the bound: what the layers to be written load (an image whose headers
         * ask for too much is refused above, before any of it is allocated). */
        for (Image *i = img; i; i = i->backing)
                if ((i->flags & IMAGE_OPEN_WRITE) && i->ops->open_writable) {
                        r = i->ops->open_writable(i, ret_error);
                        if (r < 0)
                                return r;
                }

        /* Each layer knows how many are below it, for the status of the chain. */
        depth = 0;
        for (Image *i = img; i; i = i->backing)
                depth++;
        for (Image *i = img; i; i = i->backing)
                i->depth_below = --depth;

        *ret = TAKE_PTR(img);
        return 0;
}

int image_open_fd(int fd, const char *name, ImageFormat format, unsigned flags, Image **ret, char **ret_error) {
        return open_fd_full(fd, false, name, format, flags, NULL, ret, ret_error);
}

int image_open_full(const char *path, ImageFormat format, unsigned flags, const ImageOpenOptions *options, Image **ret,
                    char **ret_error) {
        _cleanup_close_ int fd = -EBADF;

        if (!path || !*path)
                return error_message(ret_error, -EINVAL, "No image given");

        if (options && options->fds) {
                if (options->fds->n == 0)
                        return error_message(ret_error, -EPERM, "No descriptor was passed for '%s'", path);
                if (flags & IMAGE_OPEN_BORROW_FD) {
                        int r = check_given_fd(options->fds->fds[0], path, flags, ret_error);
                        if (r < 0)
                                return r;
                        return open_fd_full(options->fds->fds[0], false, path, format, flags, options, ret, ret_error);
                }
                fd = open_given_fd(options->fds->fds[0], path, flags, ret_error);
                if (fd < 0)
                        return fd;
                return open_fd_full(fd, true, path, format, flags, options, ret, ret_error);
        }

        if (flags & IMAGE_OPEN_BORROW_FD)
                return error_message(ret_error, -EINVAL, "No descriptor was passed for '%s'", path);
        fd = open_by_name(path, NULL, flags, ret_error);
        if (fd < 0)
                return fd;
        return open_fd_full(fd, true, path, format, flags, options, ret, ret_error);
}

int image_open(const char *path, ImageFormat format, unsigned flags, Image **ret, char **ret_error) {
        return image_open_full(path, format, flags, NULL, ret, ret_error);
}

/* ---- accessors ----------------------------------------------------------------------------- */

const char *image_path(const Image *img) {
        return img->path;
}

ImageFormat image_format(const Image *img) {
        return img->ops->format;
}

bool image_format_probed(const Image *img) {
        return img->probed;
}

uint64_t image_size(const Image *img) {
        return img->size;
}

Image *image_backing(const Image *img) {
        return img->backing;
}

const char *image_backing_name(const Image *img) {
        return img->backing_name;
}

ImageFormat image_backing_format(const Image *img) {
        return img->backing_format;
}

int image_chain_depth(const Image *img) {
        return img->depth_below + 1;
}

const struct stat *image_stat(const Image *img) {
        return &img->st;
}

Image *image_chain_find(Image *img, const struct stat *st, int *ret_depth) {
        for (int depth = 0; img; img = img->backing, depth++)
                if (same_file(&img->st, st)) {
                        if (ret_depth)
                                *ret_depth = depth;
                        return img;
                }
        return NULL;
}

int image_chain_lookup(Image *img, const char *name, Image **ret, int *ret_depth) {
        for (int depth = 0; img; img = img->backing, depth++)
                if (path_equal(img->path, name)) {
                        if (ret_depth)
                                *ret_depth = depth;
                        *ret = img;
                        return 1;
                }
        *ret = NULL;
        return 0;
}

int image_fd(const Image *img) {
        return img->fd;
}

bool image_chain_contains(const Image *img, const struct stat *st) {
        return image_chain_find((Image *) img, st, NULL);
}

uint32_t image_cluster_size(const Image *img) {
        return img->cluster_size;
}

uint64_t image_memory_estimate(const Image *img) {
        uint64_t total = 0;

        for (; img; img = img->backing) {
                total += sizeof(Image) + strlen(img->path) + 1;
                total += img->backing_name ? strlen(img->backing_name) + 1 : 0;
                total += img->ops->memory_estimate(img);
        }
        return total;
}

/* ---- reading and block status through the chain --------------------------------------------- */

static int layer_status(Image *img, uint64_t offset, uint64_t length, LayerExtent *ret) {
        int r;

        if (img->flags & IMAGE_OPEN_HEADERS_ONLY)
                return image_fail(img, -EBADF, "Image '%s' was opened for its headers only", img->path);
        r = img->ops->status(img, offset, length, ret);
        if (r < 0)
                return r;
        /* A driver always makes progress and never reports past what was asked. If one did not
         * (a file changing under it in a way nobody foresaw), this request fails: nothing an
         * image or another writer does may abort the daemon, or loop it forever. */
        if (ret->length == 0 || ret->length > length)
                return image_fail(img, -EIO,
                                  "Could not get the block status of '%s' at offset %" PRIu64 ": the %s driver reported %" PRIu64 " bytes of %" PRIu64,
                                  img->path, offset, image_format_to_string(img->ops->format), ret->length, length);
        return 0;
}

int image_layer_status(Image *img, uint64_t offset, uint64_t length, LayerKind *ret_kind, uint64_t *ret_length) {
        LayerExtent e;
        int r;

        if (offset >= img->size || length == 0)
                return image_fail(img, -EINVAL, "Status of '%s' asked beyond its end", img->path);
        r = layer_status(img, offset, MIN(length, img->size - offset), &e);
        if (r < 0)
                return r;
        *ret_kind = e.kind;
        *ret_length = e.length;
        return 0;
}

/* Copy a failure of a backing image up to the image the caller holds. */
static int pass_up(Image *img, Image *from, int r) {
        if (from->error)
                return image_fail(img, r, "%s", from->error);
        return r;
}

int image_read(Image *img, void *buf, uint64_t offset, size_t length) {
        uint8_t *p = buf;
        int r;

        if (offset > img->size || length > img->size - offset)
                return image_fail(img, -EINVAL, "Read of '%s' beyond its end", img->path);

        while (length > 0) {
                LayerExtent e;

                r = layer_status(img, offset, length, &e);
                if (r < 0)
                        return r;

                switch (e.kind) {
                case LAYER_DATA:
                        if (e.zero) {
                                memset(p, 0, e.length);
                                break;
                        }
                        r = inject_fault(img, IMAGE_IO_READ, offset, e.length);
                        if (r < 0)
                                return r;
                        r = img->ops->read(img, p, offset, e.length);
                        if (r < 0)
                                return r;
                        break;

                case LAYER_ZERO:
                        memset(p, 0, e.length);
                        break;

                case LAYER_UNALLOCATED:
                default: {
                        /* Through to the backing image; beyond its end, zeroes. */
                        uint64_t from_below = 0;
                        if (img->backing && offset < img->backing->size)
                                from_below = MIN(e.length, img->backing->size - offset);
                        if (from_below > 0) {
                                r = image_read(img->backing, p, offset, from_below);
                                if (r < 0)
                                        return pass_up(img, img->backing, r);
                        }
                        memset(p + from_below, 0, e.length - from_below);
                        break;
                }
                }

                p += e.length;
                offset += e.length;
                length -= e.length;
        }
        return 0;
}

int image_block_status(Image *img, uint64_t offset, uint64_t length, ImageExtent *ret) {
        Image *layer = img;
        int depth = 0;
        int r;

        if (offset >= img->size || length == 0)
                return image_fail(img, -EINVAL, "Status of '%s' asked beyond its end", img->path);
        length = MIN(length, img->size - offset);

        for (;;) {
                LayerExtent e;

                r = layer_status(layer, offset, length, &e);
                if (r < 0)
                        return layer == img ? r : pass_up(img, layer, r);
                length = e.length;

                if (e.kind != LAYER_UNALLOCATED) {
                        *ret = (ImageExtent) {
                                .length = length,
                                .depth = depth,
                                .present = true,
                                .zero = e.kind == LAYER_ZERO || e.zero,
                                .data = e.kind == LAYER_DATA,
                        };
                        return 0;
                }

                /* Nothing here: what is below decides, as far as the layer below reaches. Past
                 * the end of the image below, and below the bottom, it reads as zeroes, and
                 * (as qemu-img map says) this layer is where that was decided. */
                if (!layer->backing || offset >= layer->backing->size) {
                        *ret = (ImageExtent) {
                                .length = length,
                                .depth = depth,
                                .present = false,
                                .zero = true,
                        };
                        return 0;
                }
                length = MIN(length, layer->backing->size - offset);
                layer = layer->backing;
                depth++;
        }
}

/* ---- writing -------------------------------------------------------------------------------- */

static int check_write(Image *img, uint64_t offset, uint64_t length) {
        if (!(img->flags & IMAGE_OPEN_WRITE) || !img->ops->write)
                return image_fail(img, -EBADF, "Image '%s' is not open for writing", img->path);
        if (offset > img->size || length > img->size - offset)
                return image_fail(img, -EINVAL, "Write to '%s' beyond its end", img->path);
        return 0;
}

static int check_write_io(Image *img, uint64_t offset, uint64_t length) {
        int r = check_write(img, offset, length);
        return r < 0 ? r : inject_fault(img, IMAGE_IO_WRITE, offset, length);
}

int image_write(Image *img, const void *buf, uint64_t offset, size_t length) {
        int r = check_write_io(img, offset, length);
        if (r < 0)
                return r;
        return img->ops->write(img, buf, offset, length);
}

int image_write_zeroes(Image *img, uint64_t offset, uint64_t length) {
        int r = check_write_io(img, offset, length);
        return r < 0 ? r : img->ops->write_zeroes(img, offset, length);
}

int image_discard(Image *img, uint64_t offset, uint64_t length) {
        int r = check_write_io(img, offset, length);
        return r < 0 ? r : img->ops->discard(img, offset, length);
}

int image_flush(Image *img) {
        int r;

        if (!(img->flags & IMAGE_OPEN_WRITE))
                return 0;
        r = inject_fault(img, IMAGE_IO_FLUSH, 0, 0);
        return r < 0 ? r : img->ops->flush(img);
}

int image_repair_leaks(Image *img, uint64_t *ret_leaked) {
        if (ret_leaked)
                *ret_leaked = 0;
        if (!(img->flags & IMAGE_OPEN_WRITE))
                return image_fail(img, -EBADF, "Image '%s' is not open for writing", img->path);
        if (img->ops->format != IMAGE_FORMAT_QCOW2)
                return 0;
        return qcow2_repair_leaks(img, img->format_data, ret_leaked);
}

int image_set_backing(Image *img, const char *name, ImageFormat format) {
        int r = check_write(img, 0, 0);
        if (r < 0)
                return r;
        /* A backing file whose format is not recorded would have to be guessed by whoever opens
         * the image next: we do not, and we do not make images that need it. */
        if (name && !IN_SET(format, IMAGE_FORMAT_RAW, IMAGE_FORMAT_QCOW2))
                return image_fail(img, -EINVAL, "No format given for backing file '%s' of '%s'", name, img->path);
        if (!img->ops->set_backing)
                return image_fail(img, -EOPNOTSUPP, "Image '%s' is %s and cannot have a backing file", img->path,
                                  image_format_to_string(img->ops->format));
        return img->ops->set_backing(img, name, format);
}

/* ---- sources that others write ------------------------------------------------------------- */

static bool streq_ptr(const char *a, const char *b) {
        return a == b || (a && b && strcmp(a, b) == 0);
}

int image_refresh(Image *img) {
        _cleanup_(image_closep) Image *fresh = NULL;
        _cleanup_free_ char *error = NULL;
        void *data;
        int r;

        if (img->flags & IMAGE_OPEN_WRITE)
                return image_fail(img, -EINVAL, "Image '%s' is open for writing and needs no refresh", img->path);

        /* Open the layer again on the same descriptor, without taking locks again (the
         * description we hold has them), and take over what it read: a failure leaves 'img' as
         * it was. */
        r = open_layer(img->fd, false, img->path, img->ops->format,
                       img->flags | IMAGE_OPEN_NO_LOCK | IMAGE_OPEN_NO_BACKING | IMAGE_OPEN_BORROW_FD, &fresh, &error);
        if (r < 0)
                return image_fail(img, r, "%s", error ?: strerror(-r));
        if (!streq_ptr(fresh->backing_name, img->backing_name))
                return image_fail(img, -ESTALE, "The backing file of '%s' changed while it was in use", img->path);

        data = img->format_data;
        img->format_data = fresh->format_data;
        fresh->format_data = data;
        img->st = fresh->st;
        img->file_size = fresh->file_size;
        img->size = fresh->size;
        img->cluster_size = fresh->cluster_size;
        return 0;
}

static int inject_fault(Image *img, ImageIo io, uint64_t offset, uint64_t length) {
        static const char *const verbs[_IMAGE_IO_MAX] = {
                [IMAGE_IO_READ] = "read",
                [IMAGE_IO_WRITE] = "write",
                [IMAGE_IO_FLUSH] = "flush",
        };
        int r;

        if (!fault_hook)
                return 0;
        r = fault_hook(img->path, io, offset, length);
        if (r >= 0)
                return 0;
        if (io == IMAGE_IO_FLUSH)
                return image_fail(img, r, "Could not flush '%s': %m", img->path);
        return image_fail(img, r, "Could not %s '%s' at offset %" PRIu64 ": %m", verbs[io], img->path, offset);
}

/* ---- the kernel's help, for raw files ------------------------------------------------------ */

bool image_is_raw_file(const Image *img) {
        return img->ops == &raw_ops && S_ISREG(img->st.st_mode) && !(img->flags & IMAGE_OPEN_HEADERS_ONLY);
}

int image_copy_range(Image *src, Image *dst, uint64_t offset, uint64_t length, ImageCopyMode mode,
                     Image **ret_failed) {
        int r;

        *ret_failed = NULL;
        if (!image_is_raw_file(src) || !image_is_raw_file(dst) || length == 0)
                return -EOPNOTSUPP;
        if (offset > src->size || length > src->size - offset)
                return image_fail(src, -EINVAL, "Read of '%s' beyond its end", src->path);

        /* The test hooks see a read and a write, as for image_read() and image_write(): a fault
         * planted at an offset fires whichever way the range is copied. */
        r = inject_fault(src, IMAGE_IO_READ, offset, length);
        if (r < 0) {
                *ret_failed = src;
                return r;
        }
        r = check_write_io(dst, offset, length);
        if (r < 0) {
                *ret_failed = dst;
                return r;
        }
        return raw_copy_range(src, dst, offset, length, mode);
}

uint32_t image_file_block_size(const Image *img) {
        struct statfs sfs;

        if (fstatfs(img->fd, &sfs) < 0 || sfs.f_bsize <= 0 || sfs.f_bsize > (1 << 20))
                return 0;
        return (uint32_t) sfs.f_bsize;
}

void image_readahead(Image *img, uint64_t offset, uint64_t length) {
        if (!image_is_raw_file(img) || offset >= img->size)
                return;
        (void) readahead(img->fd, (off64_t) offset, (size_t) MIN(length, img->size - offset));
}

void image_write_behind(Image *img, uint64_t offset, uint64_t length) {
        if (!image_is_raw_file(img) || !(img->flags & IMAGE_OPEN_WRITE))
                return;
        (void) sync_file_range(img->fd, (off64_t) offset, (off64_t) length, SYNC_FILE_RANGE_WRITE);
}

/* ---- creating ------------------------------------------------------------------------------- */

int image_create_fd(int fd, const char *name, const ImageCreateParams *p, char **ret_error) {
        switch (p->format) {
        case IMAGE_FORMAT_RAW:
                if (p->backing_name)
                        return error_message(ret_error, -EINVAL, "A raw image cannot have a backing file");
                if (ftruncate(fd, (off_t) p->size) < 0)
                        return error_message(ret_error, negative_errno(), "Could not size '%s': %m", name);
                return 0;
        case IMAGE_FORMAT_QCOW2:
                if (p->backing_name && !IN_SET(p->backing_format, IMAGE_FORMAT_RAW, IMAGE_FORMAT_QCOW2))
                        return error_message(ret_error, -EINVAL, "No format given for backing file '%s' of '%s'",
                                             p->backing_name, name);
                return qcow2_create_fd(fd, name, p, ret_error);
        default:
                return error_message(ret_error, -EINVAL, "Cannot create images of format '%s'",
                                     strempty(image_format_to_string(p->format)));
        }
}

int image_create(const char *path, const ImageCreateParams *p, char **ret_error) {
        _cleanup_close_ int fd = -EBADF;
        int r;

        fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0644);
        if (fd < 0)
                return error_message(ret_error, negative_errno(), "Could not create '%s': %m", path);
        r = image_create_fd(fd, path, p, ret_error);
        if (r < 0) {
                (void) unlink(path);
                return r;
        }
        if (fsync(fd) < 0)
                return error_message(ret_error, negative_errno(), "Could not flush '%s': %m", path);
        return 0;
}
