/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inhibitor.h"
#include "log.h"
#include "macro.h"

#define LOGIND_NAME "org.freedesktop.login1"
#define LOGIND_PATH "/org/freedesktop/login1"
#define LOGIND_MANAGER_INTERFACE "org.freedesktop.login1.Manager"

/* Block, not delay: a job cannot finish within logind's InhibitDelayMaxSec= (5 s by default), and
 * an interrupted backup leaves nothing usable, so the honest answer is to keep the machine up and
 * say why; an administrator can still override it (systemctl poweroff -i), and then SIGTERM
 * cancels the jobs. */
#define INHIBIT_WHAT "sleep:shutdown"
#define INHIBIT_WHO "blockjobd"
#define INHIBIT_MODE "block"

/* Which statuses keep the machine busy: the job is doing, or about to do, I/O that must not be
 * cut short. Created, paused and standby jobs wait for someone; concluded and null are done. */
static const bool status_active[_JOB_STATUS_MAX] = {
        [JOB_STATUS_RUNNING]  = true,
        [JOB_STATUS_READY]    = true,
        [JOB_STATUS_WAITING]  = true,
        [JOB_STATUS_PENDING]  = true,
        [JOB_STATUS_ABORTING] = true,
};

struct Inhibitor {
        sd_event *event;
        sd_bus *bus;

        InhibitorJob *active;           /* newest first */
        unsigned n_active;

        int fd;                         /* the lock held, or -EBADF */
        sd_bus_slot *call;              /* an Inhibit() in flight */
        sd_event_source *refresh;       /* a new Why is due */
        sd_event_source *take;          /* the first lock is due, once the current call is answered */
        uint64_t asked_usec;            /* when the last Inhibit() went out */
        bool dirty;                     /* the active jobs changed since it went out */
        bool unavailable;               /* logind said no: wait for the next first active job */
        bool said_unavailable;          /* and that was logged, once for the daemon's life */
};

int inhibitor_new(sd_event *event, Inhibitor **ret) {
        Inhibitor *i;

        i = calloc(1, sizeof(*i));
        if (!i)
                return -ENOMEM;
        i->event = sd_event_ref(event);
        i->fd = -EBADF;
        *ret = i;
        return 0;
}

static void inhibitor_release(Inhibitor *i) {
        if (i->fd >= 0)
                log_debug("Releasing the sleep and shutdown inhibitor.");
        i->fd = safe_close(i->fd);
        /* An answer still on its way is dropped with the slot, and so is the descriptor in it:
         * logind sees the lock go as soon as it was made. */
        i->call = sd_bus_slot_unref(i->call);
        (void) sd_event_source_set_enabled(i->refresh, SD_EVENT_OFF);
        (void) sd_event_source_set_enabled(i->take, SD_EVENT_OFF);
        i->dirty = false;
}

Inhibitor *inhibitor_free(Inhibitor *i) {
        if (!i)
                return NULL;
        inhibitor_release(i);
        sd_event_source_disable_unref(i->refresh);
        sd_event_source_disable_unref(i->take);
        sd_event_unref(i->event);
        /* The jobs' entries are theirs; whatever is left of the list is forgotten with us. */
        free(i);
        return NULL;
}

void inhibitor_set_bus(Inhibitor *i, sd_bus *bus) {
        i->bus = bus;
}

unsigned inhibitor_n_active(const Inhibitor *i) {
        return i->n_active;
}

char *inhibitor_why(const Inhibitor *i) {
        char *why = NULL;
        size_t size = 0;
        FILE *f;
        unsigned k = 0;

        f = open_memstream(&why, &size);
        if (!f)
                return NULL;
        fprintf(f, "%u job%s running: ", i->n_active, i->n_active == 1 ? "" : "s");
        for (const InhibitorJob *j = i->active; j && k < INHIBITOR_WHY_JOBS_MAX; j = j->active_next, k++)
                fprintf(f, "%s%s (%s)", k > 0 ? ", " : "", j->id, job_type_to_string(j->type));
        if (i->n_active > k)
                fprintf(f, " and %u more", i->n_active - k);
        if (fclose(f) != 0) {
                free(why);
                return NULL;
        }
        return why;
}

static void inhibitor_schedule(Inhibitor *i);

static int on_inhibit_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        Inhibitor *i = userdata;
        const sd_bus_error *e;
        int fd, r;

        i->call = sd_bus_slot_unref(i->call);
        if (i->n_active == 0)
                return 0;               /* released meanwhile (not reached: the slot went then) */

        e = sd_bus_message_get_error(reply);
        if (e) {
                if (i->fd >= 0) {
                        /* The old lock still holds, with a Why that is out of date. */
                        log_debug("Could not refresh the inhibitor lock: %s", e->message);
                        return 0;
                }
                i->unavailable = true;
                if (!i->said_unavailable) {
                        i->said_unavailable = true;
                        log_notice("logind not available, sleep and shutdown are not inhibited while jobs run: %s",
                                   e->message ?: e->name);
                } else
                        log_debug("logind not available: %s", e->message ?: e->name);
                return 0;
        }

        r = sd_bus_message_read(reply, "h", &fd);
        if (r < 0) {
                log_warning_errno(r, "logind answered Inhibit() with something else than a descriptor: %m");
                return 0;
        }
        /* The message owns its descriptor, and goes away after this callback. */
        fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (fd < 0) {
                log_warning_errno(errno, "Could not keep the inhibitor lock: %m");
                return 0;
        }
        /* The new lock is in place before the old one goes: no moment without. */
        safe_close(i->fd);
        i->fd = fd;
        log_debug("Holding the sleep and shutdown inhibitor lock.");

        inhibitor_schedule(i);
        return 0;
}

