/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The daemon's side of blockjobd-opener (opener-main.c), the helper that resolves a job's names
 * with the caller's rights and hands back descriptors (opener-protocol.h).
 *
 * Every call runs on the event loop, without blocking it: the request goes to the opener server
 * of the caller's identity (started if there is none), its answers are read as they arrive, and
 * the process that answered is killed in the background when the call ends. A call
 * has no deadline of its own: whoever starts it bounds it (a caller that stops its own opener
 * costs nothing but its own time). */

#include <stdbool.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "image.h"
#include "job-files.h"

/* Who to open as, and what. */
typedef struct OpenerRequest {
        uid_t uid;                      /* the gid is the user's primary group */
        const gid_t *groups;
        size_t n_groups;
        bool groups_from_user_database; /* groups unknown: the user's, from the database */
        const char *chain_path;         /* NULL: no chain */
        ImageFormat chain_format;       /* PROBE: probed (the image layer's rules apply) */
        bool chain_write;               /* the image is written (commit, stream) */
        const char *target_path;        /* NULL: no target */
        bool target_overwrite;
        const char *target_resume_name; /* the unfinished target of a job that continues after a
                                         * restart, under this hidden name next to target_path */
} OpenerRequest;

typedef struct OpenerCall OpenerCall;

/* The answer, once: r < 0 and a message, or 0 with everything asked for added to the JobFiles
 * given to opener_call_start(). A failure is the opener's own (-EACCES for a file the caller may
 * not open, naming it: about the caller's files, as the caller sees them), or, with 'ours' set,
 * the daemon's: it could not take the answer, for lack of descriptors (-EMFILE, -ENFILE) or memory
 * (-ENOMEM). The callback may free the call. */
typedef void (*OpenerDone)(OpenerCall *call, int r, bool ours, const char *error, void *userdata);

/* Runs blockjobd-opener ($BLOCKJOBD_OPENER, or the installed one) for 'req'; the files it opens
 * are added to 'files', which must outlive the call. */
int opener_call_start(sd_event *event, const OpenerRequest *req, JobFiles *files, OpenerDone done, void *userdata,
                      OpenerCall **ret);
/* Ends the call, answered or not (no callback then); the opener is killed. */
OpenerCall *opener_call_free(OpenerCall *call);

/* Openers of 'uid's requests that were killed but have not ended yet (stuck in a file system),
 * and servers of 'uid's that were told to go but have not ended yet. */
unsigned opener_unreaped(uid_t uid);

/* Tells every opener server to go, without waiting for them (at exit). */
void opener_servers_close(void);
