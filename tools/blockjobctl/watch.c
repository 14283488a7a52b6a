/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <signal.h>

#include "args.h"
#include "bus.h"
#include "progress.h"
#include "util.h"
#include "watch.h"

static const char *const outcome_names[_OUTCOME_MAX] = {
        [OUTCOME_NONE] = "none",
        [OUTCOME_SUCCEEDED] = "succeeded",
        [OUTCOME_FAILED] = "failed",
        [OUTCOME_CANCELLED] = "cancelled",
        [OUTCOME_READY] = "ready",
        [OUTCOME_PENDING] = "pending",
        [OUTCOME_STOPPED] = "stopped",
        [OUTCOME_PAUSED] = "paused",
        [OUTCOME_LOST] = "lost",
        [OUTCOME_INTERRUPTED] = "interrupted",
};

static const int outcome_exit_status[_OUTCOME_MAX] = {
        [OUTCOME_FAILED] = EXIT_JOB_FAILED,
        [OUTCOME_STOPPED] = EXIT_STOPPED,
        [OUTCOME_LOST] = EXIT_LOST,
        [OUTCOME_INTERRUPTED] = EXIT_INTERRUPTED,
};

const char *job_outcome_to_string(JobOutcome o) {
        return o >= 0 && o < _OUTCOME_MAX ? outcome_names[o] : NULL;
}

static bool word_in(const char *word, const char *list) {
        size_t n = strlen(word);

        if (!list || n == 0)
                return false;
        for (const char *p = list; (p = strstr(p, word)); p += n)
                if ((p == list || p[-1] == ' ') && (p[n] == ' ' || p[n] == 0))
                        return true;
        return false;
}

static void job_free(WatchJob *j) {
        if (!j)
                return;
        sd_bus_slot_unref(j->error_read);
        sd_bus_slot_unref(j->dismissing);
        free(j->path);
        free(j->raw_id);
        free(j->id);
        free(j->error);
        free(j->transaction);
        free(j);
}

Watch *watch_free(Watch *w) {
        if (!w)
                return NULL;
        for (size_t i = 0; i < ELEMENTSOF(w->slots); i++)
                sd_bus_slot_unref(w->slots[i]);
        for (size_t i = 0; i < w->n_jobs; i++)
                job_free(w->jobs[i]);
        free(w->jobs);
        progress_free(w->progress);
        if (w->bus && w->event)
                (void) sd_bus_detach_event(w->bus);
        sd_event_unref(w->event);
        free(w);
        return NULL;
}

static WatchJob *find_job(Watch *w, sd_bus_message *m) {
        const char *path = sd_bus_message_get_path(m);
        uint64_t cookie = 0;

        if (!path)
                return NULL;
        for (size_t i = 0; i < w->n_jobs; i++)
                if (streq(w->jobs[i]->path, path)) {
                        WatchJob *j = w->jobs[i];
                        /* Older than the state read, or after the job's end: nothing to do. */
                        if (j->outcome != OUTCOME_NONE || j->concluding)
                                return NULL;
                        if (sd_bus_message_get_cookie(m, &cookie) >= 0 && cookie < j->min_cookie)
                                return NULL;
                        return j;
                }
        return NULL;
}

static bool all_ended(Watch *w) {
        for (size_t i = 0; i < w->n_jobs; i++)
                if (w->jobs[i]->outcome == OUTCOME_NONE)
                        return false;
        return true;
}

static void redraw(Watch *w, const WatchJob *status_changed) {
        progress_update(w->progress, w->jobs, w->n_jobs, status_changed);
}

/* The string property NAME of the job, read now; NULL if it cannot be read (gone). */
static char *get_string(Watch *w, WatchJob *j, const char *name) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        char *s = NULL;

        if (sd_bus_get_property_string(w->bus, BUS_NAME, j->path, JOB_IFACE, name, &error, &s) < 0)
                return NULL;
        return s;
}

