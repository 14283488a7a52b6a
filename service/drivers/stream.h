/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The stream driver: pulls backing-chain data up into an image. Every range that the image does
 * not allocate but a layer above 'base' does is copied into it (zeroes as zero clusters); at
 * prepare the image's backing file becomes 'base' (or none), and the chain reads exactly as
 * before. The image is written, the chain below only read; QEMU's locks hold them so for the
 * job's life. Never ready.
 *
 * Across a restart of the daemon (issue 15): the job keeps checkpoints, an offset below which
 * everything is durable in the image (JobStepResult.checkpoint: when asked, and on the step that
 * finishes; the image is flushed first). Built again with 'resume', it opens the chain as a new
 * job does and copies again from that offset: copying is idempotent (chain-copy.h), so what was
 * written after the checkpoint is harmless. Prepare (flush, then one header write) may run again
 * after a kill between prepare and the end of the job: it finds the name recorded and writes
 * nothing. A chain that prepare already rewrote opens as it is (base directly below the image,
 * or no backing file): stream_rewrite_done() is then true and there is nothing left to copy. */

#include "driver-files.h"
#include "driver-resume.h"
#include "image.h"
#include "job-driver.h"
#include "job-files.h"

typedef struct StreamParams {
        const char *image;              /* what messages call the image */
        const char *base;               /* a layer of the image's chain, as the chain names it; NULL: none, stand alone */
        const char *backing_file;       /* the name to record; NULL: the base's path */
        ImageFormat base_format;        /* PROBE: as recorded; otherwise it must be what is recorded */
        const JobFiles *files;          /* the image's chain, top first */
        uint64_t memory_max;            /* the most memory its images' tables may take; 0: no bound */
        DriverResume resume;            /* built again after a restart: continue at resume.offset */
} StreamParams;

typedef struct Stream Stream;

extern const JobDriver stream_driver;

int stream_open(const StreamParams *p, Stream **ret, char **ret_error);
void stream_free(Stream *s);
/* The image's size; the restore layer restores progress as current = resume.offset, total =
 * stream_size(). */
uint64_t stream_size(const Stream *s);
/* Nothing lies between the image and base (or, with none, the image has no backing file): the
 * chain is already what the job leaves. For a resumed job: prepare rewrote it before the restart,
 * and the job concludes successfully without copying. */
bool stream_rewrite_done(const Stream *s);
/* The most memory the job can take, its images' metadata included (image_memory_estimate()). */
uint64_t stream_memory(const Stream *s);
/* Its files: the image is written, its chain read. */
void stream_list_files(const Stream *s, FileUseFunc f, void *userdata);
