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
 * active commit, emptied), everything else only read. */

#include "driver-files.h"
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
} CommitParams;

typedef struct Commit Commit;

extern const JobDriver commit_driver;

int commit_open(const CommitParams *p, Commit **ret, char **ret_error);
void commit_free(Commit *c);
uint64_t commit_size(const Commit *c);
/* The most memory the job can take, its images' metadata included (image_memory_estimate()). */
uint64_t commit_memory(const Commit *c);
/* Its files: base, the image whose header changes (or the image itself, for active commit) and
 * the layers that drop out of the chain are written; the rest is read. */
void commit_list_files(const Commit *c, FileUseFunc f, void *userdata);
