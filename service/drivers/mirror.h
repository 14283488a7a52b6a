/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The mirror driver: copies a source into a target, reaches ready, and from then on keeps the
 * target converging with the source, which someone else may be writing, until completed.
 *
 * The source is any image the image layer reads (raw, qcow2 with its chain), opened read-only
 * while sharing write, since being written meanwhile is the point; but a qcow2 source that
 * another process (a running QEMU) holds for writing is refused, at open and again at the last
 * pass, since its metadata lives in that process's cache. The target is a new raw or qcow2 image
 * (or a block device written in place), as backup's (see target-file.h).
 *
 * It works in passes over the source, tracking it in granularity-sized blocks. For every block it
 * keeps a keyed 64-bit hash (SipHash, a random key per job) of what it last made the target hold
 * (a new target is all zeroes, so the first pass is simply the initial copy), and a pass reads the
 * source only: a block whose hash changed is written, or written as zeroes, or (sync=top) dropped
 * from the target's top layer. Data is read in spans of blocks, up to buf_size (8 MiB at most),
 * one request each, and the blocks of a span that changed are written in runs, one request each,
 * with copy-io's zero detection and write-behind. What block status shows needs no read (zeroes; with sync=top, what
 * the top does not allocate) costs none. Each pass starts by reading the source's metadata again
 * (image_refresh), so that a qcow2 source's new clusters are seen. After the first pass, flushed,
 * the job is ready; further passes start when inotify reports a change of the source file (or, at
 * the latest, every max-interval; block devices are polled). Complete (or a soft cancel) makes one
 * last full pass and finishes; the target is published at commit as backup's is, and a force
 * cancel discards it. A source that changes its size fails the job. Nothing quiesces a raw
 * source's writer: the copy is consistent (crash-consistent, as of the last pass) only if the
 * writer has stopped, or flushed and paused, before Complete.
 *
 * After a restart of the daemon (CopyParams.resume) a mirror goes on into the target it was
 * writing, but from the beginning: the source may have changed while the daemon was down, and the
 * block hashes (keyed per process) are gone, so nothing in the target is taken as known. Its first
 * pass writes every block again, data and zeroes alike (a new target starts empty, a resumed one
 * does not), and reaches ready as a first pass does; Complete works as usual and publishes only
 * what its last pass made equal to the source. It keeps no checkpoints: JobStepInput.checkpoint
 * is ignored, and a checkpoint_only step does nothing. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "driver-files.h"
#include "image.h"
#include "job-driver.h"
#include "job-files.h"
#include "siphash24.h"
#include "target-file.h"

#define MIRROR_GRANULARITY_DEFAULT (UINT32_C(64) << 10)
#define MIRROR_CHUNK_DEFAULT (UINT64_C(4) << 20)
/* What a mirror may spend, at worst, on tracking its blocks (8 bytes each), whatever size the
 * source's header claims: the default granularity grows with the source to stay within it (64 KiB
 * covers 512 GiB), and a granularity asked for whose worst case exceeds it is refused (-E2BIG). */
#define MIRROR_TABLE_MAX (UINT64_C(64) << 20)

typedef struct MirrorParams {
        CopyParams copy;                /* sync_top: only what the source's top layer allocates */
        uint32_t granularity;           /* power of 2, 512 B to 64 MiB; 0 = 64 KiB, or more for
                                         * sources over 512 GiB (see MIRROR_TABLE_MAX) */
        uint64_t buf_size;              /* bytes read per step at most, in requests of up to
                                         * 8 MiB; 0 = 4 MiB */
        uint64_t poll_ns;               /* ready: how often to look for changes; 0 = 100 ms */
        uint64_t max_interval_ns;       /* ready: a full pass at least this often; 0 = 10 s */
} MirrorParams;

typedef struct Mirror Mirror;

extern const JobDriver mirror_driver;

/* Opens the source, checks and creates the target. Blocking I/O: call it off the event loop. */
int mirror_open(const MirrorParams *p, Mirror **ret, char **ret_error);
void mirror_free(Mirror *m);

uint64_t mirror_size(const Mirror *m);
/* The format the source was opened as. */
ImageFormat mirror_source_format(const Mirror *m);
/* The most memory the job can take: mirror_memory_estimate(), and its images' metadata
 * (image_memory_estimate()). */
uint64_t mirror_memory(const Mirror *m);
/* Its target file (for the daemon's records, which give a new target a hidden name: persist.h). */
TargetFile *mirror_target_file(Mirror *m);
/* Its files: the source's chain, read (by this job; others may write it); the target, written. */
void mirror_list_files(const Mirror *m, FileUseFunc f, void *userdata);
/* The granularity in use (the one asked for, or the default that fits the source). */
uint32_t mirror_granularity(const Mirror *m);
/* The most memory the mirror's own structures can take, however much a guest writes (the images'
 * are not counted): for the per-job and per-user memory bounds. */
uint64_t mirror_memory_estimate(const Mirror *m);
/* The hashes a pass compares blocks by: siphash13() of each block of data[0, length), which are
 * block_size bytes but the last (shorter if length is not a multiple), with 'key', into ret[]
 * (one per block). Eight blocks at once where the CPU has AVX-512 (mirror.c says why); exported
 * so that its test can check it against siphash13(). */
void mirror_siphash13_blocks(const void *data, size_t length, size_t block_size, const uint8_t key[SIPHASH_KEY_SIZE],
                             uint64_t *ret);
/* For tests: whether mirror_siphash13_blocks() hashes blocks side by side on this CPU. */
bool mirror_hash_vectorized(void);
/* For tests: completed passes over the source. */
uint64_t mirror_passes(const Mirror *m);

