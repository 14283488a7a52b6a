/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <systemd/sd-daemon.h>

#include "bus-errors.h"
#include "bus-job.h"
#include "bus-signals.h"
#include "bus-manager.h"
#include "bus-polkit.h"
#include "bus-read-access.h"
#include "bus-sender.h"
#include "inhibitor.h"
#include "log.h"
#include "macro.h"
#include "manager.h"
#include "opener.h"
#include "persist.h"

/* Every job, each with a reference, to act on one after another: acting on one may free another
 * (a dismissal frees its job at once). NULL when out of memory (logged). */
static Job **hold_jobs(Manager *m, size_t *ret_n) {
        Job **jobs = calloc(job_registry_count(m->registry) + 1, sizeof(Job *));
        size_t n = 0;

        if (!jobs) {
                log_oom();
                return NULL;
        }
        for (Job *j = job_registry_first(m->registry); j; j = job_registry_next(j))
                jobs[n++] = job_ref(j);
        *ret_n = n;
        return jobs;
}

static void drop_jobs(Job **jobs, size_t n) {
        for (size_t i = 0; i < n; i++)
                job_unref(jobs[i]);
        free(jobs);
}

/* Shutting down with a state directory: jobs outlive the process (issue 15). Each job stops where
 * it is and keeps its status and its record (job_stop(): a running one after a last checkpoint,
 * so that it continues from there); once every job has stopped and every record is written, the
 * daemon exits (manager_release_stopped()). Nothing is cancelled: that is what Cancel() is for. */
static void manager_stop_jobs(Manager *m) {
        size_t n = 0;
        Job **jobs;

        log_info("Shutting down: %zu job(s) stop where they are, and continue when blockjobd starts again.",
                 job_registry_count(m->registry));
        (void) sd_notify(false, "STOPPING=1\nSTATUS=Stopping jobs where they are, for the next start...");

        jobs = hold_jobs(m, &n);
        for (size_t i = 0; jobs && i < n; i++)
                /* Not on the bus yet: its creation waits for its record, and fails (shutting down)
                 * when that returns. */
                if (job_get_userdata(jobs[i]))
                        job_stop(jobs[i]);
        drop_jobs(jobs, n);
        manager_changed(m);
}

static void manager_shutdown(Manager *m) {
        size_t n = 0;
        Job **jobs;

        if (m->shutting_down)
                return;
        m->shutting_down = true;
        if (m->persist) {
                manager_stop_jobs(m);
                return;
        }
        log_info("Shutting down: cancelling %zu job(s).", job_registry_count(m->registry));
        (void) sd_notify(false, "STOPPING=1\nSTATUS=Cancelling jobs...");

        jobs = hold_jobs(m, &n);
        for (size_t i = 0; jobs && i < n; i++) {
                Job *j = jobs[i];

                /* Not on the bus yet: its creation waits for its record, and fails (shutting
                 * down) when that returns. */
                if (!job_get_userdata(j))
                        continue;
                /* Cancelled jobs clean up after themselves (temporary files vanish); concluded ones
                 * only wait to be dismissed; aborting ones are on their way already. */
                if (job_status(j) == JOB_STATUS_CONCLUDED) {
                        (void) job_dismiss(j, NULL);
                        continue;
                }
                /* Whoever would have dismissed it is not going to. */
                job_set_auto_dismiss(j);
                if (job_accepts_verb(j, JOB_VERB_CANCEL))
                        (void) job_user_cancel(j, true, NULL);
        }
        drop_jobs(jobs, n);

        manager_changed(m);
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        manager_shutdown(userdata);
        return 0;
}

/* The bus went away (dbus-daemon restarted, or stopped: a reboot stops it before us): nobody can
 * reach the jobs any more, nor dismiss them, so the daemon shuts down as on SIGTERM (with a state
 * directory the jobs stop where they are and continue at the next start; without one they are
 * cancelled) and exits (a later call starts a new instance, as activation does). Calls waiting
 * for polkit will never be answered. */
