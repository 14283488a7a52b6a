/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <sys/stat.h>

#include "error-message.h"
#include "fd-util.h"
#include "fs-type.h"
#include "open-files.h"
#include "tmpfile.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(Image *, image_close);

typedef struct ChainWalk {
        bool write;
        BeforeFollowing before_following;
        JobFiles *files;
} ChainWalk;

/* A layer's descriptor for the job, with the rights this process has now: the rights it was
 * opened with, before any are dropped for following its names. */
static int collect_layer(const Image *layer, bool top, ChainWalk *w, char **ret_error) {
        int fd = -EBADF, r;

        if (w->write) {
                /* Reopening the same file checks the right to write it. */
                fd = fd_reopen(image_fd(layer), O_RDWR);
                if (fd < 0 && top)
                        return error_message(ret_error, fd, "Could not open '%s' for writing: %m", image_path(layer));
        }
        if (fd < 0)
                fd = fcntl(image_fd(layer), F_DUPFD_CLOEXEC, 3);
        if (fd < 0)
                return error_message(ret_error, negative_errno(), "Could not duplicate a descriptor: %m");
        r = job_files_add_layer(w->files, fd);
        if (r < 0)
                return error_message(ret_error, r, "Backing chain of '%s' is too deep", image_path(layer));
        return 0;
}

static int before_following(const Image *layer, void *userdata, char **ret_error) {
        ChainWalk *w = userdata;
        int r;

        r = collect_layer(layer, w->files->n_chain == 0, w, ret_error);
        if (r < 0)
                return r;
        return w->before_following ? w->before_following(image_stat(layer), ret_error) : 0;
}

int open_chain_files(const char *path, ImageFormat format, bool write, BeforeFollowing before, JobFiles *f,
                     char **ret_error) {
        _cleanup_(image_closep) Image *img = NULL;
        ChainWalk w = { .write = write, .before_following = before, .files = f };
        ImageOpenOptions o = { .before_following = before_following, .userdata = &w };
        size_t n = 0;
        int r;

        /* Unlocked, headers only: this only finds the files; whoever uses them takes the locks
         * and reads the tables. */
        r = image_open_full(path, format, IMAGE_OPEN_NO_LOCK | IMAGE_OPEN_HEADERS_ONLY, &o, &img, ret_error);
        if (r < 0)
                return r;

        /* Each layer that names another was taken as the walk went on; the bottom one is left. */
        for (Image *layer = img; layer; layer = image_backing(layer), n++)
                if (n >= f->n_chain) {
                        r = collect_layer(layer, n == 0, &w, ret_error);
                        if (r < 0)
                                return r;
                }
        return 0;
}

/* A file on FUSE is not used: its server could make every call on it, close() included, wait for
 * ever. Looked at without asking the file system anything. */
static int refuse_fuse(int fd, const char *what, const char *path, char **ret_error) {
        _cleanup_free_ char *fuse = fd_fuse_type(fd);

        if (!fuse)
                return 0;
        return error_message(ret_error, -EMEDIUMTYPE,
                             "%s '%s' is on a FUSE file system (%s), which blockjobd does not use: its server could make the daemon wait for ever",
                             what, path, fuse);
}

