/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The one place that moves data from a source Image to a target Image: the drivers decide what
 * needs copying (block status, hashes), copy-io decides how.
 *
 * Buffers: no job owns a copy buffer. Each worker thread has one (copy_io_buffer()), aligned,
 * grown to the largest piece (COPY_IO_PIECE) or mirror span it was asked for and freed when the
 * thread exits: a job that is paused, or throttled between steps, costs its structs and its
 * images' tables only, and the daemon's buffer memory follows its worker threads, not its jobs.
 *
 * Zero detection, as qemu-img convert and detect-zeroes=unmap do it: what is read is looked at a
 * granule at a time (the target's cluster, 4 KiB at least) and a granule of zeroes is not
 * written. A target that reads zeroes wherever nothing was written (COPY_IO_TARGET_ZEROED: a new
 * raw file, which keeps its hole; a new qcow2 image without backing file, whose cluster stays
 * unallocated) gets nothing; any other (a device or file written in place, a qcow2 image whose
 * backing file would show through) gets image_write_zeroes() there (holes, zero clusters).
 *
 * Offload, raw file to raw file: first FICLONERANGE (the file system shares the extents: XFS with
 * reflink, btrfs; a backup costs metadata), aligned to the file system's block size, the
 * unaligned head and tail by the next method; then copy_file_range(); then reading and writing.
 * The first refusal of a method (EXDEV, EOPNOTSUPP, EINVAL, ENOSYS, EBADF, ...: different file
 * systems, a file system that cannot, a kernel that has no such call) turns it off for the job,
 * logged once at debug level, and the same range is copied the next way: offload is an
 * optimisation, never a change in what the target reads. The drivers offload only ranges that
 * block status calls data, so holes stay holes. Offloaded calls are bounded (a clone by
 * COPY_IO_CLONE_MAX, a kernel copy by the job's chunk) and the caller's step budget bounds the
 * bytes of a step, so pause, cancel and the rate limit act between calls as they do between
 * chunks. The source is locked against writers (backup), so whichever way a range is copied, it
 * is the same point-in-time copy.
 *
 * Offload or zero detection, for data extents on a file system that cannot share them (ext4):
 * copy_file_range() does not look at the data, so zeroes that were written (an image made with
 * dd if=/dev/zero, or preallocated) are copied as data, where reading finds them and leaves
 * holes. Measured on this machine (ext4 on virtio, 1 GiB, page cache dropped, fdatasync
 * included; medians of 5, the machine shared with other builds, so spreads are wide): dense
 * random data, copy_file_range() 1.55 s, read + zero check + write 2.07 s, cp --sparse=always
 * 1.95 s; 1 GiB of written zeroes, copy_file_range() 1.23 s and 1 GiB allocated, read + zero
 * check 0.38 s and nothing allocated. Block status already keeps every hole and every zero
 * range the file system knows of, so written zeroes inside data extents are the rare case, and
 * dense data the common one: raw files get copy_file_range() for their data extents (after
 * clones), and zero detection for everything read (qcow2 on either side, and after a refusal).
 * COPY_IO_DETECT_ZEROES chooses reading for a job that would rather have the holes. Clones are
 * always tried first: they cost no data I/O, and a shared extent of zeroes costs no space.
 *
 * Requests in flight: one job's copy overlaps its reads and writes on the device without threads
 * or io_uring: before reading chunk N, copy-io asks the kernel to read chunk N + 1 ahead
 * (readahead(2), which returns once the reads are queued), and after writing chunk N it starts
 * the write-back of chunk N (sync_file_range(SYNC_FILE_RANGE_WRITE), which does not wait for
 * it). So while the job copies chunk N out of the page cache, the device reads N + 1 and writes
 * N - 1, and the flush at the end finds almost nothing dirty. io_uring would do the same with a
 * new dependency, a ring per job (memory and a descriptor per paused job, against the 16 KiB and
 * 2 descriptors per job the daemon promises) and its own error paths; a fan-out over the worker
 * pool would take workers from other jobs and make one job's order of writes, and its crash
 * behaviour, depend on scheduling. Measured (same setup, 1 GiB
 * dense, read + zero check + write, medians of 5): read-ahead and write-behind 1.40 s,
 * read-ahead only 1.69 s, neither 2.05 s, write-behind alone 3.03 s; the minimums (1.14 to 1.53 s) are within the machine's noise. Both stay, and
 * the same two hints go with copy_file_range(), whose reads and writes are just as sequential.
 *
 * Threads: a CopyIo is used by one thread at a time, as its images are (a job's steps run one
 * at a time, on any worker). */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "image.h"

/* Large sequential requests: a chunk is what one read or write moves. */
#define COPY_IO_CHUNK_DEFAULT (UINT64_C(8) << 20)
/* Reading and writing moves a chunk a piece at a time, through a buffer of this size: the
 * device's requests stay as large as the chunk (read-ahead of the whole chunk, write-behind of
 * several), while the buffer stays in the CPU's cache (1 MiB of L2 here) from the read that fills
 * it to the write that empties it, instead of being fetched from memory once for each. Measured
 * on the 1 GiB qcow2 image of tests/bench/jobs (3/4 data), cold cache, 5 runs each in turns on a
 * busy machine: qcow2 -> qcow2 0.76-1.01 s and 0.19-0.22 s of daemon CPU with 512 KiB pieces,
 * 1.01-2.94 s and 0.43-2.41 s of CPU with the whole 8 MiB chunk in one buffer. */
#define COPY_IO_PIECE (UINT64_C(512) << 10)
/* A clone moves no data; it is bounded so that a huge extent still leaves pause points. */
#define COPY_IO_CLONE_MAX (UINT64_C(256) << 20)
/* Write-back is started for this much at a time, at least. */
#define COPY_IO_WRITE_BEHIND_MIN (UINT64_C(32) << 20)

typedef enum CopyIoFlags {
        COPY_IO_TARGET_ZEROED = 1 << 0, /* the target reads zeroes wherever nothing was written */
        COPY_IO_NO_OFFLOAD    = 1 << 1, /* read and write only (the mirror: it hashes what it copies) */
        COPY_IO_DETECT_ZEROES = 1 << 2, /* no copy_file_range(): read data extents, to find zeroes in them */
} CopyIoFlags;

typedef enum CopyIoOffload {
        COPY_IO_READ_WRITE,
        COPY_IO_COPY_RANGE,
        COPY_IO_CLONE,
} CopyIoOffload;

/* What was done, by which means (for tests and for the bench). */
typedef struct CopyIoStats {
        uint64_t cloned;                /* bytes shared by FICLONERANGE */
        uint64_t kernel_copied;         /* bytes copied by copy_file_range() */
        uint64_t read;                  /* bytes read into the thread's buffer ... */
        uint64_t written;               /* ... and written from it */
        uint64_t zero_skipped;          /* bytes read as zeroes and not written at all */
        uint64_t zero_written;          /* bytes read as zeroes and made zeroes with write_zeroes */
} CopyIoStats;

typedef struct CopyIo {
        Image *source;
        Image *target;
        unsigned flags;
        uint64_t chunk;
        uint32_t granule;               /* of zero detection */
        uint32_t clone_align;           /* the file system's block size */
        CopyIoOffload offload;          /* the best method not refused yet */
        unsigned refused;               /* methods the kernel refused, 1 << CopyIoOffload */
        uint64_t readahead_end;         /* read ahead up to here */
        uint64_t write_behind_start;    /* written since the last write-behind */
        uint64_t write_behind_end;
        CopyIoStats stats;
} CopyIo;

/* Sets up copying from 'source' to 'target' (same virtual offsets) in chunks of 'chunk' bytes
 * (0: COPY_IO_CHUNK_DEFAULT). Allocates nothing. */
void copy_io_init(CopyIo *c, Image *source, Image *target, uint64_t chunk, unsigned flags);

/* Copies the start of [offset, offset + length), a range the caller wants to read as the source
 * does: at most a chunk (a clone, at most COPY_IO_CLONE_MAX). Returns 0 and the bytes done (> 0),
 * or a negative errno and the image it is about (the source for reads, the target for writes,
 * the message in its image_error()); nothing of a failed call counts as done. */
int copy_io_copy(CopyIo *c, uint64_t offset, uint64_t length, uint64_t *ret_done, Image **ret_failed);

/* Writes 'buf', read from the source at 'offset', to the target, with zero detection. Returns 0 or
 * a negative errno about the target. For callers that read themselves (the mirror hashes what it
 * reads). */
int copy_io_write(CopyIo *c, const void *buf, uint64_t offset, size_t length);

/* Makes everything written so far durable (a checkpoint): image_flush() of the target (a qcow2
 * image's tables, then fdatasync). copy-io keeps no request of its own in flight (every write has
 * returned by the time its call does); what is on its way is the kernel's write-back that
 * write-behind started, which the flush waits for. Returns 0 or a negative errno about the
 * target (its message in image_error()). */
int copy_io_flush(CopyIo *c);

/* Hints for callers that read and write themselves (see "Requests in flight"). */
void copy_io_read_ahead(CopyIo *c, uint64_t offset, uint64_t length);
void copy_io_write_behind(CopyIo *c, uint64_t offset, uint64_t length);

/* This thread's buffer, at least 'size' bytes, aligned for O_DIRECT (4 KiB); NULL when out of
 * memory. It stays the thread's, and grows, until the thread exits; the next call may move it. */
void *copy_io_buffer(size_t size);
/* Frees this thread's buffer now (a thread that will not copy again). */
void copy_io_buffer_release(void);
/* The size of this thread's buffer (tests). */
size_t copy_io_buffer_size(void);

/* Does the buffer hold only zero bytes? Word at a time, as QEMU's buffer_is_zero(). */
bool copy_io_is_zero(const void *buf, size_t n);
