/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bus-errors.h"
#include "bus-job.h"
#include "bus-polkit.h"
#include "bus-read-access.h"
#include "bus-sender.h"
#include "bus-signals.h"
#include "inhibitor.h"
#include "job-journal.h"
#include "log.h"
#include "macro.h"

/* CurrentProgress, Rate and ExpectedEndTime go out at most this often per job, so that a fast
 * job cannot flood the bus (PackageKit learnt this the hard way). */
#define PROGRESS_INTERVAL_USEC (100 * UINT64_C(1000))
/* Rate is measured over this window; below RATE_MIN_SPAN it is unknown (0). */
#define RATE_WINDOW_USEC (5 * UINT64_C(1000000))
#define RATE_MIN_SPAN_USEC (500 * UINT64_C(1000))
#define RATE_SAMPLES 64
/* I/O errors are logged and signalled at most this many times per window per job (a job told to
 * ignore errors may meet one at every retry); the rest are counted, and said with the next. */
#define IO_ERROR_WINDOW_USEC (10 * UINT64_C(1000000))
#define IO_ERRORS_PER_WINDOW 10U

typedef struct RateSample {
        uint64_t usec;
        uint64_t bytes;
} RateSample;

struct BusJob {
        Manager *manager;
        Job *job;
        char *path;
        char *source;
        char *target;
        char *transaction;
        uid_t owner;
        ImageFormat source_format;
        JobClaim *claim;
        InhibitorJob inhibit;           /* among the active jobs, for logind's lock */

        /* The last I/O error's message (IoErrorMessage), and how often they are told. */
        char *io_error_message;
        uint64_t io_error_window_usec;  /* start of the current window */
        unsigned io_errors_in_window;
        unsigned io_errors_suppressed;

        /* What subscribers were last told, to send only what changed. */
        BusSignal *last_signal;         /* our last signal in the manager's queue */
        JobStatus status_sent;
        bool started_logged;            /* the journal heard of its first 'running' */
        bool error_sent;
        uint64_t current_sent, total_sent, rate_sent, end_time_sent, speed_sent;

        /* Progress throttling. */
        uint64_t progress_sent_usec;
        bool progress_pending;
        sd_event_source *progress_timer;

        /* Measured rate and its estimate of the end, refreshed with each progress emission. */
        RateSample samples[RATE_SAMPLES];
        unsigned n_samples, first_sample;
        uint64_t rate;
        uint64_t end_time;
};

static uint64_t now_usec(clockid_t clock) {
        struct timespec ts;

        assert_se(clock_gettime(clock, &ts) == 0);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / NSEC_PER_USEC;
}

/* A signal that could not be sent; once the bus is gone (the daemon is shutting down), that is
 * no news. */
static void warn_unsent(Job *j, const char *what, int r) {
        if (r < 0 && r != -ENOTCONN)
                log_warning_errno(r, "Job '%s': failed to send %s: %m", job_id(j), what);
}

const char *bus_job_path(const BusJob *bj) {
        return bj->path;
}

uid_t bus_job_owner(const BusJob *bj) {
        return bj->owner;
}

static BusJob *bus_job_free(BusJob *bj) {
        if (!bj)
                return NULL;
        inhibitor_job_remove(bj->manager->inhibitor, &bj->inhibit);
        bus_signals_forget(&bj->last_signal);
        sd_event_source_disable_unref(bj->progress_timer);
        job_claim_free(bj->claim);
        free(bj->io_error_message);
        free(bj->path);
        free(bj->source);
        free(bj->target);
        free(bj->transaction);
        free(bj);
        return NULL;
}

/* ---- the journal ------------------------------------------------------------------------------ */

/* One entry per status change, 'created' included, with the fields and MESSAGE_IDs of
 * job-journal.h. */
static void bus_job_log_status(BusJob *bj, JobStatus status) {
        Job *j = bj->job;
        JobJournalInfo info = {
                .id = job_id(j),
                .owner = bj->owner,
                .type = job_type(j),
                .status = status,
                .path = bj->path,
                .error = job_error(j),
                .cancelled = job_is_cancelled(j),
                .first_running = status == JOB_STATUS_RUNNING && !bj->started_logged,
        };
        JobJournalEntry e;
        const char *type = job_type_to_string(job_type(j));
        unsigned owner = (unsigned) bj->owner;

        if (info.first_running)
                bj->started_logged = true;

        if (job_journal_entry_build(&info, &e) < 0) {
                job_journal_entry_done(&e);
                log_oom();
                return;
        }
        const char *const *fields = (const char *const *) e.fields;

        if (status == JOB_STATUS_CREATED)
                log_struct(e.priority, fields, "Job '%s' of user %u created: %s %s%s%s.", info.id, owner, type,
                           bj->source, *bj->target ? " → " : "", bj->target);
        else
                switch (e.event) {
                case JOB_JOURNAL_STARTED:
                        log_struct(e.priority, fields, "Job '%s' (%s) of user %u started.", info.id, type, owner);
                        break;
                case JOB_JOURNAL_FINISHED:
                        log_struct(e.priority, fields, "Job '%s' (%s) of user %u finished.", info.id, type, owner);
                        break;
                case JOB_JOURNAL_FAILED:
                        log_struct(e.priority, fields, "Job '%s' (%s) of user %u failed: %s", info.id, type, owner,
                                   strempty(info.error));
                        break;
                case JOB_JOURNAL_CANCELLED:
                        log_struct(e.priority, fields, "Job '%s' (%s) of user %u cancelled.", info.id, type, owner);
                        break;
                default:
                        log_struct(e.priority, fields, "Job '%s' is now %s%s%s.", info.id, job_status_to_string(status),
                                   info.error ? ": " : "", strempty(info.error));
                }
        job_journal_entry_done(&e);
}