/* The directory a new target goes in, looked at before anything is made there. */
static int check_target_directory(const char *path, char **ret_error) {
        _cleanup_free_ char *copy = strdup(path);
        _cleanup_close_ int fd = -EBADF;

        if (!copy)
                return error_message(ret_error, -ENOMEM, "Out of memory");
        fd = open(dirname(copy), O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return 0;       /* tmpfile_open() says what is wrong */
        return refuse_fuse(fd, "Target", path, ret_error);
}

/* What the target's name holds now, which publishing is to replace: found here, with the
 * caller's rights, so that the daemon never looks the caller's name up itself. A regular file is
 * opened for reading (the daemon takes QEMU's locks on it: an image in use is never replaced),
 * and must be one the caller could read; anything else (a symlink, replaced and never followed)
 * only as a path. Nothing there: -EBADF. */
static int open_replaced(const TmpFile *t, const char *path, int *ret, char **ret_error) {
        _cleanup_close_ int fd = -EBADF;
        struct stat st;

        fd = openat(t->dir_fd, t->name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
                if (errno == ENOENT)
                        return 0;
                return error_message(ret_error, negative_errno(), "Could not check target '%s': %m", path);
        }
        if (fstat(fd, &st) < 0)
                return error_message(ret_error, negative_errno(), "Could not check target '%s': %m", path);
        if (S_ISREG(st.st_mode)) {
                int readable = fd_reopen(fd, O_RDONLY | O_NONBLOCK);
                if (readable < 0)
                        return error_message(ret_error, readable, "Target '%s' is not replaced: could not open it: %m",
                                             path);
                safe_close(fd);
                fd = readable;
        }
        *ret = TAKE_FD(fd);
        return 0;
}

/* A new file goes at once; a resumed job's file stays for the daemon, which removes it only as
 * the file it recorded (the job fails then, and says why). */
static void drop_target(TmpFile *t, const char *hidden) {
        if (hidden)
                tmpfile_close(t);
        else
                tmpfile_discard(t);
}

static int open_target(const char *path, bool overwrite, bool named_temp_file, const char *hidden, JobFiles *f,
                       char **ret_error) {
        TmpFile t = TMPFILE_NULL;
        struct stat st;
        int r;

        /* What the name leads to decides the kind of target (a device is often named by a
         * symlink, /dev/disk/by-id/...), but a symlink that another user could have planted is
         * never followed: it is a name to replace (with overwrite), as any other. */
        bool follow = !(lstat(path, &st) >= 0 && S_ISLNK(st.st_mode) && st.st_uid != 0 && st.st_uid != geteuid());
        if (follow && stat(path, &st) >= 0) {
                if (S_ISDIR(st.st_mode))
                        return error_message(ret_error, -EISDIR, "Target '%s' is a directory", path);
                if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
                        return error_message(ret_error, -EINVAL,
                                             "Target '%s' is neither a regular file nor a block device", path);
                if (!overwrite)
                        return error_message(ret_error, -EEXIST, "Target '%s' already exists", path);

                if (S_ISBLK(st.st_mode)) {
                        /* Not O_EXCL: the daemon claims the device when it takes it over. */
                        int fd = open(path, O_RDWR | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
                        if (fd < 0)
                                return error_message(ret_error, negative_errno(),
                                                     "Could not open target device '%s': %m", path);
                        if (fstat(fd, &st) < 0 || !S_ISBLK(st.st_mode)) {
                                safe_close(fd);
                                return error_message(ret_error, -EINVAL, "Target '%s' changed while it was opened",
                                                     path);
                        }
                        job_files_set_target_in_place(f, fd);
                        return 0;
                }
        } else if (follow && errno != ENOENT)
                return error_message(ret_error, negative_errno(), "Could not check target '%s': %m", path);

        r = check_target_directory(path, ret_error);
        if (r < 0)
                return r;
        if (hidden) {
                r = tmpfile_reopen(&t, path, hidden);
                if (r == -ENOENT)
                        return error_message(ret_error, r, "The unfinished target '%s' of the job is gone (%s)", path,
                                             hidden);
                if (r == -EBADFD)
                        return error_message(ret_error, r,
                                             "The unfinished target '%s' of the job (%s) is no longer a regular file",
                                             path, hidden);
                if (r < 0)
                        return error_message(ret_error, r, "Could not open the unfinished target '%s' of the job (%s): %m",
                                             path, hidden);
        } else {
                r = tmpfile_open(&t, path, 0600, !named_temp_file);
                if (r == -EISDIR)
                        return error_message(ret_error, r, "Target '%s' names a directory", path);
                if (r < 0)
                        return error_message(ret_error, r, "Could not create target '%s': %m", path);
        }

        /* From here on, the directory we opened, and the entry in it, whatever it is (a symlink
         * too): that is what will be replaced. */
        uid_t uid = geteuid();
        if (fstatat(t.dir_fd, t.name, &st, AT_SYMLINK_NOFOLLOW) >= 0) {
                const char *why = NULL;

                if (!overwrite)
                        r = -EEXIST, why = "already exists";
                else if (S_ISDIR(st.st_mode))
                        r = -EISDIR, why = "is a directory";
                else if (tmpfile_may_replace(&t, uid) <= 0)
                        r = -EPERM, why = "belongs to another user in a sticky directory";
                if (why) {
                        drop_target(&t, hidden);
                        return error_message(ret_error, r, "Target '%s' %s", path, why);
                }
        }

        int replaced = -EBADF;
        r = open_replaced(&t, path, &replaced, ret_error);
        if (r < 0) {
                drop_target(&t, hidden);
                return r;
        }
        r = job_files_set_new_target(f, t.fd, t.dir_fd, t.name, t.temp_name, uid, replaced);
        /* The descriptors are f's now; a named file is removed by job_files_done() unless a job
         * takes it over. */
        t.fd = t.dir_fd = -EBADF;
        tmpfile_close(&t);
        if (r < 0)
                return error_message(ret_error, r, "Out of memory");
        return 0;
}

int open_target_files(const char *path, bool overwrite, bool named_temp_file, JobFiles *f, char **ret_error) {
        return open_target(path, overwrite, named_temp_file, NULL, f, ret_error);
}

int open_resumed_target_files(const char *path, bool overwrite, const char *hidden, JobFiles *f, char **ret_error) {
        return open_target(path, overwrite, true, hidden, f, ret_error);
}
