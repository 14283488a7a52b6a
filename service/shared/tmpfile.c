/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>

#include "fd-util.h"
#include "log.h"
#include "macro.h"
#include "shared-fd.h"
#include "tmpfile.h"

#define TEMP_PREFIX ".#"
#define TEMP_RANDOM_CHARS 16

static int random_temp_name(const char *name, char **ret) {
        uint8_t bytes[TEMP_RANDOM_CHARS / 2];
        char suffix[TEMP_RANDOM_CHARS + 1];
        size_t keep;
        char *s;

        if (getrandom(bytes, sizeof(bytes), 0) != (ssize_t) sizeof(bytes))
                return -EIO;
        for (size_t i = 0; i < sizeof(bytes); i++)
                (void) snprintf(suffix + 2 * i, 3, "%02x", bytes[i]);

        /* Shorten a long name so that prefix + name + suffix still fits in NAME_MAX. */
        keep = MIN(strlen(name), (size_t) NAME_MAX - strlen(TEMP_PREFIX) - TEMP_RANDOM_CHARS);
        if (asprintf(&s, TEMP_PREFIX "%.*s%s", (int) keep, name, suffix) < 0)
                return -ENOMEM;
        *ret = s;
        return 0;
}

static int split_path(const char *path, char **ret_dir, char **ret_name) {
        _cleanup_free_ char *a = NULL, *b = NULL;
        char *dir, *name;

        if (!path || !*path)
                return -EINVAL;

        a = strdup(path);
        b = strdup(path);
        if (!a || !b)
                return -ENOMEM;

        /* A path ending in "/" names a directory, never a file to create. */
        if (path[strlen(path) - 1] == '/')
                return -EISDIR;

        name = basename(a);
        if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0 || strcmp(name, "/") == 0)
                return -EISDIR;
        dir = dirname(b);

        *ret_name = strdup(name);
        *ret_dir = strdup(dir);
        if (!*ret_name || !*ret_dir) {
                free(*ret_name);
                free(*ret_dir);
                return -ENOMEM;
        }
        return 0;
}