static int on_disconnected(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;

        log_warning("Lost the connection to the bus: %s %zu job(s), then exiting.",
                    m->persist ? "stopping where they are" : "cancelling", job_registry_count(m->registry));
        bus_authorize_cancel_all(m);
        manager_shutdown(m);
        return 0;
}

static int on_name_lost(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;

        /* Everything sent to us before the name went is processed by now: bus order. */
        log_debug("Name %s released.", BUS_NAME);
        m->name_released = true;
        manager_changed(m);
        return 0;
}

/* The core's observer: the bus objects, and the records. Records first: the bus drops its object
 * when a job goes. */
static void on_status_changed(Job *j, JobStatus status, void *userdata) {
        Manager *m = userdata;

        if (m->persist)
                persist_status_changed(m->persist, j, status);
        bus_job_observer.status_changed(j, status, userdata);
}

static void on_io_error(Job *j, const JobIoError *e, void *userdata) {
        bus_job_observer.io_error(j, e, userdata);
}

static void on_changed(Job *j, JobChange what, void *userdata) {
        Manager *m = userdata;

        if (m->persist)
                persist_changed(m->persist, j, what);
        bus_job_observer.changed(j, what, userdata);
        if (what & JOB_CHANGE_STOPPED) {
                m->n_stopped++;
                manager_changed(m);
        }
}

static void on_empty(JobRegistry *r, void *userdata) {
        if (bus_job_observer.empty)
                bus_job_observer.empty(r, userdata);
}

static const JobObserver manager_observer = {
        .status_changed = on_status_changed,
        .io_error = on_io_error,
        .changed = on_changed,
        .empty = on_empty,
};

int manager_new(unsigned n_threads, uint64_t idle_timeout_usec, const char *state_dir, Manager **ret) {
        Manager *m;
        int r;

        m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        m->idle_timeout_usec = idle_timeout_usec;

        r = sd_event_default(&m->event);
        if (r < 0)
                goto fail;
        r = sd_event_add_signal(m->event, NULL, SIGTERM, on_signal, m);
        if (r >= 0)
                r = sd_event_add_signal(m->event, NULL, SIGINT, on_signal, m);
        if (r < 0)
                goto fail;

        r = worker_pool_new(m->event, n_threads, &m->pool);
        if (r < 0)
                goto fail;
        r = job_registry_new(&worker_pool_executor, m->pool, &m->registry);
        if (r < 0)
                goto fail;
        job_registry_set_observer(m->registry, &manager_observer, m);
        r = job_factory_new(m->event, m->pool, m->registry, &m->factory);
        if (r < 0)
                goto fail;
        r = inhibitor_new(m->event, &m->inhibitor);
        if (r < 0)
                goto fail;
        if (state_dir) {
                r = persist_new(m, state_dir, &m->persist);
                if (r < 0)
                        goto fail;
                log_info("Keeping job records in %s/jobs.", state_dir);
        } else
                log_info("No state directory (neither $STATE_DIRECTORY nor --state-dir=): jobs are not recorded, "
                         "and do not survive a restart.");
        /* Without records a checkpoint would be a flush that nobody uses. */
        job_registry_set_checkpoints(m->registry, m->persist);

        *ret = m;
        return 0;

fail:
        manager_free(m);
        return r;
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;

        /* Jobs hold threads' work and bus objects: the loop must have ended with none left. The
         * signal queue holds jobs (its exit source sent what it had). */
        m->release_source = sd_event_source_disable_unref(m->release_source);
        m->signals = bus_signals_free(m->signals);
        bus_authorize_cancel_all(m);
        bus_read_access_free(m);
        bus_senders_free(m);
        job_registry_free(m->registry);
        job_factory_free(m->factory);
        opener_servers_close();
        worker_pool_free(m->pool);
        m->persist = persist_free(m->persist);
        /* Before the bus: a call in flight holds it. */
        m->inhibitor = inhibitor_free(m->inhibitor);
        if (m->bus) {
                (void) sd_bus_flush(m->bus);
                sd_bus_flush_close_unref(m->bus);
        }
        sd_event_unref(m->event);
        free(m);
        return NULL;
}