static void print_json_result(WatchJob *j) {
        fputs("{\"id\":", stdout);
        json_string(stdout, j->raw_id);
        printf(",\"object\":\"%s\",\"result\":\"%s\",\"status\":", j->path, job_outcome_to_string(j->outcome));
        json_string(stdout, j->status);
        fputs(",\"error\":", stdout);
        json_string(stdout, j->error ?: "");
        puts("}");
        fflush(stdout);
}

static const char *stays_listed(const WatchJob *j) {
        return j->dismiss ? " It stays listed once it ends, until `blockjobctl dismiss " : "";
}

/* What the job's end, or its waiting, means to the user, said once. */
static void report(Watch *w, WatchJob *j, const char *detail) {
        const char *ctl = program_invocation_short_name;

        progress_clear(w->progress);
        if (arg.json) {
                print_json_result(j);
                if (j->outcome != OUTCOME_STOPPED && j->outcome != OUTCOME_LOST && j->outcome != OUTCOME_INTERRUPTED)
                        return;
        }

        switch (j->outcome) {
        case OUTCOME_SUCCEEDED:
                if (!arg.json)
                        printf("Job '%s' finished successfully.\n", j->id);
                break;
        case OUTCOME_FAILED:
                if (!arg.json)
                        log_error("Job '%s' failed: %s", j->id, j->error ?: "unknown error");
                break;
        case OUTCOME_CANCELLED:
                if (!arg.json)
                        printf("Job '%s' was cancelled.\n", j->id);
                break;
        case OUTCOME_READY:
                if (streq(j->status, "standby"))
                        printf("Job '%s' is ready but paused (standby): run `%s resume %s`, then `%s complete %s` "
                               "to finish it.\n", j->id, ctl, j->id, ctl, j->id);
                else
                        printf("Job '%s' is ready: run `%s complete %s` to finish it%s.\n", j->id, ctl, j->id,
                               arg.until_ready ? "" : " (or use --complete)");
                break;
        case OUTCOME_PENDING:
                printf("Job '%s' is pending: run `%s finalize %s` to publish its result (%s was created with "
                       "--no-auto-finalize).\n", j->id, ctl, j->id, j->auto_finalize ? "a job of its transaction" : "it");
                break;
        case OUTCOME_STOPPED:
                log_error("Job '%s' is paused by an I/O error (IoStatus: %s)%s%s", j->id, j->io_status,
                          detail && *detail ? ": " : ".", detail ?: "");
                log_error("Fix the cause (a full disk: free space), then run `%s resume %s` to retry, or "
                          "`%s cancel %s`.%s%s%s", ctl, j->id, ctl, j->id, stays_listed(j), j->dismiss ? j->id : "",
                          j->dismiss ? "`." : "");
                break;
        case OUTCOME_PAUSED:
                break;
        case OUTCOME_LOST:
                log_error("%s", detail);
                break;
        case OUTCOME_INTERRUPTED:
                log_error("Job '%s' goes on in the background: `%s cancel %s` cancels it, `%s wait %s` waits for "
                          "its result.%s%s%s", j->id, ctl, j->id, ctl, j->id, stays_listed(j),
                          j->dismiss ? j->id : "", j->dismiss ? "`." : "");
                break;
        default:
                break;
        }
        fflush(stdout);
}

static void finish(Watch *w) {
        if (all_ended(w))
                (void) sd_event_exit(w->event, 0);
}

static void end_job(Watch *w, WatchJob *j, JobOutcome outcome, const char *detail) {
        if (j->outcome != OUTCOME_NONE)
                return;
        j->outcome = outcome;
        report(w, j, detail);
        finish(w);
}

/* The end of a concluded job, once its error is read and, if we made it not auto-dismiss, it is
 * dismissed. */
static void concluded_end(WatchJob *j) {
        if (j->error_read || j->dismissing)
                return;
        if (!j->error)
                end_job(j->watch, j, OUTCOME_SUCCEEDED, NULL);
        else if (j->cancelling && streq(j->error, "Operation canceled"))
                end_job(j->watch, j, OUTCOME_CANCELLED, NULL);
        else
                end_job(j->watch, j, OUTCOME_FAILED, NULL);
}

