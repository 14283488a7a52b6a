/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The journal's MESSAGE_IDs of blockjobd's entries (128 bits as 32 hex digits, as
 * SD_ID128_MAKE_STR() writes them), one per kind of event, so that the journal can be asked for
 * them: `journalctl MESSAGE_ID=fe5efbccdc7f4e4f823fd7f02ea795f9` lists the jobs that failed.
 * They are an interface: once published, an id never changes its meaning. */

#define BLOCKJOBD_MESSAGE_JOB_STARTED   "ae3b4aa1135f4c94a1d0100ea86c3710"  /* first time 'running' */
#define BLOCKJOBD_MESSAGE_JOB_FINISHED  "dbce1602f92d44fb958c2c611329ff2f"  /* 'concluded' without error */
#define BLOCKJOBD_MESSAGE_JOB_FAILED    "fe5efbccdc7f4e4f823fd7f02ea795f9"  /* 'concluded' with an error */
#define BLOCKJOBD_MESSAGE_JOB_CANCELLED "6de068fa21524650b4a405412a5c441a"  /* 'concluded' after a cancel */
#define BLOCKJOBD_MESSAGE_JOB_CHANGED   "60bc5181b85d44eebb2d16e7b814d2c8"  /* any other status change */
