/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* What commit and stream share: copying into one image whatever a part of a backing chain
 * decides, so that once the chain is shortened, everything still reads the same.
 *
 * 'from' is read through its chain. A range that layers [min_depth, stop_depth) of it decide is
 * copied into 'to': data as data, zeroes as zeroes. What layers at stop_depth or below decide
 * stays where it is (they remain the backing of 'to' afterwards). A range that reads as zeroes
 * only because a layer above stop_depth ends there is made zeroes in 'to' if what remains below
 * reaches that far ('below_size'). Ranges that need nothing cost no I/O and count as done.
 *
 * Copying is idempotent: a range copied again gets the same content ('from' is only read, and
 * what 'to' holds of a range never decides how that range is copied). So a job built again after a
 * restart starts at its last checkpoint (chain_copy_init()'s 'offset'), and whatever it wrote
 * beyond that before it was stopped or killed -9 (data not yet durable, qcow2 metadata half
 * written back) is simply written over with the same content: harmless. */

#include "image.h"
#include "job-driver.h"

typedef struct ChainCopy {
        Image *from;
        int min_depth;
        int stop_depth;
        Image *to;
        uint64_t below_size;

        uint64_t offset;                /* everything below is copied */
        uint64_t chunk;
} ChainCopy;

/* Starts at 'offset': 0 for a new job, its last checkpoint for one resumed after a restart
 * (-ERANGE if that lies beyond the end of 'from'). */
int chain_copy_init(ChainCopy *c, Image *from, int min_depth, int stop_depth, Image *to, uint64_t below_size,
                    uint64_t offset);
void chain_copy_done(ChainCopy *c);

/* One bounded step; true once the whole image is done and durable. I/O errors go through the
 * job's policy (reads of 'from' are the source's, writes of 'to' the target's) and leave the
 * position for a retry.
 *
 * Checkpoints (JobStepInput.checkpoint, .checkpoint_only): a step asked for one, and the step
 * that reaches the end, flush 'to' and report the position as out->checkpoint_value. With
 * checkpoint_only nothing is copied. A step whose copy failed reports none; the end is reached
 * only once its flush succeeded (a failed one is retried as the policy says). */
bool chain_copy_step(ChainCopy *c, Job *j, const JobStepInput *in, JobStepResult *out);

/* Makes what was copied into 'to' durable (its metadata too: image_flush()) and reports the
 * position as the step's checkpoint. A failed flush is a write error of 'to' under the job's
 * policy, and no checkpoint. Returns whether one was reported. For a driver whose copy is over
 * (ready, or its chain already rewritten) and is asked for a checkpoint. */
bool chain_copy_checkpoint(ChainCopy *c, Job *j, JobStepResult *out);

/* The chain rewrite of commit and stream: 'holder' records 'name' (NULL: none) and 'format' as its
 * backing file, in one durable header write (image_set_backing(): one write of the header, in
 * its first cluster, then a sync; before it the image reads through the old chain, after it
 * through the new, and both read the same). Nothing is written if the header already records
 * exactly that: a prepare run again after a restart (killed between prepare and the end of the
 * job) changes nothing. */
int chain_set_backing(Image *holder, const char *name, ImageFormat format);