int tmpfile_open(TmpFile *t, const char *path, mode_t mode, bool allow_unnamed) {
        _cleanup_free_ char *dir = NULL, *name = NULL;
        _cleanup_close_ int dir_fd = -EBADF, fd = -EBADF;
        char *temp_name = NULL;
        int r;

        r = split_path(path, &dir, &name);
        if (r < 0)
                return r;

        dir_fd = open(dir, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
        if (dir_fd < 0)
                return negative_errno();

        if (allow_unnamed) {
                fd = openat(dir_fd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, mode);
                /* Refusals that mean "this file system cannot": use a named file instead. Any
                 * other error (EACCES, EROFS, ENOSPC) would hit the named file just the same. */
                if (fd < 0 && !IN_SET(errno, EOPNOTSUPP, EISDIR, EINVAL))
                        return negative_errno();
        }

        for (unsigned attempt = 0; fd < 0; attempt++) {
                if (attempt >= 100)
                        return -EEXIST;
                free(temp_name);
                r = random_temp_name(name, &temp_name);
                if (r < 0)
                        return r;
                fd = openat(dir_fd, temp_name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
                if (fd < 0 && errno != EEXIST) {
                        r = negative_errno();
                        free(temp_name);
                        return r;
                }
        }

        *t = (TmpFile) {
                .fd = TAKE_FD(fd),
                .dir_fd = TAKE_FD(dir_fd),
                .name = TAKE_PTR(name),
                .temp_name = temp_name,
        };
        return 0;
}

int tmpfile_reopen(TmpFile *t, const char *path, const char *temp_name) {
        _cleanup_free_ char *dir = NULL, *name = NULL, *temp = NULL;
        _cleanup_close_ int dir_fd = -EBADF, fd = -EBADF;
        struct stat st;
        int r;

        if (!temp_name || !*temp_name || strchr(temp_name, '/') ||
            strcmp(temp_name, ".") == 0 || strcmp(temp_name, "..") == 0)
                return -EINVAL;
        r = split_path(path, &dir, &name);
        if (r < 0)
                return r;
        temp = strdup(temp_name);
        if (!temp)
                return -ENOMEM;

        dir_fd = open(dir, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
        if (dir_fd < 0)
                return negative_errno();
        /* O_NONBLOCK: a FIFO planted under the name must not hang the open. */
        fd = openat(dir_fd, temp, O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK);
        if (fd < 0)
                return errno == ELOOP ? -EBADFD : negative_errno();
        if (fstat(fd, &st) < 0)
                return negative_errno();
        if (!S_ISREG(st.st_mode))
                return -EBADFD;
        if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0)
                return negative_errno();

        *t = (TmpFile) {
                .fd = TAKE_FD(fd),
                .dir_fd = TAKE_FD(dir_fd),
                .name = TAKE_PTR(name),
                .temp_name = TAKE_PTR(temp),
        };
        return 0;
}

static int link_unnamed(int fd, int dir_fd, const char *name) {
        char proc[PROC_FD_PATH_MAX];

        if (linkat(fd, "", dir_fd, name, AT_EMPTY_PATH) >= 0)
                return 0;
        if (errno == EEXIST)
                return -EEXIST;

        /* AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; /proc's magic link needs only /proc. */
        if (linkat(AT_FDCWD, proc_fd_path(proc, fd), dir_fd, name, AT_SYMLINK_FOLLOW) >= 0)
                return 0;
        return negative_errno();
}

int tmpfile_may_replace_file(const TmpFile *t, const struct stat *st, uid_t uid) {
        struct stat dir;

        if (fstat(t->dir_fd, &dir) < 0)
                return negative_errno();
        return uid == 0 || !(dir.st_mode & S_ISVTX) || st->st_uid == uid || dir.st_uid == uid;
}

int tmpfile_may_replace(const TmpFile *t, uid_t uid) {
        struct stat st;

        if (fstatat(t->dir_fd, t->name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return errno == ENOENT ? 1 : negative_errno();
        return tmpfile_may_replace_file(t, &st, uid);
}

static bool same_inode(const struct stat *a, const struct stat *b) {
        return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

/* Does the hidden name still hold this very file (-ESTALE if not)? */
static int temp_name_is_ours(const TmpFile *t) {
        struct stat ours, there;

        if (fstat(t->fd, &ours) < 0)
                return negative_errno();
        if (fstatat(t->dir_fd, t->temp_name, &there, AT_SYMLINK_NOFOLLOW) < 0)
                return negative_errno();
        return same_inode(&ours, &there) ? 0 : -ESTALE;
}

/* Gives an unnamed file a hidden name of its own. */
static int tmpfile_name(TmpFile *t) {
        int r;

        if (t->temp_name)
                return 0;
        for (unsigned attempt = 0;; attempt++) {
                r = random_temp_name(t->name, &t->temp_name);
                if (r < 0)
                        return r;
                r = link_unnamed(t->fd, t->dir_fd, t->temp_name);
                if (r != -EEXIST || attempt >= 100)
                        break;
                free(TAKE_PTR(t->temp_name));
        }
        if (r < 0)
                free(TAKE_PTR(t->temp_name));
        return r;
}

/* Swaps the file in at the name, where exactly the file 'replace_fd' is now: renameat2()'s
 * exchange is atomic, so what comes out can be checked, and swapped back if it is not the file
 * that was checked (and locked) before. */
static int exchange_in(TmpFile *t, int replace_fd) {
        struct stat expected, out;

        if (fstat(replace_fd, &expected) < 0)
                return negative_errno();
        if (renameat2(t->dir_fd, t->temp_name, t->dir_fd, t->name, RENAME_EXCHANGE) < 0) {
                if (errno == ENOENT)
                        /* Gone meanwhile: the name is free, take it if it stays so. */
                        return renameat2(t->dir_fd, t->temp_name, t->dir_fd, t->name, RENAME_NOREPLACE) < 0
                                       ? negative_errno() : 0;
                if (errno != EINVAL)
                        return negative_errno();
                /* A file system without exchange (NFS): check, then replace; the window between
                 * the two is as small as it gets there. */
                if (fstatat(t->dir_fd, t->name, &out, AT_SYMLINK_NOFOLLOW) < 0 || !same_inode(&out, &expected))
                        return -ESTALE;
                return renameat(t->dir_fd, t->temp_name, t->dir_fd, t->name) < 0 ? negative_errno() : 0;
        }
        if (fstatat(t->dir_fd, t->temp_name, &out, AT_SYMLINK_NOFOLLOW) >= 0 && same_inode(&out, &expected)) {
                if (unlinkat(t->dir_fd, t->temp_name, 0) < 0 && errno != ENOENT)
                        log_warning_errno(errno, "Failed to remove the replaced '%s': %m", t->name);
                return 0;
        }
        /* Someone else's file was put there meanwhile: it goes back, ours keeps its hidden name. */
        if (renameat2(t->dir_fd, t->temp_name, t->dir_fd, t->name, RENAME_EXCHANGE) < 0)
                log_error_errno(errno, "Failed to put '%s' back after a swap: %m", t->name);
        return -ESTALE;
}

int tmpfile_publish(TmpFile *t, int replace_fd) {
        int r;

        assert(t->fd >= 0 && !t->published);

        if (replace_fd < 0 && !t->temp_name) {
                /* linkat() never replaces: exactly the semantics wanted. */
                r = link_unnamed(t->fd, t->dir_fd, t->name);
        } else if (replace_fd < 0) {
                /* The hidden name is in a directory others may write: what is renamed must be
                 * this file, not one put there meanwhile. */
                r = temp_name_is_ours(t);
                if (r >= 0)
                        r = renameat2(t->dir_fd, t->temp_name, t->dir_fd, t->name, RENAME_NOREPLACE) < 0 ? negative_errno() : 0;
        } else {
                r = tmpfile_name(t);
                if (r >= 0)
                        r = exchange_in(t, replace_fd);
        }
        if (r < 0)
                return r;
        free(TAKE_PTR(t->temp_name));

        t->published = true;
        if (fsync(t->dir_fd) < 0)
                return negative_errno();
        return 0;
}

int tmpfile_set_hidden_name(TmpFile *t, const char *name) {
        _cleanup_free_ char *copy = NULL;
        int r;

        assert(t->fd >= 0 && !t->published);

        copy = strdup(name);
        if (!copy)
                return -ENOMEM;
        if (!t->temp_name)
                r = link_unnamed(t->fd, t->dir_fd, name);
        else if (strcmp(t->temp_name, name) == 0)
                r = 0;
        else
                r = renameat2(t->dir_fd, t->temp_name, t->dir_fd, name, RENAME_NOREPLACE) < 0 ? negative_errno() : 0;
        if (r < 0)
                return r;
        free(t->temp_name);
        t->temp_name = TAKE_PTR(copy);
        return fsync(t->dir_fd) < 0 ? negative_errno() : 0;
}

const char *tmpfile_keep(TmpFile *t) {
        if (tmpfile_name(t) < 0)
                return NULL;
        /* Whatever happens next, this file stays. */
        t->published = true;
        (void) fsync(t->dir_fd);
        return t->temp_name;
}

/* What the directory's description is, as far as sharing goes: how it was opened. */
#define SHARED_DIR_KIND UINT64_C(0x4449520000000000)

int tmpfile_share_dir(TmpFile *t, int dir_fd) {
        int fl, r;

        assert(t->dir_fd < 0);

        fl = fcntl(dir_fd, F_GETFL);
        if (fl < 0)
                return negative_errno();
        r = shared_fd_acquire(dir_fd, SHARED_DIR_KIND | (uint64_t) (fl & (O_ACCMODE | O_PATH)), &t->shared_dir);
        if (r >= 0) {
                t->dir_fd = shared_fd_fd(t->shared_dir);
                return 0;
        }
        if (r != -EOPNOTSUPP)
                return r;
        t->dir_fd = fcntl(dir_fd, F_DUPFD_CLOEXEC, 3);
        return t->dir_fd < 0 ? negative_errno() : 0;
}

void tmpfile_close(TmpFile *t) {
        t->fd = safe_close(t->fd);
        if (t->shared_dir) {
                t->shared_dir = shared_fd_unref(t->shared_dir);
                t->dir_fd = -EBADF;
        } else
                t->dir_fd = safe_close(t->dir_fd);
        free(TAKE_PTR(t->name));
        free(TAKE_PTR(t->temp_name));
}

void tmpfile_discard(TmpFile *t) {
        if (!t->published && t->temp_name && t->dir_fd >= 0)
                if (unlinkat(t->dir_fd, t->temp_name, 0) < 0 && errno != ENOENT)
                        log_warning_errno(errno, "Failed to remove temporary file '%s': %m", t->temp_name);
        tmpfile_close(t);
}
