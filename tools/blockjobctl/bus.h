/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The connection, and finding jobs. */

#include <systemd/sd-bus.h>

/* The system bus, or --address=; the calls carry ALLOW_INTERACTIVE_AUTHORIZATION unless
 * --no-ask-password. */
int connect_bus(sd_bus **ret);

/* Before a call that polkit checks: the text agent, if wanted (see polkit-agent.h). */
void prepare_authorized_call(void);

/* The id in a job's object path: .../job/<escaped id>, or .../job/<escaped id>_u<uid>. */
int job_id_from_path(const char *path, char **ret);

/* The object path of the job the user names: an object path as it is; an id, the caller's own
 * job of that id, or else the one other user's job of that id. Says why not, and sets the exit
 * status. */
int job_path(sd_bus *bus, const char *id, char **ret);

/* "No job 'ID'." and the exit status of a refusal; returns -ENXIO. */
int no_job(const char *id);

/* ListJobs(), its reply entered: read "(ossstts)" entries from it. */
int list_jobs(sd_bus *bus, sd_bus_message **ret);