static int on_error_read(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        WatchJob *j = userdata;
        const char *s;

        j->error_read = sd_bus_slot_unref(j->error_read);
        /* Not readable (gone: it auto-dismissed): the signal's text stays. */
        if (!sd_bus_message_is_method_error(reply, NULL) && sd_bus_message_read(reply, "v", "s", &s) >= 0) {
                free(j->error);
                j->error = *s ? esc(s) : NULL;
        }
        concluded_end(j);
        return 0;
}

static int on_dismissed(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        WatchJob *j = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(reply);

        j->dismissing = sd_bus_slot_unref(j->dismissing);
        if (e && !sd_bus_error_has_name(e, SD_BUS_ERROR_UNKNOWN_OBJECT)) {
                _cleanup_free_ char *m = esc(e->message ?: strerror(sd_bus_message_get_errno(reply)));
                progress_clear(j->watch->progress);
                log_warning("Could not dismiss job '%s' after reading its result: %s", j->id, m);
        }
        concluded_end(j);
        return 0;
}

static void concluded(Watch *w, WatchJob *j) {
        int r;

        /* The whole message is the owner's to read (the signals carry the system's text only):
         * asked now, while the job is there; a job that auto-dismissed keeps the signal's. Then
         * it is dismissed, if we made it wait for that. Both go out at once: the daemon answers
         * a connection's calls in order, so the error is read before the job goes, and one round
         * trip does for both. What the job says meanwhile changes nothing: its end is in the
         * answers. */
        j->concluding = true;
        /* Not sent (out of memory, the bus gone): the signal's text stays, as for a job gone. */
        (void) sd_bus_call_method_async(w->bus, &j->error_read, BUS_NAME, j->path, "org.freedesktop.DBus.Properties",
                                        "Get", on_error_read, j, "ss", JOB_IFACE, "Error");
        if (j->dismiss) {
                prepare_authorized_call();
                r = sd_bus_call_method_async(w->bus, &j->dismissing, BUS_NAME, j->path, JOB_IFACE, "Dismiss",
                                             on_dismissed, j, NULL);
                if (r < 0) {
                        progress_clear(w->progress);
                        log_warning("Could not dismiss job '%s' after reading its result: %s", j->id, strerror(-r));
                }
        }
        concluded_end(j);
}

static void complete_job(Watch *w, WatchJob *j) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        int r;

        j->complete_sent = true;
        prepare_authorized_call();
        r = sd_bus_call_method(w->bus, BUS_NAME, j->path, JOB_IFACE, "Complete", &error, NULL, NULL);
        if (r < 0) {
                _cleanup_free_ char *e = esc(error.message ?: strerror(-r));
                progress_clear(w->progress);
                log_error("Failed to complete job '%s': %s", j->id, e);
        }
}

/* Whether a job of its transaction waits for Finalize(): then all wait in pending. */
static bool transaction_needs_finalize(Watch *w, WatchJob *j) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *path;

        if (!j->auto_finalize)
                return true;
        if (!j->transaction || !*j->transaction)
                return false;
        if (list_jobs(w->bus, &reply) < 0)
                return false;
        while (sd_bus_message_read(reply, "(ossstts)", &path, NULL, NULL, NULL, NULL, NULL, NULL) > 0) {
                _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
                _cleanup_free_ char *transaction = NULL;
                int auto_finalize = 1;

                if (sd_bus_get_property_string(w->bus, BUS_NAME, path, JOB_IFACE, "Transaction", &error,
                                               &transaction) < 0 || !streq(transaction, j->transaction))
                        continue;
                if (sd_bus_get_property_trivial(w->bus, BUS_NAME, path, JOB_IFACE, "AutoFinalize", &error, 'b',
                                                &auto_finalize) >= 0 && !auto_finalize)
                        return true;
        }
        return false;
}

/* The job is in j->status now: is that an end, or a wait for someone? 'initial': the state read
 * after the call, where the status the verb acted on is no news. */
