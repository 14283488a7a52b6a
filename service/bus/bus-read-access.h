/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Who may read what is private to a job, its files' names: Source and Target, and the full text
 * of Error and IoErrorMessage (which name files): root, the job's owner, and whoever polkit grants
 * org.blockjobd.job.manage-other-users. Everyone else reads empty strings for Source and Target,
 * and only the text of the errno for Error (in ListJobs too) and IoErrorMessage. Everything else
 * about every job is public.
 *
 * A property getter must answer at once, and polkit cannot, so the question is asked before the
 * getter runs: a bus filter holds back a Get, GetAll, GetManagedObjects or ListJobs that reads another
 * user's job, asks polkit (never interactively: reading does not prompt), and then puts the
 * message back into the queue (sd_bus_enqueue_for_read()), where it is dispatched as usual with
 * the answer at hand. Answers are kept for a few seconds per caller connection. Signals
 * (InterfacesAdded) have no reader, and carry empty strings. */

#include <stdbool.h>
#include <sys/types.h>
#include <systemd/sd-bus.h>

typedef struct Manager Manager;

int bus_read_access_install(Manager *m);
void bus_read_access_free(Manager *m);

/* For a getter or method building 'reply': may the sender of the message being dispatched read
 * what is private to 'owner's job? Never for a signal. */
bool bus_read_access_private(Manager *m, uid_t owner, sd_bus_message *reply);
