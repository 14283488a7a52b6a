/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The stream driver: pulls backing-chain data up into an image. Every range that the image does
 * not allocate but a layer above 'base' does is copied into it (zeroes as zero clusters); at
 * prepare the image's backing file becomes 'base' (or none), and the chain reads exactly as
 * before. The image is written, the chain below only read; QEMU's locks hold them so for the
 * job's life. Never ready. */

#include "driver-files.h"
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
} StreamParams;

typedef struct Stream Stream;

extern const JobDriver stream_driver;

int stream_open(const StreamParams *p, Stream **ret, char **ret_error);
void stream_free(Stream *s);
uint64_t stream_size(const Stream *s);
/* The most memory the job can take, its images' metadata included (image_memory_estimate()). */
uint64_t stream_memory(const Stream *s);
/* Its files: the image is written, its chain read. */
void stream_list_files(const Stream *s, FileUseFunc f, void *userdata);