static void status_reached(Watch *w, WatchJob *j, bool initial) {
        const char *s = j->status;

        if (initial && word_in(s, j->leaving))
                return;

        if (streq(s, "concluded")) {
                concluded(w, j);
                return;
        }
        if (streq(s, "null")) {
                _cleanup_free_ char *m = NULL;
                if (asprintf(&m, "Job '%s' vanished before its result could be read.", j->id) < 0)
                        oom();
                end_job(w, j, OUTCOME_LOST, m);
                return;
        }
        if (!streq(s, "paused"))
                j->user_paused_told = false;

        if (w->goal == WATCH_UNTIL_PAUSED) {
                if (streq(s, "paused") || streq(s, "standby"))
                        end_job(w, j, OUTCOME_PAUSED, NULL);
                return;
        }

        if (streq(s, "ready") || streq(s, "standby")) {
                if (arg.complete) {
                        if (!j->complete_sent)
                                complete_job(w, j);
                        return;
                }
                end_job(w, j, OUTCOME_READY, NULL);
                return;
        }
        if (streq(s, "pending")) {
                if (transaction_needs_finalize(w, j))
                        end_job(w, j, OUTCOME_PENDING, NULL);
                return;
        }
        if (streq(s, "paused")) {
                if (!streq(j->io_status, "ok") && *j->io_status) {
                        _cleanup_free_ char *message = get_string(w, j, "IoErrorMessage");
                        _cleanup_free_ char *e = message ? esc(message) : NULL;
                        end_job(w, j, OUTCOME_STOPPED, e);
                        return;
                }
                /* Paused by someone: it goes on when resumed. Said once, unless the bar shows it. */
                if (!j->user_paused_told && !progress_is_tty(w->progress)) {
                        progress_clear(w->progress);
                        fprintf(stderr, "Job '%s' is paused; waiting until it is resumed (`%s resume %s`).\n", j->id,
                                program_invocation_short_name, j->id);
                }
                j->user_paused_told = true;
        }
}

static int on_status_changed(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Watch *w = userdata;
        WatchJob *j = find_job(w, m);
        const char *id, *status;

        if (!j || sd_bus_message_read(m, "ss", &id, &status) < 0)
                return 0;
        _cleanup_free_ char *e = esc(status);
        snprintf(j->status, sizeof(j->status), "%s", e);
        if (!streq(status, "null"))
                redraw(w, j);
        status_reached(w, j, false);
        return 0;
}

static int read_properties(sd_bus_message *m, WatchJob *j, bool *io_status_changed) {
        const char *name;
        int r;

        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                static const struct {
                        const char *name;
                        size_t offset;
                } numbers[] = {
                        { "CurrentProgress", offsetof(WatchJob, current) },
                        { "TotalProgress", offsetof(WatchJob, total) },
                        { "Rate", offsetof(WatchJob, rate) },
                        { "ExpectedEndTime", offsetof(WatchJob, end_time) },
                };
                const char *s;
                bool done = false;
                int b;

                r = sd_bus_message_read(m, "s", &name);
                if (r < 0)
                        return r;
                for (size_t i = 0; i < ELEMENTSOF(numbers) && !done; i++)
                        if (streq(name, numbers[i].name)) {
                                r = sd_bus_message_read(m, "v", "t", (uint64_t *) ((char *) j + numbers[i].offset));
                                done = true;
                        }
                if (done)
                        ;
                else if (streq(name, "Error")) {
                        r = sd_bus_message_read(m, "v", "s", &s);
                        if (r >= 0) {
                                free(j->error);
                                j->error = *s ? esc(s) : NULL;
                        }
                } else if (streq(name, "IoStatus")) {
                        r = sd_bus_message_read(m, "v", "s", &s);
                        if (r >= 0) {
                                _cleanup_free_ char *e = esc(s);
                                snprintf(j->io_status, sizeof(j->io_status), "%s", e);
                                if (io_status_changed)
                                        *io_status_changed = true;
                        }
                } else if (streq(name, "Status") && !j->known) {
                        r = sd_bus_message_read(m, "v", "s", &s);
                        if (r >= 0) {
                                _cleanup_free_ char *e = esc(s);
                                snprintf(j->status, sizeof(j->status), "%s", e);
                        }
                } else if (streq(name, "Type") && !j->known) {
                        r = sd_bus_message_read(m, "v", "s", &s);
                        if (r >= 0) {
                                _cleanup_free_ char *e = esc(s);
                                snprintf(j->type, sizeof(j->type), "%s", e);
                        }
                } else if (streq(name, "Transaction") && !j->known) {
                        r = sd_bus_message_read(m, "v", "s", &s);
                        if (r >= 0) {
                                free(j->transaction);
                                j->transaction = strdup(s);
                                if (!j->transaction)
                                        oom();
                        }
                } else if (streq(name, "AutoFinalize") && !j->known) {
                        r = sd_bus_message_read(m, "v", "b", &b);
                        j->auto_finalize = b;
                } else if (streq(name, "AutoDismiss") && !j->known) {
                        r = sd_bus_message_read(m, "v", "b", &b);
                        j->auto_dismiss = b;
                } else
                        r = sd_bus_message_skip(m, "v");
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(m);
}

