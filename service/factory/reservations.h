/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Which files the daemon's jobs use, and how: a file that a job writes (a target, and the name it
 * will be published under; a commit's base, the image whose backing file it rewrites and the
 * layers it drops; a stream's image) is that job's alone until it ends; files only read may be
 * shared. Files are told apart by identity, never by name (file-identity.h): the same inode, the
 * same block device, or a loop device and the file behind it; a name not published yet by the
 * directory it is in and the name. Hard links, symlinks and other spellings do not get around
 * it. Loop thread only. */

#include <stdbool.h>

#include "file-identity.h"

typedef struct Reservations Reservations;
typedef struct ReservationSet ReservationSet;

/* One file a job is about to use: 'id' is the file, or with 'entry' the directory that is to
 * hold it under that name. */
typedef struct FileClaim {
        FileIdentity id;
        char *entry;
        char *label;                    /* what the caller calls it */
        bool write;
} FileClaim;

void file_claim_done(FileClaim *c);

Reservations *reservations_new(void);
Reservations *reservations_free(Reservations *r);

/* The claims of one job, reserved together. 'holder' and 'kind' name the job in messages. */
ReservationSet *reservation_set_new(Reservations *r);
/* Takes the claims (they are moved out of 'claims'). */
int reservation_set_add(ReservationSet *s, FileClaim *claims, size_t n);
/* Does any claim of 's' conflict with what is reserved, or with the other sets in 'batch' (a
 * transaction's members, which must not conflict with each other either)? Returns -ETXTBSY and a
 * message naming the file and the job that has it, or 0. */
int reservation_set_check(ReservationSet *s, ReservationSet *const *batch, size_t n_batch, char **ret_error);
/* Reserves the claims for the job called 'holder' (a job id) of type 'kind'; or, with 'holder'
 * NULL, for a call of the daemon's that is no job, which 'kind' describes ("AddBitmap() call"). */
int reservation_set_commit(ReservationSet *s, const char *holder, const char *kind);
/* Releases whatever the set reserved, and frees it. */
ReservationSet *reservation_set_free(ReservationSet *s);