/* ---- rate and expected end ------------------------------------------------------------------- */

static void bus_job_sample(BusJob *bj, uint64_t usec, uint64_t bytes) {
        unsigned i;

        if (bj->n_samples < RATE_SAMPLES)
                i = (bj->first_sample + bj->n_samples++) % RATE_SAMPLES;
        else {
                i = bj->first_sample;
                bj->first_sample = (bj->first_sample + 1) % RATE_SAMPLES;
        }
        bj->samples[i] = (RateSample) { usec, bytes };

        /* Drop what fell out of the window. */
        while (bj->n_samples > 1 && usec - bj->samples[bj->first_sample].usec > RATE_WINDOW_USEC) {
                bj->first_sample = (bj->first_sample + 1) % RATE_SAMPLES;
                bj->n_samples--;
        }
}

static void bus_job_estimate(BusJob *bj) {
        JobStatus s = job_status(bj->job);
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        uint64_t current = job_current_progress(bj->job), total = job_total_progress(bj->job);

        bus_job_sample(bj, now, current);
        bj->rate = 0;
        bj->end_time = 0;

        if (!IN_SET(s, JOB_STATUS_RUNNING, JOB_STATUS_READY))
                return;

        const RateSample *oldest = &bj->samples[bj->first_sample];
        uint64_t span = now - oldest->usec;
        if (span < RATE_MIN_SPAN_USEC || current <= oldest->bytes)
                return;

        bj->rate = (uint64_t) ((unsigned __int128) (current - oldest->bytes) * USEC_PER_SEC / span);
        if (bj->rate > 0 && total > current)
                bj->end_time = now_usec(CLOCK_REALTIME) +
                               (uint64_t) ((unsigned __int128) (total - current) * USEC_PER_SEC / bj->rate);
}

/* ---- sending changes ----------------------------------------------------------------------- */

/* Change signals go through the manager's queue (bus-signals.h): after the reply to the call that
 * caused them, in the order of the changes. Without a queue (no bus yet), they go at once. */

static void bus_job_queue_message(BusJob *bj, sd_bus_message *m, const char *what, int r) {
        BusSignals *q = bj->manager->signals;

        if (r >= 0 && !q) {
                r = sd_bus_send(NULL, m, NULL);
                sd_bus_message_unref(m);
        } else if (r >= 0)
                r = bus_signals_push_message(q, bj->job, &bj->last_signal, m);
        warn_unsent(bj->job, what, r);
}

static int bus_job_new_signal(BusJob *bj, const char *member, sd_bus_message **ret) {
        return sd_bus_message_new_signal(bj->manager->bus, ret, bj->path, BUS_JOB_INTERFACE, member);
}

/* StatusChanged carries the status it changed to: built now, whenever it goes. */
static void bus_job_queue_status(BusJob *bj, JobStatus status) {
        sd_bus_message *m = NULL;
        int r;

        r = bus_job_new_signal(bj, "StatusChanged", &m);
        if (r >= 0)
                r = sd_bus_message_append(m, "ss", job_id(bj->job), job_status_to_string(status));
        if (r < 0)
                m = sd_bus_message_unref(m);
        bus_job_queue_message(bj, m, "StatusChanged", r);
}

/* PropertiesChanged of 'names', read when it goes. 'direct': may go at once when nothing waits
 * in the queue (progress from the job's own timer, which no reply waits behind). */
static void bus_job_emit_full(BusJob *bj, char **names, bool direct) {
        BusSignals *q = bj->manager->signals;
        int r;

        if (!names[0])
                return;
        if (!q || (direct && !bus_signals_pending(q)))
                r = sd_bus_emit_properties_changed_strv(bj->manager->bus, bj->path, BUS_JOB_INTERFACE, names);
        else
                r = bus_signals_push_properties(q, bj->job, &bj->last_signal, bj->path, BUS_JOB_INTERFACE, names);
        warn_unsent(bj->job, "PropertiesChanged", r);
}

static void bus_job_emit(BusJob *bj, char **names) {
        bus_job_emit_full(bj, names, false);
}

static void bus_manager_jobs_changed(Manager *m) {
        char *names[] = { (char *) "Jobs", NULL };

        if (m->signals)
                (void) bus_signals_push_properties(m->signals, NULL, bus_signals_manager_last(m->signals),
                                                   BUS_MANAGER_PATH, BUS_MANAGER_INTERFACE, names);
        else
                (void) sd_bus_emit_properties_changed_strv(m->bus, BUS_MANAGER_PATH, BUS_MANAGER_INTERFACE, names);
}

static int bus_job_append_interfaces(BusJob *bj, sd_bus_message *reply, sd_bus_error *error);

/* InterfacesAdded, as sd-bus's object manager would send it, with the properties as they are now
 * (the object may be gone by the time it is sent). */
