/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error-message.h"
#include "job-record.h"
#include "log.h"
#include "macro.h"
#include "state-dir.h"

struct StateDir {
        char *path;                     /* for messages */
        int fd;                         /* the state directory */
        int jobs_fd;                    /* its "jobs/" */
        uid_t uid;                      /* whose it must be */
};

#define TMP_PREFIX ".#"
#define TMP_SUFFIX ".tmp"

/* Owned by the daemon's user, and nobody else may do anything in it. */
static int check_owner_mode(const struct stat *st, uid_t uid, const char *what, const char *path, char **ret_error) {
        if (st->st_uid != uid)
                return error_message(ret_error, -EPERM, "%s '%s' belongs to uid %u, not to blockjobd's (%u): refusing it",
                                     what, path, (unsigned) st->st_uid, (unsigned) uid);
        if (st->st_mode & 077)
                return error_message(ret_error, -EPERM,
                                     "%s '%s' has mode %04o: group and others must have no access (0700 for a "
                                     "directory, 0600 for a record); refusing it",
                                     what, path, (unsigned) (st->st_mode & 07777));
        return 0;
}

static int open_checked_dir(int at, const char *name, uid_t uid, const char *path, char **ret_error) {
        _cleanup_close_ int fd = -EBADF;
        struct stat st;
        int r;

        fd = openat(at, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
                r = negative_errno();
                if (r == -ELOOP || r == -ENOTDIR)
                        return error_message(ret_error, r, "State directory '%s' is not a directory (a symlink is not followed)",
                                             path);
                return error_message(ret_error, r, "Cannot open state directory '%s': %m", path);
        }
        if (fstat(fd, &st) < 0)
                return error_message(ret_error, negative_errno(), "Cannot stat state directory '%s': %m", path);
        r = check_owner_mode(&st, uid, "State directory", path, ret_error);
        if (r < 0)
                return r;
        return TAKE_FD(fd);
}

int state_dir_open(const char *path, StateDir **ret, char **ret_error) {
        _cleanup_free_ char *jobs_path = NULL;
        StateDir *d;
        int r;

        d = calloc(1, sizeof(*d));
        if (!d)
                return -ENOMEM;
        d->fd = d->jobs_fd = -EBADF;
        d->uid = geteuid();
        d->path = strdup(path);
        if (!d->path || asprintf(&jobs_path, "%s/%s", path, STATE_DIR_JOBS) < 0) {
                state_dir_free(d);
                return -ENOMEM;
        }

        r = d->fd = open_checked_dir(AT_FDCWD, path, d->uid, path, ret_error);
        if (r < 0)
                goto fail;
        /* Made here rather than by the unit, so that --state-dir needs only the directory. Its
         * mode is checked below whoever made it. */
        if (mkdirat(d->fd, STATE_DIR_JOBS, 0700) < 0 && errno != EEXIST) {
                r = error_message(ret_error, negative_errno(), "Cannot create '%s': %m", jobs_path);
                goto fail;
        }
        r = d->jobs_fd = open_checked_dir(d->fd, STATE_DIR_JOBS, d->uid, jobs_path, ret_error);
        if (r < 0)
                goto fail;

        *ret = d;
        return 0;

fail:
        state_dir_free(d);
        return r;
}

StateDir *state_dir_free(StateDir *d) {
        if (!d)
                return NULL;
        safe_close(d->fd);
        safe_close(d->jobs_fd);
        free(d->path);
        free(d);
        return NULL;
}

int state_dir_jobs_fd(const StateDir *d) {
        return d->jobs_fd;
}

static int check_name(const StateDir *d, const char *name, char **ret_error) {
        if (!job_record_file_name_is_valid(name))
                return error_message(ret_error, -EINVAL, "'%s' is not a job record's name", name);
        return 0;
}

static int sync_dir(const StateDir *d, const char *what, char **ret_error) {
        if (fsync(d->jobs_fd) < 0)
                return error_message(ret_error, negative_errno(), "Cannot sync '%s/%s' after %s: %m", d->path,
                                     STATE_DIR_JOBS, what);
        return 0;
}

