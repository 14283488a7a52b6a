/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The commit driver: folds layers of a backing chain down into a lower one. Every range that
 * 'top' or a layer between it and 'base' allocates is copied into 'base' (zeroes as zeroes).
 *
 * When top is below the active image, the job completes by itself, and at prepare the image
 * directly above top is rewritten to use base as its backing file: the layers in between drop
 * out of the chain (their files stay). When top is the image itself (active commit), the job
 * reaches ready once base holds everything; Complete() finishes it, and the image then rests on
 * base directly (layers between drop out, as with QEMU's pivot) and is emptied (all its
 * clusters discarded, as `qemu-img commit` does), a valid, empty overlay on base; a soft cancel in ready finishes without emptying it. Either way the chain reads exactly
 * the same before and after. Base is written, the image above top only in its header (or, for
 * active commit, emptied), everything else only read.
 *
 * Across a restart of the daemon (issue 15): the job keeps checkpoints, an offset below which
 * everything is durable in base (JobStepResult.checkpoint: when asked, on the step that finishes
 * and on the one that reaches ready; base is flushed first). Built again with 'resume', it opens
 * the chain as a new job does and copies again from that offset: copying is idempotent
 * (chain-copy.h), so what was written after the checkpoint is harmless. Prepare may run again
 * after a kill between prepare and the end of the job (restored pending): every change it makes
 * leaves a chain that reads the same, and done again changes nothing. The rewrite of an
 * intermediate commit is one header write; once it is done, top is no longer in the image's
 * chain, and a resumed commit_open() accepts that chain (base still in it, named with its format
 * and, if given, 'backing_file'): commit_rewrite_done() is then true, the job has nothing left to
 * do, its first step finishes it and prepare only flushes base. Active commit needs nothing of
 * the kind: after its rewrite the image still rests on base, and the job opened again copies
 * into base what the image still holds (what the emptying left: data base already has) and
 * empties it again. Not kept across a restart: a soft cancel in ready (a job restored pending
 * after one pivots at prepare; the chain reads the same either way). */

#include "driver-files.h"
#include "driver-resume.h"
#include "image.h"
#include "job-driver.h"
#include "job-files.h"

typedef struct CommitParams {
        const char *image;              /* what messages call the image */
        const char *top;                /* a layer of the image's chain, as the chain names it; NULL: the image */
        const char *base;               /* a layer below top; NULL: the bottom of the chain */
        const char *backing_file;       /* the name to record above top; NULL: base's path */
        ImageFormat base_format;        /* PROBE: as recorded; otherwise it must be what is recorded */
        const JobFiles *files;          /* the image's chain, top first */
        uint64_t memory_max;            /* the most memory its images' tables may take; 0: no bound */
        DriverResume resume;            /* built again after a restart: continue at resume.offset */
} CommitParams;

typedef struct Commit Commit;

extern const JobDriver commit_driver;

int commit_open(const CommitParams *p, Commit **ret, char **ret_error);
void commit_free(Commit *c);
/* The job's size (top's); for a rewritten chain, resume.offset (nothing is left). The restore
 * layer restores progress as current = resume.offset, total = commit_size(). */
uint64_t commit_size(const Commit *c);
/* Resumed on a chain that this job's prepare already rewrote before the restart (top is out of
 * the chain): the job concludes successfully without copying. Always false for a new job. */
bool commit_rewrite_done(const Commit *c);
/* The most memory the job can take, its images' metadata included (image_memory_estimate()). */
uint64_t commit_memory(const Commit *c);
/* Its files: base, the image whose header changes (or the image itself, for active commit) and
 * the layers that drop out of the chain are written; the rest is read. For a rewritten chain:
 * base is written, the layers above it read. */
void commit_list_files(const Commit *c, FileUseFunc f, void *userdata);