static void bus_job_queue_added(BusJob *bj) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        sd_bus_message *m = NULL;
        int r;

        r = sd_bus_message_new_signal(bj->manager->bus, &m, BUS_MANAGER_PATH, "org.freedesktop.DBus.ObjectManager",
                                      "InterfacesAdded");
        if (r >= 0)
                r = sd_bus_message_append_basic(m, 'o', bj->path);
        if (r >= 0)
                r = bus_job_append_interfaces(bj, m, &error);
        if (r < 0)
                m = sd_bus_message_unref(m);
        bus_job_queue_message(bj, m, "InterfacesAdded", r);
}

static const char *const standard_interfaces[] = {
        "org.freedesktop.DBus.Peer",
        "org.freedesktop.DBus.Introspectable",
        "org.freedesktop.DBus.Properties",
};

/* InterfacesRemoved, as sd-bus's object manager would send it: built now, sent once the object
 * is gone. */
static void bus_job_queue_removed(BusJob *bj) {
        sd_bus_message *m = NULL;
        int r;

        r = sd_bus_message_new_signal(bj->manager->bus, &m, BUS_MANAGER_PATH, "org.freedesktop.DBus.ObjectManager",
                                      "InterfacesRemoved");
        if (r >= 0)
                r = sd_bus_message_append(m, "o", bj->path);
        if (r >= 0)
                r = sd_bus_message_append(m, "as", 4, standard_interfaces[0], standard_interfaces[1],
                                          standard_interfaces[2], BUS_JOB_INTERFACE);
        if (r < 0)
                m = sd_bus_message_unref(m);
        bus_job_queue_message(bj, m, "InterfacesRemoved", r);
}

/* Send the progress-like properties that changed since last time, now. */
static void bus_job_flush_progress(BusJob *bj, bool direct) {
        char *names[5];
        size_t n = 0;

        bj->progress_pending = false;
        bj->progress_sent_usec = now_usec(CLOCK_MONOTONIC);
        (void) sd_event_source_set_enabled(bj->progress_timer, SD_EVENT_OFF);
        bus_job_estimate(bj);

        if (bj->current_sent != job_current_progress(bj->job)) {
                bj->current_sent = job_current_progress(bj->job);
                names[n++] = (char *) "CurrentProgress";
        }
        if (bj->total_sent != job_total_progress(bj->job)) {
                bj->total_sent = job_total_progress(bj->job);
                names[n++] = (char *) "TotalProgress";
        }
        if (bj->rate_sent != bj->rate) {
                bj->rate_sent = bj->rate;
                names[n++] = (char *) "Rate";
        }
        if (bj->end_time_sent != bj->end_time) {
                bj->end_time_sent = bj->end_time;
                names[n++] = (char *) "ExpectedEndTime";
        }
        names[n] = NULL;
        bus_job_emit_full(bj, names, direct);
}

static int on_progress_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        bus_job_flush_progress(userdata, true);
        return 0;
}

static void bus_job_progress_changed(BusJob *bj) {
        uint64_t now = now_usec(CLOCK_MONOTONIC), due = bj->progress_sent_usec + PROGRESS_INTERVAL_USEC;
        int r;

        /* The total changes rarely (a mirror's source grows dirty): it goes out at once. */
        if (bj->total_sent != job_total_progress(bj->job)) {
                bj->total_sent = job_total_progress(bj->job);
                bus_job_emit_full(bj, (char *[]) { (char *) "TotalProgress", NULL }, true);
        }

        if (now >= due) {
                bus_job_flush_progress(bj, true);
                return;
        }
        if (bj->progress_pending)
                return;                 /* the timer is armed already */

        bj->progress_pending = true;
        if (!bj->progress_timer) {
                r = sd_event_add_time(bj->manager->event, &bj->progress_timer, CLOCK_MONOTONIC, due, 1000,
                                      on_progress_timer, bj);
                if (r < 0) {
                        log_warning_errno(r, "Job '%s': cannot throttle progress, sending now: %m", job_id(bj->job));
                        bus_job_flush_progress(bj, true);
                        return;
                }
                (void) sd_event_source_set_description(bj->progress_timer, "job-progress");
        } else {
                (void) sd_event_source_set_time(bj->progress_timer, due);
        }
        (void) sd_event_source_set_enabled(bj->progress_timer, SD_EVENT_ONESHOT);
}

static void on_status_changed(Job *j, JobStatus status, void *userdata) {
        BusJob *bj = job_get_userdata(j);
        Manager *m = userdata;
        char *names[4];
        size_t n = 0;

        /* 'created' is announced by bus_job_attach(), once the object exists. */
        if (!bj)
                return;

        /* The daemon is exiting and the job continues at its next start (job_stop()): it is not
         * gone, so nobody is told it is (no 'null', no InterfacesRemoved); its object goes with
         * the daemon's name, and comes back at the same path. */
        if (status == JOB_STATUS_NULL && job_is_stopped(j)) {
                log_info("Job '%s' of user %u stopped where it is (%s); it comes back when blockjobd starts again.",
                         job_id(j), (unsigned) bj->owner, job_status_to_string(bj->status_sent));
                assert(m->n_bus_jobs_by_status[bj->status_sent] > 0);
                m->n_bus_jobs_by_status[bj->status_sent]--;
                job_set_userdata(j, NULL);
                bus_job_free(bj);
                m->n_bus_jobs--;
                manager_changed(m);
                return;
        }

        bus_job_log_status(bj, status);
        inhibitor_job_status(m->inhibitor, &bj->inhibit, status);

        /* Progress held back by the throttle goes out first, so that a client sees where the
         * job got to when it changed status: 100 % on reaching ready, for one. */
        if (bj->progress_pending || (IN_SET(bj->status_sent, JOB_STATUS_RUNNING, JOB_STATUS_READY) &&
                                     !IN_SET(status, JOB_STATUS_RUNNING, JOB_STATUS_READY)))
                bus_job_flush_progress(bj, false);
        assert(m->n_bus_jobs_by_status[bj->status_sent] > 0);
        m->n_bus_jobs_by_status[bj->status_sent]--;
        if (status != JOB_STATUS_NULL)
                m->n_bus_jobs_by_status[status]++;
        bj->status_sent = status;

        bus_job_queue_status(bj, status);

        /* Its files and memory are free for others once it is done with them. */
        if (status == JOB_STATUS_CONCLUDED)
                job_claim_end(bj->claim);

        if (status == JOB_STATUS_NULL) {
                bus_job_queue_removed(bj);
                job_set_userdata(j, NULL);
                bus_job_free(bj);
                m->n_bus_jobs--;
                bus_manager_jobs_changed(m);
                manager_changed(m);
                return;
        }

        names[n++] = (char *) "Status";
        names[n++] = (char *) "AllowedVerbs";
        if (!bj->error_sent && job_error(j)) {
                bj->error_sent = true;
                names[n++] = (char *) "Error";
        }
        names[n] = NULL;
        bus_job_emit(bj, names);
        manager_changed(m);
}