static int write_all(int fd, const char *p, size_t n) {
        while (n > 0) {
                ssize_t k = write(fd, p, n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                p += k;
                n -= (size_t) k;
        }
        return 0;
}

int state_dir_write(StateDir *d, const char *name, const void *data, size_t size, char **ret_error) {
        _cleanup_free_ char *tmp = NULL;
        _cleanup_close_ int fd = -EBADF;
        int r;

        r = check_name(d, name, ret_error);
        if (r < 0)
                return r;
        if (asprintf(&tmp, TMP_PREFIX "%s" TMP_SUFFIX, name) < 0)
                return -ENOMEM;

        /* O_EXCL: a temporary file already there is another write of the same record under way (a
         * bug of the caller's), or one a crash left, which state_dir_list() removes at start;
         * either way not ours to truncate. */
        fd = openat(d->jobs_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0)
                return error_message(ret_error, negative_errno(), "Cannot create '%s/%s/%s': %m", d->path,
                                     STATE_DIR_JOBS, tmp);

        r = write_all(fd, data, size);
        if (r < 0) {
                error_message(ret_error, r, "Cannot write job record '%s': %m", name);
                goto fail;
        }
        if (fsync(fd) < 0) {
                r = error_message(ret_error, negative_errno(), "Cannot sync job record '%s': %m", name);
                goto fail;
        }
        r = close(TAKE_FD(fd));
        if (r < 0 && errno != EINTR) {
                r = error_message(ret_error, negative_errno(), "Cannot write job record '%s': %m", name);
                goto fail;
        }
        if (renameat(d->jobs_fd, tmp, d->jobs_fd, name) < 0) {
                r = error_message(ret_error, negative_errno(), "Cannot replace job record '%s': %m", name);
                goto fail;
        }
        /* The rename is durable only once the directory is. */
        return sync_dir(d, "writing a record", ret_error);

fail:
        (void) unlinkat(d->jobs_fd, tmp, 0);
        return r;
}

int state_dir_remove(StateDir *d, const char *name, char **ret_error) {
        int r;

        r = check_name(d, name, ret_error);
        if (r < 0)
                return r;
        if (unlinkat(d->jobs_fd, name, 0) < 0)
                return error_message(ret_error, negative_errno(), "Cannot remove job record '%s': %m", name);
        return sync_dir(d, "removing a record", ret_error);
}

int state_dir_set_aside(StateDir *d, const char *name, char **ret_error) {
        _cleanup_free_ char *aside = NULL, *damaged_path = NULL;
        _cleanup_close_ int damaged_fd = -EBADF;
        int r;

        r = check_name(d, name, ret_error);
        if (r < 0)
                return r;
        if (asprintf(&aside, "%s" STATE_DIR_DAMAGED_SUFFIX, name) < 0 ||
            asprintf(&damaged_path, "%s/%s", d->path, STATE_DIR_DAMAGED) < 0)
                return -ENOMEM;
        /* Out of "jobs/": that directory holds records only, since the path unit starts the daemon
         * whenever it is not empty (a file the daemon ignores there would start it again and
         * again). Made on first use, checked like the others whoever made it. */
        if (mkdirat(d->fd, STATE_DIR_DAMAGED, 0700) < 0 && errno != EEXIST)
                return error_message(ret_error, negative_errno(), "Cannot create '%s': %m", damaged_path);
        damaged_fd = open_checked_dir(d->fd, STATE_DIR_DAMAGED, d->uid, damaged_path, ret_error);
        if (damaged_fd < 0)
                return damaged_fd;
        if (renameat(d->jobs_fd, name, damaged_fd, aside) < 0)
                return error_message(ret_error, negative_errno(), "Cannot move job record '%s' to '%s/%s': %m", name,
                                     damaged_path, aside);
        if (fsync(damaged_fd) < 0)
                return error_message(ret_error, negative_errno(), "Cannot sync '%s': %m", damaged_path);
        return sync_dir(d, "setting a record aside", ret_error);
}

void state_dir_names_free(char **names) {
        if (!names)
                return;
        for (char **p = names; *p; p++)
                free(*p);
        free(names);
}

static bool is_tmp_name(const char *name) {
        size_t n = strlen(name), p = strlen(TMP_PREFIX), s = strlen(TMP_SUFFIX);

        return n > p + s && strncmp(name, TMP_PREFIX, p) == 0 && strcmp(name + n - s, TMP_SUFFIX) == 0;
}

static int compare_names(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

int state_dir_list(StateDir *d, char ***ret_names, size_t *ret_n, char **ret_error) {
        char **names = NULL;
        size_t n = 0;
        bool removed = false;
        DIR *dir;
        int fd, r = 0;

        /* A descriptor of its own: readdir() keeps a position in it. */
        fd = openat(d->jobs_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return error_message(ret_error, negative_errno(), "Cannot open '%s/%s': %m", d->path, STATE_DIR_JOBS);
        dir = fdopendir(fd);
        if (!dir) {
                r = negative_errno();
                safe_close(fd);
                return error_message(ret_error, r, "Cannot open '%s/%s': %m", d->path, STATE_DIR_JOBS);
        }

        for (;;) {
                struct dirent *de;
                char **a;

                errno = 0;
                de = readdir(dir);
                if (!de) {
                        if (errno != 0)
                                r = error_message(ret_error, negative_errno(), "Cannot read '%s/%s': %m", d->path,
                                                  STATE_DIR_JOBS);
                        break;
                }
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;

                if (is_tmp_name(de->d_name)) {
                        /* An interrupted write: the record it was replacing (if any) is whole. */
                        if (unlinkat(d->jobs_fd, de->d_name, 0) < 0 && errno != ENOENT)
                                log_warning_errno(negative_errno(), "Cannot remove '%s/%s/%s', left by an interrupted write: %m",
                                                  d->path, STATE_DIR_JOBS, de->d_name);
                        else {
                                log_notice("Removed '%s/%s/%s', left by an interrupted write.", d->path, STATE_DIR_JOBS,
                                           de->d_name);
                                removed = true;
                        }
                        continue;
                }
                if (!job_record_file_name_is_valid(de->d_name)) {
                        log_warning("Ignoring '%s/%s/%s': not a job record's name.", d->path, STATE_DIR_JOBS, de->d_name);
                        continue;
                }

                a = reallocarray(names, n + 2, sizeof(char *));
                if (!a) {
                        r = -ENOMEM;
                        break;
                }
                names = a;
                names[n] = strdup(de->d_name);
                if (!names[n]) {
                        r = -ENOMEM;
                        break;
                }
                names[++n] = NULL;
        }
        closedir(dir);

        if (r >= 0 && removed)
                r = sync_dir(d, "removing temporary files", ret_error);
        if (r < 0) {
                if (names)
                        names[n] = NULL;
                state_dir_names_free(names);
                return r;
        }
        if (!names) {
                names = calloc(1, sizeof(char *));
                if (!names)
                        return -ENOMEM;
        }
        qsort(names, n, sizeof(char *), compare_names);
        *ret_names = names;
        if (ret_n)
                *ret_n = n;
        return 0;
}

int state_dir_read(StateDir *d, const char *name, char **ret, size_t *ret_size, char **ret_error) {
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ char *buf = NULL;
        size_t size = 0;
        struct stat st;
        int r;

        r = check_name(d, name, ret_error);
        if (r < 0)
                return r;

        /* O_NONBLOCK: a FIFO under a record's name must not hang the start. */
        fd = openat(d->jobs_fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
        if (fd < 0) {
                r = negative_errno();
                if (r == -ELOOP)
                        return error_message(ret_error, r, "Job record '%s' is a symlink: refusing it", name);
                return error_message(ret_error, r, "Cannot open job record '%s': %m", name);
        }
        if (fstat(fd, &st) < 0)
                return error_message(ret_error, negative_errno(), "Cannot stat job record '%s': %m", name);
        if (!S_ISREG(st.st_mode))
                return error_message(ret_error, -EBADMSG, "Job record '%s' is not a regular file", name);
        r = check_owner_mode(&st, d->uid, "Job record", name, ret_error);
        if (r < 0)
                return r;
        if ((uint64_t) st.st_size > JOB_RECORD_SIZE_MAX)
                return error_message(ret_error, -EBADMSG, "Job record '%s' is larger than %" PRIu64 " bytes: damaged",
                                     name, JOB_RECORD_SIZE_MAX);

        /* Read up to one byte more than allowed, whatever fstat() said: the size is what is read. */
        buf = malloc(JOB_RECORD_SIZE_MAX + 2);
        if (!buf)
                return -ENOMEM;
        while (size <= JOB_RECORD_SIZE_MAX) {
                ssize_t k = read(fd, buf + size, JOB_RECORD_SIZE_MAX + 1 - size);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return error_message(ret_error, negative_errno(), "Cannot read job record '%s': %m", name);
                }
                if (k == 0)
                        break;
                size += (size_t) k;
        }
        if (size > JOB_RECORD_SIZE_MAX)
                return error_message(ret_error, -EBADMSG, "Job record '%s' is larger than %" PRIu64 " bytes: damaged",
                                     name, JOB_RECORD_SIZE_MAX);
        buf[size] = '\0';

        /* Not the worst-case buffer for every record kept in memory. */
        {
                char *shrunk = realloc(buf, size + 1);
                if (shrunk)
                        buf = shrunk;
        }
        *ret = TAKE_PTR(buf);
        if (ret_size)
                *ret_size = size;
        return 0;
}
