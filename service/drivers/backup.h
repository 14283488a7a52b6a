/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The backup driver: a point-in-time copy of a source into a new target.
 *
 * The source is any image the image layer reads (raw file or block device, qcow2 with its
 * backing chain), opened read-only with QEMU's locks, so that nobody writes it meanwhile. With
 * sync=full the copy is of everything it reads (the chain flattened); with sync=top, of what the
 * top image itself allocates. Whatever reads as zeroes is skipped: it stays a hole in the target
 * and counts as progress. The target is a new raw or qcow2 image (by default of the source's
 * format; a qcow2 copy of the top layer alone keeps the source's backing file), written through
 * the image layer into a file built unseen next to its final path (see tmpfile.h), flushed at
 * prepare and published at commit, replacing an existing file only with 'overwrite' (and never
 * one of the source's own chain); abort leaves nothing.
 *
 * Checkpoints (issue 15): the copy is sequential, so one offset says what is done. On a step whose
 * JobStepInput asks for a checkpoint (after its copying), on a checkpoint_only step (which copies
 * nothing), and on the step that finishes, the target is flushed (copy_io_flush(): a qcow2
 * image's tables, then fdatasync) and JobStepResult.checkpoint_value is that offset: everything
 * below it is durable in the target. A step that met an I/O error reports none (the checkpoint
 * stays due), and a flush that fails is a target I/O error under the job's policy. Built again
 * with CopyParams.resume, the job reopens the target it was writing and goes on from the offset
 * (backup_resume() in backup.c says why what it finds above it is harmless). */

#include <stdbool.h>
#include <stdint.h>

#include "backup-backing.h"
#include "backup-bitmap.h"
#include "copy-io.h"
#include "driver-files.h"
#include "image.h"
#include "job-driver.h"
#include "job-files.h"
#include "target-file.h"

/* Large sequential requests: see copy-io.h. */
#define BACKUP_CHUNK_DEFAULT COPY_IO_CHUNK_DEFAULT
#define BACKUP_CHUNK_MAX (UINT64_C(64) << 20)

typedef struct BackupParams {
        CopyParams copy;                /* sync_top: copy only what the top image allocates */
        uint64_t chunk_size;            /* bytes per step when unthrottled; 0 = default */

        /* A persistent bitmap of the source's top layer (backup-bitmap.h): with sync_bitmap it
         * says what to copy (sync_top must be false); bitmap_mode says what becomes of it. A mode
         * other than never needs the top layer's descriptor open for reading and writing. */
        const char *bitmap;
        BitmapSyncMode bitmap_mode;
        bool sync_bitmap;

        /* target-backing (backup-backing.h): the name to record, where it was opened, its format
         * (PROBE: as the file is), and its chain as descriptors. NULL name: none. */
        const char *target_backing;
        const char *target_backing_path;
        ImageFormat target_backing_format;
        const JobFiles *target_backing_files;
} BackupParams;

typedef struct Backup Backup;

extern const JobDriver backup_driver;

/* Opens the source, checks the target, creates the unpublished target file. Blocking I/O: call
 * it off the event loop. On success *ret is the driver data for job_create(); on failure a
 * message names the file and the reason. */
int backup_open(const BackupParams *p, Backup **ret, char **ret_error);
/* For a caller whose job_create() failed. */
void backup_free(Backup *b);

/* The bytes the job copies or skips: the source's size, or with sync=bitmap the bytes of the
 * clusters its bitmap marks. */
uint64_t backup_size(const Backup *b);
/* The format the source was opened as. */
ImageFormat backup_source_format(const Backup *b);
/* Of backup_size(), what a job resumed after a restart (CopyParams.resume) had done before it:
 * the job's progress starts there. 0 for a job that was not resumed. */
uint64_t backup_resumed_progress(const Backup *b);
/* The most memory the job can take, its images' metadata included (image_memory_estimate()). */
uint64_t backup_memory(const Backup *b);
/* Its target file (for the daemon's records, which give a new target a hidden name: persist.h). */
TargetFile *backup_target_file(Backup *b);
/* Its files: the source's chain, read; the target, written. */
void backup_list_files(const Backup *b, FileUseFunc f, void *userdata);
/* Counters for tests: I/O calls made on source and target so far. */
uint64_t backup_io_calls(const Backup *b);
/* How the copy was made so far (cloned, offloaded, read and written, zeroes skipped). */
const CopyIoStats *backup_copy_stats(const Backup *b);