/* Whether this error is to be told, at most IO_ERRORS_PER_WINDOW per window. */
static bool io_error_ratelimit(BusJob *bj) {
        uint64_t now = now_usec(CLOCK_MONOTONIC);

        if (now - bj->io_error_window_usec >= IO_ERROR_WINDOW_USEC) {
                bj->io_error_window_usec = now;
                bj->io_errors_in_window = 0;
        }
        if (bj->io_errors_in_window >= IO_ERRORS_PER_WINDOW) {
                bj->io_errors_suppressed++;
                return false;
        }
        bj->io_errors_in_window++;
        return true;
}

static void on_io_error(Job *j, const JobIoError *e, void *userdata) {
        BusJob *bj = job_get_userdata(j);
        const char *message = e->message ?: strerror(-e->error);
        char *copy;
        int r;

        if (!bj)
                return;

        copy = strdup(message);
        if (copy) {
                free(bj->io_error_message);
                bj->io_error_message = copy;
        }
        /* The core tells ignored errors in bursts, and counts those it did not tell. */
        bj->io_errors_suppressed += e->suppressed;
        if (!io_error_ratelimit(bj))
                return;

        if (bj->io_errors_suppressed > 0)
                log_warning("Job '%s': %s error (%s): %s (%u more suppressed)", job_id(j), e->is_read ? "read" : "write",
                            job_error_action_to_string(e->action), message, bj->io_errors_suppressed);
        else
                log_warning("Job '%s': %s error (%s): %s", job_id(j), e->is_read ? "read" : "write",
                            job_error_action_to_string(e->action), message);
        bj->io_errors_suppressed = 0;

        /* A broadcast has no reader to check: it carries the errno's text only, the message
         * (which names files) is IoErrorMessage, for those who may read it. */
        sd_bus_message *signal = NULL;
        r = bus_job_new_signal(bj, "IoError", &signal);
        if (r >= 0)
                r = sd_bus_message_append(signal, "sss", e->is_read ? "read" : "write",
                                          job_error_action_to_string(e->action), strerror(-e->error));
        if (r < 0)
                signal = sd_bus_message_unref(signal);
        bus_job_queue_message(bj, signal, "IoError", r);
        bus_job_emit(bj, (char *[]) { (char *) "IoErrorMessage", NULL });
}

static void on_changed(Job *j, JobChange what, void *userdata) {
        BusJob *bj = job_get_userdata(j);

        if (!bj)
                return;
        if (what & JOB_CHANGE_PROGRESS)
                bus_job_progress_changed(bj);
        /* SetSpeed() with the speed it has changes nothing to tell. */
        if ((what & JOB_CHANGE_SPEED) && bj->speed_sent != job_speed(j)) {
                bj->speed_sent = job_speed(j);
                bus_job_emit(bj, (char *[]) { (char *) "Speed", NULL });
        }
        if (what & JOB_CHANGE_IO_STATUS)
                bus_job_emit(bj, (char *[]) { (char *) "IoStatus", NULL });
        /* Pause and Resume follow the user pause, which can change without a status change. */
        if (what & JOB_CHANGE_USER_PAUSED)
                bus_job_emit(bj, (char *[]) { (char *) "AllowedVerbs", NULL });
}

const JobObserver bus_job_observer = {
        .status_changed = on_status_changed,
        .io_error = on_io_error,
        .changed = on_changed,
};

static int job_path(uid_t owner, const char *id, char **ret) {
        _cleanup_free_ char *encoded = NULL;
        int r;

        r = sd_bus_path_encode(BUS_JOB_PREFIX, id, &encoded);
        if (r < 0)
                return r;
        if (owner == 0) {
                *ret = TAKE_PTR(encoded);
                return 0;
        }
        return asprintf(ret, "%s_u%u", encoded, (unsigned) owner) < 0 ? -ENOMEM : 0;
}