static int on_properties_changed(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Watch *w = userdata;
        WatchJob *j = find_job(w, m);
        bool io_status_changed = false;
        const char *iface;

        if (!j || sd_bus_message_read(m, "s", &iface) < 0 || !streq(iface, JOB_IFACE))
                return 0;
        if (read_properties(m, j, &io_status_changed) < 0)
                return 0;
        redraw(w, NULL);
        /* Stopped by an I/O error: the status may have said "paused" before IoStatus said why. */
        if (io_status_changed && streq(j->status, "paused"))
                status_reached(w, j, false);
        return 0;
}

static int on_name_owner_changed(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Watch *w = userdata;
        const char *name, *old_owner, *new_owner;

        if (sd_bus_message_read(m, "sss", &name, &old_owner, &new_owner) < 0 || !streq(name, BUS_NAME) ||
            !*old_owner)
                return 0;
        for (size_t i = 0; i < w->n_jobs; i++) {
                _cleanup_free_ char *message = NULL;
                WatchJob *j = w->jobs[i];
                if (j->outcome != OUTCOME_NONE)
                        continue;
                if (asprintf(&message, "blockjobd went away (it stopped or crashed) while job '%s' was %s: "
                             "the job is gone, and its result with it.", j->id, j->status) < 0)
                        oom();
                end_job(w, j, OUTCOME_LOST, message);
        }
        return 0;
}

static int on_disconnected(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Watch *w = userdata;

        for (size_t i = 0; i < w->n_jobs; i++)
                end_job(w, w->jobs[i], OUTCOME_LOST, "Lost the connection to the bus.");
        (void) sd_event_exit(w->event, 0);
        return 0;
}

static int on_io_error(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Watch *w = userdata;
        WatchJob *j = find_job(w, m);
        const char *operation, *action, *message;

        if (!j || sd_bus_message_read(m, "sss", &operation, &action, &message) < 0)
                return 0;
        /* "stop" is told when the job has paused; "report" by its end. "ignore" is worth a word. */
        if (streq(action, "ignore")) {
                _cleanup_free_ char *e_op = esc(operation), *e_message = esc(message);
                progress_clear(w->progress);
                log_warning("Job '%s': %s error, ignored (retrying): %s", j->id, e_op, e_message);
                redraw(w, NULL);
        }
        return 0;
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Watch *w = userdata;

        if (arg.cancel_on_interrupt && !w->interrupted) {
                w->interrupted = true;
                for (size_t i = 0; i < w->n_jobs; i++) {
                        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
                        WatchJob *j = w->jobs[i];
                        if (j->outcome != OUTCOME_NONE)
                                continue;
                        progress_clear(w->progress);
                        fprintf(stderr, "Cancelling job '%s' (interrupt again to stop waiting)...\n", j->id);
                        j->cancelling = true;
                        if (sd_bus_call_method(w->bus, BUS_NAME, j->path, JOB_IFACE, "Cancel", &error, NULL, NULL) < 0) {
                                _cleanup_free_ char *e = esc(error.message ?: "failed");
                                log_error("Failed to cancel job '%s': %s", j->id, e);
                        }
                }
                redraw(w, NULL);
                return 0;
        }
        w->interrupted = true;
        for (size_t i = 0; i < w->n_jobs; i++)
                end_job(w, w->jobs[i], OUTCOME_INTERRUPTED, NULL);
        (void) sd_event_exit(w->event, 0);
        return 0;
}

