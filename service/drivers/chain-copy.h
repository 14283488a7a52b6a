/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* What commit and stream share: copying into one image whatever a part of a backing chain
 * decides, so that once the chain is shortened, everything still reads the same.
 *
 * 'from' is read through its chain. A range that layers [min_depth, stop_depth) of it decide is
 * copied into 'to': data as data, zeroes as zeroes. What layers at stop_depth or below decide
 * stays where it is (they remain the backing of 'to' afterwards). A range that reads as zeroes
 * only because a layer above stop_depth ends there is made zeroes in 'to' if what remains below
 * reaches that far ('below_size'). Ranges that need nothing cost no I/O and count as done. */

#include "image.h"
#include "job-driver.h"

typedef struct ChainCopy {
        Image *from;
        int min_depth;
        int stop_depth;
        Image *to;
        uint64_t below_size;

        uint64_t offset;
        uint64_t chunk;
} ChainCopy;

int chain_copy_init(ChainCopy *c, Image *from, int min_depth, int stop_depth, Image *to, uint64_t below_size);
void chain_copy_done(ChainCopy *c);

/* One bounded step; true once the whole image is done. I/O errors go through the job's policy
 * (reads of 'from' are the source's, writes of 'to' the target's) and leave the position for
 * a retry. */
bool chain_copy_step(ChainCopy *c, Job *j, const JobStepInput *in, JobStepResult *out);