static void inhibitor_take(Inhibitor *i) {
        _cleanup_free_ char *why = NULL;
        uint64_t now;
        int r;

        assert(!i->call);
        if (!i->bus || i->n_active == 0)
                return;

        why = inhibitor_why(i);
        if (!why) {
                log_oom();
                return;
        }
        r = sd_bus_call_method_async(i->bus, &i->call, LOGIND_NAME, LOGIND_PATH, LOGIND_MANAGER_INTERFACE, "Inhibit",
                                     on_inhibit_reply, i, "ssss", INHIBIT_WHAT, INHIBIT_WHO, why, INHIBIT_MODE);
        if (r < 0) {
                /* Once the bus is gone (the daemon is shutting down) that is no news. */
                log_full_errno(r == -ENOTCONN ? LOG_DEBUG : LOG_WARNING, r,
                               "Could not ask logind to inhibit sleep and shutdown: %m");
                return;
        }
        log_debug("Asking logind to inhibit sleep and shutdown: %s", why);
        if (sd_event_now(i->event, CLOCK_MONOTONIC, &now) >= 0)
                i->asked_usec = now;
        i->dirty = false;
}

static int on_refresh(sd_event_source *s, uint64_t usec, void *userdata) {
        Inhibitor *i = userdata;

        if (i->dirty && !i->call && i->fd >= 0)
                inhibitor_take(i);
        return 0;
}

/* A new Why once the last call is answered and a second has passed since it went out. */
static void inhibitor_schedule(Inhibitor *i) {
        uint64_t due = i->asked_usec + INHIBITOR_REFRESH_USEC;
        int r;

        if (!i->dirty || i->call || i->fd < 0)
                return;

        if (!i->refresh) {
                r = sd_event_add_time(i->event, &i->refresh, CLOCK_MONOTONIC, due, 0, on_refresh, i);
                if (r < 0) {
                        log_warning_errno(r, "Could not schedule the inhibitor's refresh: %m");
                        return;
                }
                (void) sd_event_source_set_description(i->refresh, "inhibitor-refresh");
        } else
                (void) sd_event_source_set_time(i->refresh, due);
        (void) sd_event_source_set_enabled(i->refresh, SD_EVENT_ONESHOT);
}

static int on_take(sd_event_source *s, void *userdata) {
        Inhibitor *i = userdata;

        if (!i->call && i->fd < 0)
                inhibitor_take(i);
        return 0;
}

/* The first lock is asked for from a defer source, not from the status change: that happens in
 * a Resume() handler, whose reply then goes first (see bus-signals.h). */
static void inhibitor_take_soon(Inhibitor *i) {
        int r;

        if (!i->take) {
                r = sd_event_add_defer(i->event, &i->take, on_take, i);
                if (r < 0) {
                        log_warning_errno(r, "Could not defer the inhibitor lock, asking now: %m");
                        inhibitor_take(i);
                        return;
                }
                (void) sd_event_source_set_description(i->take, "inhibitor-take");
        }
        (void) sd_event_source_set_enabled(i->take, SD_EVENT_ONESHOT);
}

static void inhibitor_set_active(Inhibitor *i, InhibitorJob *j, bool active) {
        if (j->active == active)
                return;
        j->active = active;
        if (active) {
                LIST_PREPEND(active, i->active, j);
                i->n_active++;
        } else {
                LIST_REMOVE(active, i->active, j);
                assert(i->n_active > 0);
                i->n_active--;
        }

        if (i->n_active == 0) {
                inhibitor_release(i);
                return;
        }
        if (active && i->n_active == 1) {
                /* The first active job: a lock now (and another try if logind said no before). */
                i->unavailable = false;
                if (!i->call && i->fd < 0) {
                        inhibitor_take_soon(i);
                        return;
                }
        }
        if (i->unavailable)
                return;
        i->dirty = true;
        inhibitor_schedule(i);
}

void inhibitor_job_status(Inhibitor *i, InhibitorJob *j, JobStatus status) {
        assert(status >= 0 && status < _JOB_STATUS_MAX);
        inhibitor_set_active(i, j, status_active[status]);
}

void inhibitor_job_remove(Inhibitor *i, InhibitorJob *j) {
        inhibitor_set_active(i, j, false);
}