static int on_tick(sd_event_source *s, uint64_t usec, void *userdata) {
        Watch *w = userdata;

        progress_tick(w->progress, w->jobs, w->n_jobs);
        return sd_event_source_set_time_relative(s, 1000000);
}

static int on_match_installed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Watch *w = userdata;

        if (sd_bus_message_is_method_error(m, NULL) && w->match_error >= 0)
                w->match_error = sd_bus_message_get_errno(m) > 0 ? -sd_bus_message_get_errno(m) : -EIO;
        return 0;
}

int watch_new(sd_bus *bus, WatchGoal goal, Watch **ret) {
        Watch *w;
        int r;

        w = calloc(1, sizeof(Watch));
        if (!w)
                oom();
        w->bus = bus;
        w->goal = goal;

        /* Each is in place before the call that makes the job act: the bus installs a
         * connection's matches in the order it sent them, before it routes the call that follows.
         * So they go out together, and only the last is waited for (its answer comes after the
         * others'): one round trip instead of one each. A refusal of any still stops us here,
         * before the call, as it did when each was waited for. */
        r = sd_bus_match_signal_async(bus, &w->slots[0], BUS_NAME, NULL, JOB_IFACE, "StatusChanged",
                                      on_status_changed, on_match_installed, w);
        if (r >= 0)
                r = sd_bus_add_match_async(bus, &w->slots[1],
                                           "type='signal',sender='" BUS_NAME "',interface='org.freedesktop.DBus.Properties',"
                                           "member='PropertiesChanged',arg0='" JOB_IFACE "'",
                                           on_properties_changed, on_match_installed, w);
        if (r >= 0)
                r = sd_bus_match_signal_async(bus, &w->slots[2], BUS_NAME, NULL, JOB_IFACE, "IoError", on_io_error,
                                              on_match_installed, w);
        if (r >= 0)
                r = sd_bus_match_signal_async(bus, &w->slots[4], NULL, "/org/freedesktop/DBus/Local",
                                              "org.freedesktop.DBus.Local", "Disconnected", on_disconnected,
                                              on_match_installed, w);
        if (r >= 0)
                r = sd_bus_add_match(bus, &w->slots[3],
                                     "type='signal',sender='org.freedesktop.DBus',path='/org/freedesktop/DBus',"
                                     "interface='org.freedesktop.DBus',member='NameOwnerChanged',arg0='" BUS_NAME "'",
                                     on_name_owner_changed, w);
        /* The others' answers are queued by now: read them. No job is watched yet, so a signal
         * among them finds nothing to do. */
        while (r >= 0 && (r = sd_bus_process(bus, NULL)) > 0)
                ;
        if (r >= 0)
                r = w->match_error;
        if (r < 0) {
                watch_free(w);
                set_exit_status(EXIT_LOST);
                return log_error("Failed to watch the job: %s", strerror(-r)), r;
        }
        if (arg.follow)
                w->progress = progress_new();
        *ret = w;
        return 0;
}

