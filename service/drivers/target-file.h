/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The file a copying job (backup, mirror) writes its target image into, with the checks that
 * must fail early rather than late.
 *
 * The target comes as descriptors (job-files.h): either a new, empty file, built unseen in the
 * directory it is to be published in (see tmpfile.h): flushed at prepare, published at commit,
 * gone at abort or after a crash; or a file written in place, as QEMU writes an existing target:
 * a block device, which must be as large as the source and is claimed exclusively (O_EXCL: not
 * while mounted or otherwise in use), or a file a caller passed. Since there is nothing to
 * publish then, its content after an abort is whatever was copied so far.
 *
 * Publishing over an existing file (overwrite) never replaces a file that a QEMU process, or
 * another job, has open: the file is locked with QEMU's write lock at prepare, and the rename at
 * commit swaps exactly that file out, or nothing. */

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#include "driver-files.h"
#include "driver-resume.h"
#include "image.h"
#include "job-driver.h"
#include "job-files.h"
#include "tmpfile.h"

typedef struct TargetFile {
        TmpFile file;                   /* a new file */
        int device_fd;                  /* or a file written in place: a block device, or a target-fd */
        bool device;                    /* that file is a block device (raw only; not zeroes) */
        uid_t owner;                    /* a new file made for this user: replaced only as it could */
        char *path;
        bool overwrite;
        int replaced_fd;                /* from prepare: the file the new one replaces, locked */
        bool resumed;                   /* it holds the image the job was writing before a restart */
} TargetFile;

#define TARGET_FILE_NULL { .file = TMPFILE_NULL, .device_fd = -EBADF, .replaced_fd = -EBADF }

/* What backup and mirror are given alike: a source chain to copy, and a target to copy it into. */
typedef struct CopyParams {
        const char *source;             /* what messages call the source and the target */
        const char *target;
        JobFiles *files;                /* the source's chain, top first, and the target (taken over) */
        ImageFormat source_format;      /* PROBE: probed (see image.h for what that allows) */
        bool overwrite;
        bool sync_top;                  /* only what the source's top layer allocates */
        ImageFormat target_format;      /* PROBE: the source's */
        uint64_t memory_max;            /* the most memory the images' tables may take; 0: no bound */
        /* Built again after a restart (issue 15): the target (a new file in its named form, its
         * hidden name in files->target_temp_name, or one written in place) already holds the
         * image the job was writing, which is opened as it is instead of made anew. */
        DriverResume resume;
} CopyParams;

/* Opens the source from its descriptors ('flags': IMAGE_OPEN_SHARE_WRITE for a mirror). */
int copy_open_source(const CopyParams *p, unsigned flags, Image **ret, char **ret_error);
/* Takes over the target, checked against 'source' (whose size it gets), and makes the image in
 * it (target_file_adopt(), target_image_create()); 'sync_top' as the job decided it. With
 * p->resume.resume the image already in it is opened instead (target_image_reopen()). */
int copy_open_target(const CopyParams *p, Image *source, bool sync_top, TargetFile *t, Image **ret_writer,
                     char **ret_error);

/* Takes over the target of 'files' (its descriptors are duplicated, and a new file's hidden name
 * is the TargetFile's to remove from then on, whether this succeeds or not) and checks it against the
 * source chain, whose virtual size is 'size'; 'path' names it in messages. A regular file given
 * to be written in place must be empty, unless 'overwrite' (then it is emptied, once locked).
 * Failures return a negative errno and a message naming the file: -EINVAL for a bad argument
 * (source and target the same file, or a backing file of the source, through any name or loop
 * device; neither a file nor a device; sizes that differ), -EEXIST for an existing target without
 * 'overwrite', -EACCES for a descriptor that does not allow random-access writes. With 'resume'
 * (a job built again after a restart) the file holds the image the job was writing: it need not
 * be empty and is never emptied; everything else is checked as for a new job. */
int target_file_adopt(TargetFile *t, const char *path, JobFiles *files, Image *source, uint64_t size,
                      bool overwrite, bool resume, char **ret_error);

/* The descriptor to write the image into. */
int target_file_fd(const TargetFile *t);
/* Written in place (a device, or a file a caller passed): it does not start out empty. */
bool target_file_in_place(const TargetFile *t);
/* Before an image is made in it: a target written in place is locked for writing and emptied. */
int target_file_prepare_image(TargetFile *t, char **ret_error);

/* Makes the image the job writes into, and opens it for writing. Its format is 'format', or
 * with PROBE the source's (a device written in place: raw, the only format it can take). A new
 * qcow2 copy of the source's top layer alone ('sync_top') records the source's backing file, so
 * that it reads the same as the source, and is opened on top of 'backing', the source's own
 * chain below its top as descriptors: a partial cluster is completed from those files, never
 * from a file looked up by the recorded name. The image uses the TargetFile's descriptor
 * (IMAGE_OPEN_BORROW_FD), which holds its write lock: close the image before the TargetFile
 * (target_file_discard()). */
int target_image_create(TargetFile *t, Image *source, const ImageChainFds *backing, ImageFormat format,
                        bool sync_top, Image **ret, char **ret_error);

/* What a resumed job finds in its target (target_file_adopt() with 'resume'): the image it was
 * writing, opened for writing as target_image_create() would have made it. It must be one:
 * 'format' (PROBE: the source's; a device: raw), of the size a new one would have, and for qcow2
 * valid, backed by 'backing_name' in 'backing_format' (NULL: by nothing) and opened on 'backing'
 * (descriptors, as target_image_create() opens it), with neither snapshots nor bitmaps; else
 * -EINVAL, "The target '...' is not the image the job was writing: <why>". A qcow2 image whose
 * writer was killed may have leaked clusters (counted, used by nothing: see qcow2-write.c), which
 * are counted free again here (image_repair_leaks()) before anything is written, so that the
 * image published at the end passes qemu-img check. */
int target_image_reopen(TargetFile *t, Image *source, ImageFormat format, const char *backing_name,
                        ImageFormat backing_format, const ImageChainFds *backing, Image **ret, char **ret_error);

/* Prepare: flush; refuse if a new target's name was taken meanwhile (without overwrite), or if
 * the file to be replaced is in use (QEMU's locks), which it then keeps locked until commit. */
int target_file_prepare(TargetFile *t, char **ret_error);
/* Commit: publish a new file under its final name; on failure keep the data and say where. */
void target_file_commit(TargetFile *t, Job *j);
/* A new file takes the hidden name 'name' in its directory (tmpfile_set_hidden_name()); a file
 * written in place has none, and a resumed one has it already (0, nothing done). Before the job starts: not thread-safe with it. */
int target_file_set_hidden_name(TargetFile *t, const char *name, char **ret_error);
/* The daemon stops while the job is recorded (issue 15): a new file keeps its hidden name, so that
 * the job finds it again after the restart; whatever discards the TargetFile from now on only
 * closes it. Nothing to do for a file written in place. */
void target_file_keep(TargetFile *t);
/* Abort, clean: remove an unpublished file; close. Safe to call twice. */
void target_file_discard(TargetFile *t);

/* The files the target uses, for reservations: the file written in place, or the new file's
 * directory and name, plus whatever the name holds now if it is to be replaced. */
void target_file_list(const TargetFile *t, FileUseFunc f, void *userdata);
