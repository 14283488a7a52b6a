/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The file a copying job (backup, mirror) writes its target image into, with the checks that
 * must fail early rather than late.
 *
 * A target path that does not exist, or a regular file (replaced only with 'overwrite'), gets a
 * new file built unseen next to it (see tmpfile.h): flushed at prepare, published at commit,
 * gone at abort or after a crash. A block device is written in place, as QEMU writes an existing
 * target: it must be as large as the source, and it is claimed exclusively (O_EXCL: not while
 * mounted or otherwise in use), and since there is nothing to publish, its content after an
 * abort is whatever was copied so far. */

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#include "image.h"
#include "job-driver.h"
#include "tmpfile.h"

typedef struct TargetFile {
        TmpFile file;                   /* a new file */
        int device_fd;                  /* or a file written in place: a block device, or a target-fd */
        bool device;                    /* that file is a block device (raw only; not zeroes) */
        uid_t owner;                    /* a new file made for this user: replaced only as it could */
        char *path;
        bool overwrite;
} TargetFile;

#define TARGET_FILE_NULL { .file = TMPFILE_NULL, .device_fd = -EBADF }

/* A target opened by someone else, so that the daemon opens nothing by name: a descriptor a
 * caller passed (target-fd: written in place, whatever it is), or what the helper opened with a
 * caller's rights (a block device, in place; or a new file it created, unpublished, in a
 * directory it opened, which the daemon publishes there). The descriptors are not taken over. */
typedef struct TargetGiven {
        int fd;                         /* the file to write */
        int dir_fd;                     /* a new file: where to publish it; -EBADF: written in place */
        const char *name;               /* a new file: its name in dir_fd */
        const char *temp_name;          /* a new file: its hidden name there, NULL if it has none */
        uid_t owner;                    /* a new file: the user it was made for (publishing over an
                                         * existing file follows that user's sticky-bit rules) */
} TargetGiven;

/* Checks 'path' against the source ('source_st' is the source's top file; 'size' its virtual
 * size) and opens or creates the target: a new file is empty, with the source's permission bits.
 * With 'given', 'path' is the target's name in messages only. A regular file given to be written
 * in place must be empty, unless 'overwrite' (then it is emptied). Failures return a negative
 * errno and a message naming the file: -EINVAL for a bad argument (source and target the same,
 * neither a file nor a device, sizes that differ), -EEXIST for an existing target without
 * 'overwrite'. */
int target_file_open(TargetFile *t, const char *path, const TargetGiven *given, const struct stat *source_st,
                     uint64_t size, bool overwrite, bool named_temp_file, char **ret_error);

/* Is the file the target replaces or writes in place one of the layers of 'chain'? */
bool target_file_in_chain(const TargetFile *t, const Image *chain);

/* The descriptor to write the image into. */
int target_file_fd(const TargetFile *t);
/* A block device written in place: it does not start out as zeroes. */
bool target_file_in_place(const TargetFile *t);

/* Makes the image the job writes into, and opens it for writing. Its format is 'format', or
 * with PROBE the source's (a device written in place: raw, the only format it can take). A new
 * qcow2 copy of the source's top layer alone ('sync_top') records the source's backing file, so
 * that it reads the same as the source. */
int target_image_create(TargetFile *t, Image *source, ImageFormat format, bool sync_top, Image **ret,
                        char **ret_error);

/* Prepare: flush, and refuse if a new target's name was taken meanwhile (without overwrite). */
int target_file_prepare(TargetFile *t, char **ret_error);
/* Commit: publish a new file under its final name; on failure keep the data and say where. */
void target_file_commit(TargetFile *t, Job *j);
/* Abort, clean: remove an unpublished file; close. Safe to call twice. */
void target_file_discard(TargetFile *t);
