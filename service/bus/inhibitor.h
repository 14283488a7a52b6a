/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The logind inhibitor lock (issue 11): while at least one job is active, blockjobd holds one
 * "block" lock on sleep and shutdown, whose Why names the active jobs, so that the machine does
 * not go down under a backup and `systemd-inhibit --list` says why. Everything is asynchronous:
 * the lock is asked for with a call whose answer comes later, and nothing waits for logind.
 *
 *   - taken when the first job becomes active, released (its descriptor closed) when the last
 *     one stops being active; an answer that arrives after that is dropped, which closes it;
 *   - while it is held, a change in the set of active jobs takes a new lock with the new Why,
 *     then closes the old one, at most once per INHIBITOR_REFRESH_USEC;
 *   - without logind the daemon goes on, says so once, and tries again the next time a job
 *     becomes active when none was.
 *
 * The active jobs are counted from each status change (old and new status), never by walking the
 * jobs, and kept in a list to name them from: every update is O(1). */

#include <stdbool.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "job-lifecycle.h"
#include "list.h"

#define INHIBITOR_REFRESH_USEC (1000 * UINT64_C(1000))
/* The Why names at most this many jobs, then "and N more". */
#define INHIBITOR_WHY_JOBS_MAX 5U

typedef struct Inhibitor Inhibitor;

/* What the inhibitor knows of a job: its place in the list of active ones. Part of the job's bus
 * object; the strings must live as long as it is in the list. */
typedef struct InhibitorJob {
        const char *id;
        JobType type;
        bool active;
        LIST_FIELDS(struct InhibitorJob, active);
} InhibitorJob;

int inhibitor_new(sd_event *event, Inhibitor **ret);
/* Closes the lock and drops a call in flight. */
Inhibitor *inhibitor_free(Inhibitor *i);
/* The bus to ask logind on; NULL: none (no lock is asked for). */
void inhibitor_set_bus(Inhibitor *i, sd_bus *bus);

/* A job's status changed (created counts as a change from undefined). */
void inhibitor_job_status(Inhibitor *i, InhibitorJob *j, JobStatus status);
/* The job goes away: it is no longer active, whatever its last status. */
void inhibitor_job_remove(Inhibitor *i, InhibitorJob *j);

unsigned inhibitor_n_active(const Inhibitor *i);
/* "2 jobs running: b (mirror), a (backup)", newest first (free it); NULL when out of memory. */
char *inhibitor_why(const Inhibitor *i);