int bus_job_attach(Manager *m, Job *j, const BusJobInfo *info, BusJob **ret) {
        BusJob *bj;
        int r;

        assert(!job_get_userdata(j));

        bj = calloc(1, sizeof(*bj));
        if (!bj)
                return -ENOMEM;
        *bj = (BusJob) {
                .manager = m,
                .job = j,
                .owner = info->owner,
                .source_format = info->source_format,
                .status_sent = job_status(j),
                .inhibit = { .id = job_id(j), .type = job_type(j) },
                .current_sent = job_current_progress(j),
                .total_sent = job_total_progress(j),
                .speed_sent = job_speed(j),
        };
        bj->source = strdup(strempty(info->source));
        bj->target = strdup(strempty(info->target));
        bj->transaction = strdup(strempty(info->transaction));
        if (!bj->source || !bj->target || !bj->transaction) {
                bus_job_free(bj);
                return -ENOMEM;
        }
        r = job_path(info->owner, job_id(j), &bj->path);
        if (r < 0) {
                bus_job_free(bj);
                return r;
        }
        bj->claim = info->claim;

        job_set_userdata(j, bj);
        m->n_bus_jobs++;
        m->n_bus_jobs_by_status[bj->status_sent]++;

        bus_job_queue_added(bj);
        bus_job_queue_status(bj, job_status(j));
        bus_manager_jobs_changed(m);
        bus_job_log_status(bj, job_status(j));

        if (ret)
                *ret = bj;
        return 0;
}

/* ---- properties ---------------------------------------------------------------------------- */

#define JOB(userdata) (((BusJob *) (userdata))->job)

static int property_get_id(sd_bus *bus, const char *path, const char *interface, const char *property,
                           sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "s", job_id(JOB(userdata)));
}

static int property_get_type(sd_bus *bus, const char *path, const char *interface, const char *property,
                             sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "s", job_type_to_string(job_type(JOB(userdata))));
}

static int property_get_status(sd_bus *bus, const char *path, const char *interface, const char *property,
                               sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "s", job_status_to_string(job_status(JOB(userdata))));
}

static int property_get_current(sd_bus *bus, const char *path, const char *interface, const char *property,
                                sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "t", job_current_progress(JOB(userdata)));
}

static int property_get_total(sd_bus *bus, const char *path, const char *interface, const char *property,
                              sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "t", job_total_progress(JOB(userdata)));
}

const char *bus_job_error_for_reader(BusJob *bj, sd_bus_message *reply) {
        Job *j = bj->job;

        if (!job_error(j))
                return "";
        if (bus_read_access_private(bj->manager, bj->owner, reply))
                return job_error(j);
        /* Others learn that it failed, and how, but not on which files. */
        return strerror(-(job_ret(j) ?: EIO));
}

static int property_get_error(sd_bus *bus, const char *path, const char *interface, const char *property,
                              sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "s", bus_job_error_for_reader(userdata, reply));
}

static int property_get_io_error_message(sd_bus *bus, const char *path, const char *interface,
                                         const char *property, sd_bus_message *reply, void *userdata,
                                         sd_bus_error *error) {
        BusJob *bj = userdata;
        const char *value = strempty(bj->io_error_message);

        if (*value && !bus_read_access_private(bj->manager, bj->owner, reply))
                value = "Input/output error";
        return sd_bus_message_append(reply, "s", value);
}

static int property_get_source_format(sd_bus *bus, const char *path, const char *interface, const char *property,
                                      sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        BusJob *bj = userdata;
        return sd_bus_message_append(reply, "s", image_format_to_string(bj->source_format));
}

static int property_get_speed(sd_bus *bus, const char *path, const char *interface, const char *property,
                              sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "t", job_speed(JOB(userdata)));
}

static int property_get_auto_finalize(sd_bus *bus, const char *path, const char *interface, const char *property,
                                      sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "b", job_auto_finalize(JOB(userdata)));
}

/* Source and Target: other users' paths are theirs to know (see bus-read-access.h). */
static int property_get_path(sd_bus *bus, const char *path, const char *interface, const char *property,
                             sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        BusJob *bj = userdata;
        const char *value = strcmp(property, "Source") == 0 ? bj->source : bj->target;

        if (!bus_read_access_private(bj->manager, bj->owner, reply))
                value = "";
        return sd_bus_message_append(reply, "s", strempty(value));
}

static int property_get_auto_dismiss(sd_bus *bus, const char *path, const char *interface, const char *property,
                                     sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "b", job_auto_dismiss(JOB(userdata)));
}

/* A verb the job takes now: QEMU's table by status (job_accepts_verb()), less the two its user
 * pause decides, which QEMU refuses although the table allows them: Pause of a job its user has
 * paused ("Job is already paused") and Resume of one no user paused ("Can't resume a job that was
 * not paused"). A client then offers exactly these. */
static bool job_takes_verb(Job *j, JobVerb v) {
        if (!job_accepts_verb(j, v))
                return false;
        if (v == JOB_VERB_PAUSE)
                return !job_is_user_paused(j);
        if (v == JOB_VERB_RESUME)
                return job_is_user_paused(j);
        return true;
}

static int property_get_allowed_verbs(sd_bus *bus, const char *path, const char *interface, const char *property,
                                      sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        int r;

        r = sd_bus_message_open_container(reply, 'a', "s");
        if (r < 0)
                return r;
        for (JobVerb v = 0; v < _JOB_VERB_MAX; v++)
                if (job_takes_verb(JOB(userdata), v)) {
                        r = sd_bus_message_append(reply, "s", job_verb_to_string(v));
                        if (r < 0)
                                return r;
                }
        return sd_bus_message_close_container(reply);
}

