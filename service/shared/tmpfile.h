/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Build a file where nobody sees it, publish it under its final name in one step.
 *
 * The file is created with O_TMPFILE where the file system allows it: it has no name at all until
 * published, so a crash or kill -9 at any point leaves nothing behind. Elsewhere it falls back to
 * a hidden ".#<name><random>" file next to the target, which abort removes. Publishing is atomic:
 * linkat() (which refuses to replace) or rename() (which replaces). */

#include <stdbool.h>
#include <sys/stat.h>
#include <sys/types.h>

typedef struct SharedFd SharedFd;

typedef struct TmpFile {
        int fd;
        int dir_fd;
        SharedFd *shared_dir;   /* dir_fd is this entry's, shared with other files (tmpfile_share_dir()) */
        char *name;             /* the final name, within dir_fd */
        char *temp_name;        /* the hidden name while unpublished; NULL for an O_TMPFILE */
        bool published;
} TmpFile;

#define TMPFILE_NULL { .fd = -EBADF, .dir_fd = -EBADF }

/* Opens the directory of 'path' and creates the unpublished file in it with 'mode'. With
 * allow_unnamed false the named fallback is used even where O_TMPFILE works (for tests). */
int tmpfile_open(TmpFile *t, const char *path, mode_t mode, bool allow_unnamed);

/* Opens again, for reading and writing, the unpublished file left under the hidden name
 * 'temp_name' (tmpfile_set_hidden_name()) in the directory of 'path', whose final name is the last
 * part of 'path': for a job that continues after a restart. The name is never followed if it is a
 * symlink; anything but a regular file is -EBADFD. */
int tmpfile_reopen(TmpFile *t, const char *path, const char *temp_name);

/* Uses 'dir_fd' (a directory the caller opened, for instance with the rights of whoever asked
 * for the file) as the directory, shared with every other TmpFile in the same directory reached
 * through the same mount and opened the same way (shared-fd.h): one descriptor for a thousand
 * files published there. Publishing needs nothing of the description but the directory it is
 * (its inode: renamed meanwhile, it is still where the files go, as with a descriptor of one's
 * own); linkat() and rename need the same mount, which the key includes. Where it cannot be
 * shared, a duplicate of its own. Returns 0 or a negative errno. */
int tmpfile_share_dir(TmpFile *t, int dir_fd);

/* May 'uid' replace what is at the final name (anything there, a symlink included, not what it
 * points to)? As the kernel would decide for that user's rename(): in a sticky directory (/tmp)
 * only a file of its own, or in a directory of its own. 1 yes (nothing there, too), 0 no, or a
 * negative errno. */
int tmpfile_may_replace(const TmpFile *t, uid_t uid);

/* The same for a file about to be replaced, as stat'ed ('st'), by 'uid'. */
int tmpfile_may_replace_file(const TmpFile *t, const struct stat *st, uid_t uid);

/* Publishes the file under its final name. With replace_fd < 0 whatever is at the name is never
 * touched (-EEXIST). Otherwise the name is to hold the file behind replace_fd, which is replaced
 * (atomically, with RENAME_EXCHANGE); if the name holds anything else by then, nothing is replaced
 * (-ESTALE), and if it holds nothing, the name is taken as long as it stays free. Makes the new
 * directory entry durable with fsync() on the directory. */
int tmpfile_publish(TmpFile *t, int replace_fd);

/* Gives the unpublished file the hidden name 'name' (in its directory), never replacing anything
 * there (-EEXIST): an unnamed file is linked, a named one renamed; durable (fsync() of the
 * directory). From then on publishing renames it from there (only while the name still holds
 * this file: -ESTALE otherwise), and discarding removes it. For a daemon that keeps a record of
 * the file under that name, to find it after a crash. */
int tmpfile_set_hidden_name(TmpFile *t, const char *name);

/* Publishing failed, but the data must not be lost: make sure the file has a (hidden) name and
 * leave it in place. Returns that name (owned by t), or NULL if even that failed. */
const char *tmpfile_keep(TmpFile *t);

/* Removes the unpublished file (if it has a name) and closes everything. Safe to call twice. */
void tmpfile_discard(TmpFile *t);

/* Closes the descriptors; the file stays where it is (published or not). */
void tmpfile_close(TmpFile *t);