int watch_add_job(Watch *w, const char *path, const char *leaving, bool dismiss, bool cancelling) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        WatchJob *j, **jobs;
        int r;

        j = calloc(1, sizeof(WatchJob));
        jobs = realloc(w->jobs, (w->n_jobs + 1) * sizeof(WatchJob *));
        if (!j || !jobs)
                oom();
        w->jobs = jobs;
        w->jobs[w->n_jobs++] = j;
        j->path = strdup(path);
        if (!j->path)
                oom();
        if (job_id_from_path(path, &j->raw_id) <= 0)
                j->raw_id = strdup(path);
        if (!j->raw_id)
                oom();
        j->id = esc(j->raw_id);
        j->watch = w;
        j->leaving = leaving;
        j->dismiss = dismiss;
        j->cancelling = cancelling;
        j->auto_finalize = true;
        strcpy(j->io_status, "ok");

        r = sd_bus_call_method(w->bus, BUS_NAME, path, "org.freedesktop.DBus.Properties", "GetAll", &error, &reply,
                               "s", JOB_IFACE);
        if (r < 0) {
                if (sd_bus_error_has_names(&error, SD_BUS_ERROR_UNKNOWN_OBJECT, SD_BUS_ERROR_UNKNOWN_INTERFACE)) {
                        /* Gone already: what it did is in the signals queued since the call. */
                        strcpy(j->status, "unknown");
                        return 0;
                }
                return bus_fail(&error, r, "Failed to read job '%s'", j->id);
        }
        r = sd_bus_message_get_cookie(reply, &j->min_cookie);
        if (r < 0)
                return r;
        r = read_properties(reply, j, NULL);
        if (r < 0)
                return log_error("Failed to read job '%s': %s", j->id, strerror(-r)), r;
        j->known = true;
        return 0;
}

int watch_run(Watch *w) {
        sigset_t mask;
        int r;

        r = sd_event_new(&w->event);
        if (r < 0)
                return r;
        r = sd_bus_attach_event(w->bus, w->event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                return r;

        /* Ctrl-C says what happens to the job. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGTERM);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        r = sd_event_add_signal(w->event, NULL, SIGINT, on_signal, w);
        if (r >= 0)
                r = sd_event_add_signal(w->event, NULL, SIGTERM, on_signal, w);
        if (r >= 0 && w->progress)
                r = sd_event_add_time_relative(w->event, NULL, CLOCK_MONOTONIC, 1000000, 0, on_tick, w);
        if (r < 0)
                return r;

        /* Where each job is, as read after the call: shown, and maybe an end already. */
        for (size_t i = 0; i < w->n_jobs; i++)
                if (w->jobs[i]->known) {
                        redraw(w, w->jobs[i]);
                        status_reached(w, w->jobs[i], true);
                }

        /* The signals queued since the call: a job that was gone when its state was asked for
         * tells its end there, or nowhere (a concluded one: in the answers it waits for). */
        while ((r = sd_bus_process(w->bus, NULL)) > 0)
                ;
        if (r < 0) {
                for (size_t i = 0; i < w->n_jobs; i++)
                        end_job(w, w->jobs[i], OUTCOME_LOST, "Lost the connection to the bus.");
        }
        for (size_t i = 0; i < w->n_jobs; i++) {
                WatchJob *j = w->jobs[i];
                if (!j->known && !j->concluding && j->outcome == OUTCOME_NONE) {
                        _cleanup_free_ char *m = NULL;
                        if (asprintf(&m, "Job '%s' vanished before its result could be read.", j->id) < 0)
                                oom();
                        end_job(w, j, OUTCOME_LOST, m);
                }
        }

        if (!all_ended(w)) {
                r = sd_event_loop(w->event);
                if (r < 0) {
                        progress_clear(w->progress);
                        set_exit_status(EXIT_LOST);
                        return log_error("Failed to wait for the job: %s", strerror(-r)), r;
                }
        }
        progress_clear(w->progress);

        if (w->interrupted)
                return EXIT_INTERRUPTED;
        for (size_t i = 0; i < w->n_jobs; i++) {
                JobOutcome o = w->jobs[i]->outcome;
                if (o == OUTCOME_CANCELLED && !w->jobs[i]->cancelling)
                        return EXIT_JOB_FAILED;
                if (outcome_exit_status[o] != 0)
                        return outcome_exit_status[o];
        }
        return EXIT_OK;
}