static int property_get_io_status(sd_bus *bus, const char *path, const char *interface, const char *property,
                                  sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "s", job_io_status_to_string(job_io_status(JOB(userdata))));
}

/* ---- methods -------------------------------------------------------------------------------- */

/* A verb, checked with polkit first: its own action, and manage-other-users as well when the
 * caller did not create the job. The answer may take long (an authentication agent), and the job
 * may be gone by then, its id taken by a new job, of another owner even: the verb acts on the
 * very job it was authorized for (the request holds it), or on nothing. */
typedef int (*VerbCall)(Job *j, sd_bus_message *m, uint64_t arg, char **ret_error);

typedef struct VerbRequest {
        Manager *manager;
        Job *job;
        VerbCall call;
        uint64_t arg;
} VerbRequest;

static void verb_request_free(void *userdata) {
        VerbRequest *req = userdata;

        if (!req)
                return;
        job_unref(req->job);
        free(req);
}

static int verb_authorized(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        VerbRequest *req = userdata;
        _cleanup_free_ char *message = NULL;
        BusJob *bj = bus_job_find_by_path(req->manager, sd_bus_message_get_path(m));
        int r;

        if (!bj || bj->job != req->job) {
                verb_request_free(req);
                return sd_bus_error_set(error, BUS_ERROR_NO_SUCH_JOB, "Job not found");
        }

        /* The job (and this object) may be gone once the verb ran, after Dismiss for one: only
         * the message is used afterwards. A call that returns > 0 has taken the message, to
         * answer it itself. */
        r = req->call(req->job, m, req->arg, &message);
        verb_request_free(req);
        if (r < 0)
                return bus_error_from_core(error, r, message);
        if (r > 0)
                return 1;               /* the call answers later */
        return sd_bus_reply_method_return(m, NULL);
}

static int authorize_verb(sd_bus_message *m, BusJob *bj, const char *verb, VerbCall call, uint64_t arg,
                          sd_bus_error *error) {
        char action[64], owner[16];
        VerbRequest *req;
        uid_t uid;
        int r;

        r = bus_sender_uid(bj->manager, m, &uid, error);
        if (r < 0)
                return r;

        snprintf(action, sizeof(action), "org.blockjobd.job.%s", verb);
        snprintf(owner, sizeof(owner), "%u", (unsigned) bj->owner);
        BusAuthCheck checks[2] = {
                { .action = action,
                  .details = { "job-id", job_id(bj->job), "job-type", job_type_to_string(job_type(bj->job)),
                               "owner-uid", owner } },
        };
        checks[1] = checks[0];
        checks[1].action = "org.blockjobd.job.manage-other-users";

        req = malloc(sizeof(*req));
        if (!req)
                return -ENOMEM;
        *req = (VerbRequest) { .manager = bj->manager, .job = job_ref(bj->job), .call = call, .arg = arg };
        return bus_authorize(bj->manager, m, uid, checks, uid == bj->owner ? 1 : 2, verb_authorized, req,
                             verb_request_free, error);
}

static int call_pause(Job *j, sd_bus_message *m, uint64_t arg, char **ret_error) {
        return job_user_pause(j, ret_error);
}

static int call_resume(Job *j, sd_bus_message *m, uint64_t arg, char **ret_error) {
        return job_user_resume(j, ret_error);
}

static int call_cancel(Job *j, sd_bus_message *m, uint64_t arg, char **ret_error) {
        /* job-cancel: always a force cancel. */
        return job_user_cancel(j, true, ret_error);
}

/* As QEMU's job-complete: answered once the job was asked to complete, not once it has. */
static int call_complete(Job *j, sd_bus_message *m, uint64_t arg, char **ret_error) {
        return job_complete(j, ret_error);
}

/* The job is gone (status null, object removed) before the answer, as with QEMU's job-dismiss. */
static int call_dismiss(Job *j, sd_bus_message *m, uint64_t arg, char **ret_error) {
        return job_dismiss(j, ret_error);
}

static void finalize_done(void *userdata) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = userdata;
        int r;

        r = sd_bus_reply_method_return(m, NULL);
        if (r < 0 && r != -ENOTCONN)
                log_warning_errno(r, "Failed to answer Finalize(): %m");
}

/* QEMU's job-finalize returns once the whole transaction has been published or rolled back, every
 * member concluded; here that work runs on the workers, so the answer waits for the core to say
 * the transaction has ended. The loop goes on meanwhile. A Status read after the answer is never
 * "pending", so `finalize` followed by `wait` cannot be told to finalize again. */
static int call_finalize(Job *j, sd_bus_message *m, uint64_t arg, char **ret_error) {
        int r;

        r = job_finalize_notify(j, finalize_done, sd_bus_message_ref(m), ret_error);
        if (r < 0) {
                sd_bus_message_unref(m);
                return r;
        }
        return 1;
}

static int call_set_speed(Job *j, sd_bus_message *m, uint64_t arg, char **ret_error) {
        return job_set_speed(j, arg, ret_error);
}

static int method_pause(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return authorize_verb(m, userdata, "pause", call_pause, 0, error);
}

static int method_resume(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return authorize_verb(m, userdata, "resume", call_resume, 0, error);
}

static int method_cancel(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return authorize_verb(m, userdata, "cancel", call_cancel, 0, error);
}

static int method_complete(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return authorize_verb(m, userdata, "complete", call_complete, 0, error);
}

