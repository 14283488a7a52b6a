/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The backing file name that commit and stream record when a chain gets shorter and the caller
 * names none: the base's name as the chain records it (in the header of the layer just above
 * base), as qemu-img users and libvirt keep it. An absolute name is written as it is. A relative
 * one is relative to the layer that records it; if the layer that records it from now on is in
 * another directory, it becomes the relative name that reaches the same file from there, worked
 * out from the names the chain was opened by (nothing is looked up: the daemon never resolves a
 * name, the opener did that with the caller's rights, and this only writes a string). */

#include "image.h"

/* 'holder' is the layer whose header is rewritten, 'above_base' the layer that names 'base' now
 * (they may be the same). Returns 0 and the name, or -ENOMEM. */
int backing_name_for(const Image *holder, const Image *above_base, const Image *base, char **ret);
