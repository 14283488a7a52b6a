/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The progress display of --follow. On a terminal (stderr): one line, cut to the terminal's
 * width (TIOCGWINSZ, else $COLUMNS, else 80), redrawn in place (\r and clear to the end of the
 * line) at each change and every second, and cleared before a message or the final line, so
 * that nothing of it stays behind. Not on a terminal (stdout): a line at every status change,
 * and a progress line at most every 10 s and only after another 10 % (or every 5 minutes while
 * there is progress at all): a log that reads well. */

#include <stdbool.h>
#include <stddef.h>

#include "watch.h"

Progress *progress_new(void);
Progress *progress_free(Progress *p);
bool progress_is_tty(const Progress *p);

/* Something changed (progress, rate); 'status_changed' is the job whose status did, if one did. */
void progress_update(Progress *p, WatchJob *const *jobs, size_t n, const WatchJob *status_changed);
/* Every second, from the watch's timer. */
void progress_tick(Progress *p, WatchJob *const *jobs, size_t n);
/* Before printing anything else on the terminal: the bar goes. It comes back at the next update. */
void progress_clear(Progress *p);

/* One line per job, "<id>: <status>, 45.0% (1.2 GiB of 2.7 GiB), 55.0 MiB/s, 3h41m left",
 * its parts in bytes or in units. */
char *progress_describe(const WatchJob *j, bool with_rate);