static int method_dismiss(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return authorize_verb(m, userdata, "dismiss", call_dismiss, 0, error);
}

static int method_finalize(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return authorize_verb(m, userdata, "finalize", call_finalize, 0, error);
}

static int method_set_speed(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        uint64_t speed;
        int r;

        r = sd_bus_message_read(m, "t", &speed);
        if (r < 0)
                return r;
        return authorize_verb(m, userdata, "set-speed", call_set_speed, speed, error);
}

static const sd_bus_vtable job_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Id", "s", property_get_id, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Type", "s", property_get_type, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Status", "s", property_get_status, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("CurrentProgress", "t", property_get_current, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("TotalProgress", "t", property_get_total, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Error", "s", property_get_error, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Speed", "t", property_get_speed, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("AutoFinalize", "b", property_get_auto_finalize, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("AutoDismiss", "b", property_get_auto_dismiss, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Source", "s", property_get_path, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Target", "s", property_get_path, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Transaction", "s", NULL, offsetof(BusJob, transaction), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("OwnerUID", "u", NULL, offsetof(BusJob, owner), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("AllowedVerbs", "as", property_get_allowed_verbs, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("IoStatus", "s", property_get_io_status, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("IoErrorMessage", "s", property_get_io_error_message, 0,
                        SD_BUS_VTABLE_PROPERTY_EMITS_INVALIDATION),
        SD_BUS_PROPERTY("SourceFormat", "s", property_get_source_format, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Rate", "t", NULL, offsetof(BusJob, rate), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("ExpectedEndTime", "t", NULL, offsetof(BusJob, end_time), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),

        SD_BUS_METHOD("Pause", NULL, NULL, method_pause, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("Resume", NULL, NULL, method_resume, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("Cancel", NULL, NULL, method_cancel, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("Complete", NULL, NULL, method_complete, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("Dismiss", NULL, NULL, method_dismiss, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("Finalize", NULL, NULL, method_finalize, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("SetSpeed", SD_BUS_ARGS("t", bytes_per_second), SD_BUS_NO_RESULT, method_set_speed,
                                SD_BUS_VTABLE_UNPRIVILEGED),

        SD_BUS_SIGNAL_WITH_ARGS("StatusChanged", SD_BUS_ARGS("s", id, "s", status), 0),
        SD_BUS_SIGNAL_WITH_ARGS("IoError", SD_BUS_ARGS("s", operation, "s", action, "s", message), 0),
        SD_BUS_VTABLE_END
};

/* ---- GetManagedObjects ------------------------------------------------------------------------ */

/* Opens an interface's entry, {sa{sv}}, down to its property dictionary: the caller appends the
 * properties and closes both containers. */
static int open_interface(sd_bus_message *reply, const char *interface) {
        int r;

        r = sd_bus_message_open_container(reply, 'e', "sa{sv}");
        if (r < 0)
                return r;
        r = sd_bus_message_append_basic(reply, 's', interface);
        if (r < 0)
                return r;
        return sd_bus_message_open_container(reply, 'a', "{sv}");
}

static int close_interface(sd_bus_message *reply) {
        int r;

        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_message_close_container(reply);
}

/* An interface of the object that has no properties: sd-bus lists Peer, Introspectable and
 * Properties (standard_interfaces) for every object, and so do we. */
static int append_empty_interface(sd_bus_message *reply, const char *interface) {
        int r;

        r = open_interface(reply, interface);
        if (r < 0)
                return r;
        return close_interface(reply);
}

/* One property as sd-bus would put it in GetAll: from the vtable, with the same getters, so that
 * both can never differ. */
static int append_property(sd_bus *bus, BusJob *bj, const sd_bus_vtable *v, sd_bus_message *reply,
                           sd_bus_error *error) {
        void *u = (uint8_t *) bj + v->x.property.offset;
        int r;

        r = sd_bus_message_open_container(reply, 'e', "sv");
        if (r < 0)
                return r;
        r = sd_bus_message_append_basic(reply, 's', v->x.property.member);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'v', v->x.property.signature);
        if (r < 0)
                return r;
        if (v->x.property.get) {
                r = v->x.property.get(bus, bj->path, BUS_JOB_INTERFACE, v->x.property.member, reply, u, error);
                if (r >= 0 && sd_bus_error_is_set(error))
                        r = -sd_bus_error_get_errno(error);
        } else if (v->x.property.signature[0] == 's')
                r = sd_bus_message_append_basic(reply, 's', strempty(*(char **) u));
        else
                r = sd_bus_message_append_basic(reply, v->x.property.signature[0], u);
        if (r < 0)
                return r;
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_message_close_container(reply);
}

/* The job's entry of GetManagedObjects' answer, {oa{sa{sv}}}: what sd-bus's own object manager
 * sends, which walks every registered node and calls job_object_find() for each path; this
 * costs the properties only. */
static int bus_job_append_managed(BusJob *bj, sd_bus_message *reply, sd_bus_error *error) {
        int r;

        r = sd_bus_message_open_container(reply, 'e', "oa{sa{sv}}");
        if (r < 0)
                return r;
        r = sd_bus_message_append_basic(reply, 'o', bj->path);
        if (r < 0)
                return r;
        r = bus_job_append_interfaces(bj, reply, error);
        if (r < 0)
                return r;
        return sd_bus_message_close_container(reply);
}

/* The a{sa{sv}} of InterfacesAdded and of GetManagedObjects' entries. */
static int bus_job_append_interfaces(BusJob *bj, sd_bus_message *reply, sd_bus_error *error) {
        sd_bus *bus = bj->manager->bus;
        int r;

        r = sd_bus_message_open_container(reply, 'a', "{sa{sv}}");
        if (r < 0)
                return r;
        for (size_t k = 0; k < ELEMENTSOF(standard_interfaces); k++) {
                r = append_empty_interface(reply, standard_interfaces[k]);
                if (r < 0)
                        return r;
        }

        r = open_interface(reply, BUS_JOB_INTERFACE);
        if (r < 0)
                return r;
        for (const sd_bus_vtable *v = job_vtable + 1; v->type != _SD_BUS_VTABLE_END; v++) {
                if (!IN_SET(v->type, _SD_BUS_VTABLE_PROPERTY, _SD_BUS_VTABLE_WRITABLE_PROPERTY) ||
                    (v->flags & (SD_BUS_VTABLE_HIDDEN | SD_BUS_VTABLE_PROPERTY_EXPLICIT)))
                        continue;
                r = append_property(bus, bj, v, reply, error);
                if (r < 0)
                        return r;
        }
        r = close_interface(reply);
        if (r < 0)
                return r;
        return sd_bus_message_close_container(reply);
}

static int method_get_managed_objects(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        Manager *manager = userdata;
        int r;

        /* Everything else at the manager's path is sd-bus's to answer. */
        if (!sd_bus_message_is_method_call(m, "org.freedesktop.DBus.ObjectManager", "GetManagedObjects"))
                return 0;
        if (*strempty(sd_bus_message_get_signature(m, true)))
                return sd_bus_reply_method_errorf(m, SD_BUS_ERROR_INVALID_ARGS, "Expected no parameters");

        r = sd_bus_message_new_method_return(m, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "{oa{sa{sv}}}");
        if (r < 0)
                return r;
        for (Job *j = job_registry_first(manager->registry); j; j = job_registry_next(j)) {
                BusJob *bj = job_get_userdata(j);
                if (!bj)
                        continue;
                r = bus_job_append_managed(bj, reply, error);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

/* ---- objects ------------------------------------------------------------------------------- */

BusJob *bus_job_find_by_path(Manager *m, const char *path) {
        _cleanup_free_ char *id = NULL, *encoded = NULL;
        const char *suffix;
        uid_t owner = 0;
        Job *j;

        if (!path || strncmp(path, BUS_JOB_PREFIX "/", strlen(BUS_JOB_PREFIX "/")) != 0)
                return NULL;
        encoded = strdup(path);
        if (!encoded)
                return NULL;
        /* Other users' jobs end in _u<uid>, which no encoded id can hold. */
        suffix = strstr(encoded + strlen(BUS_JOB_PREFIX "/"), "_u");
        if (suffix) {
                char *end;
                unsigned long v;

                errno = 0;
                v = strtoul(suffix + 2, &end, 10);
                if (errno != 0 || end == suffix + 2 || *end || suffix[2] == '-' || v == 0 || v >= UINT32_MAX)
                        return NULL;
                owner = (uid_t) v;
                encoded[suffix - encoded] = 0;
        }
        if (sd_bus_path_decode(encoded, BUS_JOB_PREFIX, &id) <= 0)
                return NULL;
        j = job_registry_find(m->registry, owner, id);
        return j ? job_get_userdata(j) : NULL;
}

static int job_object_find(sd_bus *bus, const char *path, const char *interface, void *userdata, void **found,
                           sd_bus_error *error) {
        BusJob *bj = bus_job_find_by_path(userdata, path);

        if (!bj)
                return 0;
        *found = bj;
        return 1;
}

static int job_node_enumerator(sd_bus *bus, const char *path, void *userdata, char ***nodes, sd_bus_error *error) {
        Manager *m = userdata;
        char **l;
        size_t n = 0;

        l = calloc(m->n_bus_jobs + 1, sizeof(char *));
        if (!l)
                return -ENOMEM;
        for (Job *j = job_registry_first(m->registry); j; j = job_registry_next(j)) {
                BusJob *bj = job_get_userdata(j);
                if (!bj)
                        continue;
                assert(n < m->n_bus_jobs);
                l[n] = strdup(bj->path);
                if (!l[n]) {
                        while (n > 0)
                                free(l[--n]);
                        free(l);
                        return -ENOMEM;
                }
                n++;
        }
        *nodes = l;
        return 1;
}

int bus_job_register(Manager *m) {
        int r;

        r = bus_signals_new(m->event, m->bus, &m->signals);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the signal queue: %m");

        r = sd_bus_add_fallback_vtable(m->bus, NULL, BUS_JOB_PREFIX, BUS_JOB_INTERFACE, job_vtable, job_object_find, m);
        if (r < 0)
                return log_error_errno(r, "Failed to add the job vtable: %m");
        r = sd_bus_add_node_enumerator(m->bus, NULL, BUS_JOB_PREFIX, job_node_enumerator, m);
        if (r < 0)
                return log_error_errno(r, "Failed to add the job node enumerator: %m");
        /* Ahead of sd-bus's object manager, which stays registered for InterfacesAdded and
         * InterfacesRemoved (see method_get_managed_objects()). */
        r = sd_bus_add_object(m->bus, NULL, BUS_MANAGER_PATH, method_get_managed_objects, m);
        if (r < 0)
                return log_error_errno(r, "Failed to add GetManagedObjects(): %m");
        return 0;
}
