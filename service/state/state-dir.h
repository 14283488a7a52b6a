/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The daemon's state directory (issue 15): $STATE_DIRECTORY (StateDirectory=blockjobd, mode
 * 0700), and in it "jobs/", one file per job record (job-record.h), "<owner>-<id>.job". The unit's
 * path unit watches "jobs/" (DirectoryNotEmpty=) to start the daemon while jobs are recorded.
 *
 * Both directories must belong to the daemon's effective user (root in production; the tests'
 * user with --state-dir) and be closed to group and others: what a record says is trusted to the
 * point of naming files the daemon opens for their owner, so nobody else may write or read them.
 * A directory that is not so is refused, never repaired: it says that something is wrong.
 *
 * A record is replaced atomically: written whole to ".#<name>.tmp" (O_CREAT|O_EXCL, 0600), synced,
 * renamed over "<name>", and the directory synced; so after a crash the directory holds the old
 * record or the new one, never a mix, and at most a stray ".#*.tmp" that state_dir_list() removes.
 *
 * Everything is done relative to the directory's descriptor, taken once at open: no path is looked
 * up again. Functions may run on worker threads, several at once, except that the writes and the
 * removal of one record must not overlap (the caller orders them, one job at a time); listing is
 * for the start, before any write. Errors are a negative errno and, through ret_error, a message. */

#include <stddef.h>
#include <sys/types.h>

typedef struct StateDir StateDir;

#define STATE_DIR_JOBS "jobs"
#define STATE_DIR_DAMAGED "damaged"
#define STATE_DIR_DAMAGED_SUFFIX ".damaged"

/* Opens 'path' (which must exist) and its "jobs/" (made if missing), checked as above. */
int state_dir_open(const char *path, StateDir **ret, char **ret_error);
StateDir *state_dir_free(StateDir *d);
/* The descriptor of "jobs/" (for tests). */
int state_dir_jobs_fd(const StateDir *d);

/* Replaces (or creates) record 'name' (job_record_file_name_is_valid()) with 'size' bytes. */
int state_dir_write(StateDir *d, const char *name, const void *data, size_t size, char **ret_error);
/* Removes record 'name', durably: -ENOENT if there was none. */
int state_dir_remove(StateDir *d, const char *name, char **ret_error);
/* Moves record 'name' to "damaged/<name>.damaged" next to "jobs/" (replacing an older one),
 * durably: for a record that is damaged beyond telling which job it was, kept for whoever wants to
 * look at it, and no longer listed. "jobs/" holds nothing but records: blockjobd.path starts the
 * daemon while it is not empty. */
int state_dir_set_aside(StateDir *d, const char *name, char **ret_error);
/* The record names, sorted; stray temporary files of an interrupted write are removed (and
 * logged), other files left alone (and logged): NULL-terminated, free with state_dir_names_free(). */
int state_dir_list(StateDir *d, char ***ret_names, size_t *ret_n, char **ret_error);
void state_dir_names_free(char **names);
/* Reads record 'name': not a symlink (-ELOOP), a regular file and at most JOB_RECORD_SIZE_MAX
 * bytes (else it is damaged: -EBADMSG), the daemon's and closed to group and others (else
 * -EPERM). *ret is NUL-terminated (for convenience; the record is *ret_size bytes). */
int state_dir_read(StateDir *d, const char *name, char **ret, size_t *ret_size, char **ret_error);
