/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* QEMU's block-dirty-bitmap-* commands, offline: listing and changing the persistent dirty bitmaps
 * of one qcow2 image, under the job factory's rules (job-factory.h) for the files of a caller:
 *
 *   - The image is opened by blockjobd-opener with the caller's rights (read-only to list, for
 *     writing to change), never by the daemon by name. Only that file is opened: bitmaps are a
 *     layer's own, so its backing files are neither followed nor needed.
 *   - The image must be qcow2: it is opened as qcow2, never probed, and anything else is
 *     refused (BITMAP_OP_ERROR_BITMAP: "... is not a qcow2 image").
 *   - A change holds QEMU's write locks on the image while it runs (so a running QEMU, or
 *     qemu-img, that has it open is refused, and cannot open it meanwhile); a listing shares it
 *     as a reader does.
 *   - A file that a job of ours writes, or (for a change) reads, is refused with the job named
 *     (reservations.h); the operation reserves the file while it runs, so that no job takes it
 *     meanwhile either.
 *   - A user other than root has at most so many operations (and their openers) in progress.
 *   - Memory: the image may take what a job's images may, within what is left of the user's. A
 *     change counts that whole bound in the user's memory while its image is opened, then only
 *     what the open image may take (image_memory_estimate(): its tables, the enabled bitmaps it
 *     loaded, the table, a cluster and two maps of the bitmaps changed, and a new bitmap's map
 *     and table) until it is closed.
 *     A listing never loads a bitmap (image_bitmap_dirty_bytes()) and is bounded, not counted.
 *
 * An operation goes: admitted → opener (on the loop, within one deadline) → reservation checked
 * and taken, memory claimed (loop) → the image opened on a worker (worker-pool.h) → the memory
 * counted cut to the open image's (loop) → the change or listing, and the close, on a worker →
 * the answer (loop). */

#include <stdbool.h>
#include <stdint.h>

#include "image.h"
#include "job-factory.h"

typedef enum BitmapOpType {
        BITMAP_OP_LIST,
        BITMAP_OP_ADD,
        BITMAP_OP_REMOVE,
        BITMAP_OP_CLEAR,
        BITMAP_OP_ENABLE,
        BITMAP_OP_DISABLE,
        BITMAP_OP_MERGE,
        _BITMAP_OP_MAX,
} BitmapOpType;

/* The D-Bus method's name ("AddBitmap"), for messages and polkit details. */
const char *bitmap_op_type_to_string(BitmapOpType t);

/* QEMU's bounds, checked before anything is opened: a name of 1 to 1023 bytes, a granularity
 * that is a power of 2 of at least 512 (0: the image's default). -EINVAL and QEMU's text. */
#define BITMAP_NAME_MAX 1023U
int bitmap_check_name(const char *name, char **ret_error);
int bitmap_check_granularity(uint32_t granularity, char **ret_error);

typedef struct BitmapRequest {
        BitmapOpType type;
        char *image;                    /* an absolute path */
        char *name;                     /* the bitmap; MergeBitmaps: the target */
        char **sources;                 /* MergeBitmaps */
        size_t n_sources;
        uint32_t granularity;           /* AddBitmap; 0: the image's default */
        bool disabled;                  /* AddBitmap */
} BitmapRequest;

void bitmap_request_done(BitmapRequest *q);

/* One bitmap as ListBitmaps tells it. */
typedef struct BitmapListEntry {
        char *name;
        uint32_t granularity;
        uint64_t dirty;                 /* bytes; 0 for an inconsistent bitmap (it cannot be read) */
        unsigned flags;                 /* ImageBitmapFlags */
} BitmapListEntry;

/* Why an operation failed, for the bus layer to name the error. */
typedef enum BitmapOpError {
        BITMAP_OP_ERROR_IMAGE,          /* opening or reading the image (EACCES: the caller's rights) */
        BITMAP_OP_ERROR_BITMAP,         /* not found, exists, inconsistent, not possible on this image */
        BITMAP_OP_ERROR_INVALID,        /* a name or granularity QEMU refuses */
        BITMAP_OP_ERROR_IN_USE,         /* a job of ours, or another process, has the image */
        BITMAP_OP_ERROR_LIMIT,          /* a bound, or descriptors or memory ran out */
} BitmapOpError;

typedef struct BitmapOp BitmapOp;

/* Admits an operation for 'caller' (the request is moved into it, or freed on failure): -EUSERS
 * and a message over a limit. */
int bitmap_op_new(JobFactory *f, const JobCaller *caller, BitmapRequest *q, BitmapOp **ret, char **ret_error);

/* Called once, on the loop, never before bitmap_op_start() returns: r < 0 with what failed and a
 * message, or 0 when done (for a listing, see bitmap_op_list()). The callback may free the op. */
typedef void (*BitmapOpDone)(BitmapOp *op, int r, BitmapOpError kind, const char *message, void *userdata);
int bitmap_op_start(BitmapOp *op, BitmapOpDone done, void *userdata);

const BitmapRequest *bitmap_op_request(const BitmapOp *op);
/* After a successful BITMAP_OP_LIST: the bitmaps, in directory order. */
const BitmapListEntry *bitmap_op_list(const BitmapOp *op, size_t *ret_n);

/* Gives up (the opener is killed); work on a worker is finished first, in the background: a
 * change that started is made, or not, as a whole. */
BitmapOp *bitmap_op_free(BitmapOp *op);