int manager_connect(Manager *m) {
        int r;

        r = sd_bus_open_system(&m->bus);
        if (r < 0)
                return log_error_errno(r, "Failed to connect to the system bus: %m");

        r = sd_bus_error_add_map(bus_error_map);
        if (r < 0)
                return log_error_errno(r, "Failed to register the error map: %m");

        r = bus_manager_register(m);
        if (r < 0)
                return r;
        r = bus_read_access_install(m);
        if (r < 0)
                return log_error_errno(r, "Failed to add the read access filter: %m");
        r = bus_job_register(m);
        if (r < 0)
                return r;

        /* Before the name is taken: a caller never sees the daemon without its recorded jobs. Jobs
         * that continue are built again on the loop; the name waits for them
         * (manager_jobs_restored()). */
        bool restoring = m->persist && persist_restore(m->persist) > 0;

        r = sd_bus_match_signal_async(m->bus, NULL, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                      "org.freedesktop.DBus", "NameLost", on_name_lost, NULL, m);
        if (r < 0)
                return log_error_errno(r, "Failed to watch for the loss of our name: %m");

        /* Without its bus the service has no purpose (and no way to be told to stop): it shuts
         * down, cleanly, rather than exit at once with its jobs half done. */
        r = sd_bus_match_signal(m->bus, NULL, "org.freedesktop.DBus.Local", "/org/freedesktop/DBus/Local",
                                "org.freedesktop.DBus.Local", "Disconnected", on_disconnected, m);
        if (r < 0)
                return log_error_errno(r, "Failed to watch for the loss of the bus: %m");

        inhibitor_set_bus(m->inhibitor, m->bus);

        r = sd_bus_attach_event(m->bus, m->event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                return log_error_errno(r, "Failed to attach the bus to the event loop: %m");

        if (restoring) {
                m->name_waits_for_restore = true;
                return 0;
        }

        /* Synchronous on purpose: without the name there is nothing to serve. */
        r = sd_bus_request_name(m->bus, BUS_NAME, 0);
        if (r < 0)
                return log_error_errno(r, "Failed to acquire the name %s: %m", BUS_NAME);

        return 0;
}

static int on_name_acquired(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        Manager *m = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(reply);

        if (!e)
                return 0;
        log_error("Failed to acquire the name %s: %s", BUS_NAME, e->message ?: e->name);
        (void) sd_event_exit(m->event, -sd_bus_error_get_errno(e) ?: -EIO);
        return 0;
}

void manager_jobs_restored(Manager *m) {
        int r;

        if (!m->name_waits_for_restore)
                return;
        m->name_waits_for_restore = false;
        log_info("Every recorded job is back; taking the name %s.", BUS_NAME);
        r = sd_bus_request_name_async(m->bus, NULL, BUS_NAME, 0, on_name_acquired, m);
        if (r < 0) {
                log_error_errno(r, "Failed to acquire the name %s: %m", BUS_NAME);
                (void) sd_event_exit(m->event, r);
        }
}

bool manager_is_idle(const Manager *m) {
        /* Job objects, not registry entries: a job is still registered while its 'null' is being
         * announced, and that is exactly when the last one may make us idle. */
        return m->n_bus_jobs == 0 && m->n_requests == 0 && !m->pending_auths &&
               (!m->persist || persist_is_idle(m->persist));
}

static void manager_update_status(Manager *m) {
        /* Counted as statuses are announced (bus-job.c): no walk over every job per change. */
        const unsigned *counts = m->n_bus_jobs_by_status;
        size_t n = m->n_bus_jobs;

        if (n == 0) {
                (void) sd_notify(false, "STATUS=No jobs.");
                return;
        }

        /* "3 jobs: 2 running, 1 ready" */
        char status[512];
        int k = snprintf(status, sizeof(status), "STATUS=%zu job%s:", n, n == 1 ? "" : "s");
        const char *sep = " ";
        for (JobStatus s = 0; s < _JOB_STATUS_MAX && k > 0 && (size_t) k < sizeof(status); s++)
                if (counts[s] > 0) {
                        k += snprintf(status + k, sizeof(status) - k, "%s%u %s", sep, counts[s],
                                      job_status_to_string(s));
                        sep = ", ";
                }
        (void) sd_notify(false, status);
}

/* Shutting down with a state directory: once every job has stopped (job_stop()) and every record
 * is written, the jobs are let go without their records, which bring them back at the next start.
 * Counted, not walked: this is asked at every change. Deferred: this is noticed inside the core's
 * observer, where no job may be dropped. */
static bool manager_all_stopped(const Manager *m) {
        if (!m->shutting_down || !m->persist || m->n_requests > 0 || m->pending_auths ||
            !persist_is_idle(m->persist))
                return false;
        size_t n = job_registry_count(m->registry);
        return n > 0 && m->n_stopped >= n;
}

static int on_release_stopped(sd_event_source *s, void *userdata) {
        Manager *m = userdata;
        size_t n = 0;
        Job **jobs;

        m->release_source = sd_event_source_disable_unref(m->release_source);
        if (!manager_all_stopped(m))
                return 0;

        jobs = hold_jobs(m, &n);
        if (!jobs)
                return 0;
        log_info("Keeping the records of %zu job(s) for the next start.", n);
        for (size_t i = 0; i < n; i++) {
                persist_forget(m->persist, jobs[i]);
                (void) job_dismiss(jobs[i], NULL);
        }
        drop_jobs(jobs, n);
        manager_changed(m);
        return 0;
}

static void manager_release_stopped(Manager *m) {
        if (m->release_source || !manager_all_stopped(m))
                return;
        if (sd_event_add_defer(m->event, &m->release_source, on_release_stopped, m) < 0)
                log_oom();
}

void manager_changed(Manager *m) {
        manager_update_status(m);
        manager_release_stopped(m);

        if (!manager_is_idle(m))
                return;
        if (m->shutting_down || m->name_released)
                (void) sd_event_exit(m->event, 0);
}

int manager_run(Manager *m) {
        int r;

        (void) sd_notify(false, "READY=1\nSTATUS=No jobs.");
        log_info("Ready, serving %s.", BUS_NAME);

        for (;;) {
                r = sd_event_get_state(m->event);
                if (r < 0)
                        return r;
                if (r == SD_EVENT_FINISHED)
                        break;

                /* The idle timeout only runs while there is nothing to do; any event restarts it. */
                bool idle = manager_is_idle(m) && !m->shutting_down && !m->name_released && m->idle_timeout_usec > 0;
                r = sd_event_run(m->event, idle ? m->idle_timeout_usec : UINT64_MAX);
                if (r < 0)
                        return log_error_errno(r, "Event loop failed: %m");

                if (r == 0 && idle && manager_is_idle(m)) {
                        /* Give the name back, and exit once the bus confirms: calls already on
                         * their way to us are answered first, later ones start a new instance. */
                        log_info("Idle, releasing %s and exiting.", BUS_NAME);
                        (void) sd_notify(false, "STOPPING=1\nSTATUS=Exiting on idle.");
                        r = sd_bus_release_name_async(m->bus, NULL, BUS_NAME, NULL, NULL);
                        if (r < 0)
                                return log_error_errno(r, "Failed to release %s: %m", BUS_NAME);
                        m->idle_timeout_usec = 0;       /* once is enough */
                }
        }

        int code = 0;
        (void) sd_event_get_exit_code(m->event, &code);
        return code;
}
