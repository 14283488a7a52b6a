/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The verbs on a job (pause, resume, cancel, complete, finalize, dismiss, set-speed) and wait:
 * the call, a sentence a sysadmin understands next to the service's own text when the job
 * cannot take the verb, and --wait / --follow for the result. */

#include "args.h"
#include "bus.h"
#include "units.h"
#include "util.h"
#include "verbs.h"
#include "watch.h"

typedef struct VerbInfo {
        Command command;
        const char *method;
        const char *leaving;            /* the statuses the verb takes the job from: not an end to wait for */
        WatchGoal goal;
} VerbInfo;

static const VerbInfo verb_table[] = {
        { CMD_PAUSE, "Pause", NULL, WATCH_UNTIL_PAUSED },
        { CMD_RESUME, "Resume", "paused standby", WATCH_UNTIL_END },
        { CMD_CANCEL, "Cancel", "ready standby paused pending", WATCH_UNTIL_END },
        { CMD_COMPLETE, "Complete", "ready standby", WATCH_UNTIL_END },
        { CMD_FINALIZE, "Finalize", "pending", WATCH_UNTIL_END },
        { CMD_DISMISS, "Dismiss", NULL, WATCH_UNTIL_END },
        { CMD_SET_SPEED, "SetSpeed", NULL, WATCH_UNTIL_END },
};

typedef struct JobState {
        char *type, *status, *target;
        char **allowed;
} JobState;

static void job_state_done(JobState *s) {
        free(s->type);
        free(s->status);
        free(s->target);
        if (s->allowed)
                for (char **p = s->allowed; *p; p++)
                        free(*p);
        free(s->allowed);
}

static int read_state(sd_bus *bus, const char *path, JobState *s) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        int r;

        *s = (JobState) {};
        r = sd_bus_get_property_string(bus, BUS_NAME, path, JOB_IFACE, "Type", &error, &s->type);
        if (r >= 0)
                r = sd_bus_get_property_string(bus, BUS_NAME, path, JOB_IFACE, "Status", &error, &s->status);
        if (r >= 0)
                r = sd_bus_get_property_string(bus, BUS_NAME, path, JOB_IFACE, "Target", &error, &s->target);
        if (r >= 0)
                r = sd_bus_get_property_strv(bus, BUS_NAME, path, JOB_IFACE, "AllowedVerbs", &error, &s->allowed);
        return r;
}

static bool is_one_of(const char *s, const char *const *list) {
        for (; *list; list++)
                if (streq(s, *list))
                        return true;
        return false;
}

/* Why the job's status does not allow the verb, in a sysadmin's words. */
static char *verb_hint(Command verb, const JobState *s, const char *id) {
        const char *ctl = program_invocation_short_name;
        static const char *const ended[] = { "aborting", "concluded", "null", NULL };
        static const char *const not_ready[] = { "created", "running", "paused", NULL };
        _cleanup_free_ char *allowed = NULL;
        char *hint = NULL;
        int r = -1;

        if (is_one_of(s->status, ended) && verb != CMD_DISMISS)
                r = asprintf(&hint, "the job is %s: it has ended%s", s->status,
                             streq(s->status, "concluded") ? ", and `dismiss` is all it takes" : "");
        else if (verb == CMD_COMPLETE && (streq(s->type, "backup") || streq(s->type, "stream")))
                r = asprintf(&hint, "a %s is never ready; complete applies to mirror and active commit", s->type);
        else if (verb == CMD_COMPLETE && streq(s->type, "commit") && is_one_of(s->status, not_ready))
                r = asprintf(&hint, "an active commit (--top= the image itself) can be completed once it is ready "
                             "(`%s wait %s --complete` does it then); a commit of a lower layer completes by itself",
                             ctl, id);
        else if (verb == CMD_COMPLETE && is_one_of(s->status, not_ready))
                r = asprintf(&hint, "the mirror is not ready yet; `%s wait %s --complete` completes it once it is", ctl,
                             id);
        else if (verb == CMD_FINALIZE)
                r = asprintf(&hint, "finalize applies to a job waiting in pending (created with --no-auto-finalize); "
                             "this one is %s", s->status);
        else if (verb == CMD_DISMISS)
                r = asprintf(&hint, "dismiss applies to a job that has ended (concluded); this one is %s: `%s cancel "
                             "%s` ends it, `%s wait %s` waits for it", s->status, ctl, id, ctl, id);
        else if (verb == CMD_RESUME)
                r = asprintf(&hint, "resume applies to a job paused by `pause` or by an I/O error; this one is %s",
                             s->status);
        if (r >= 0)
                return hint;

        /* Else what the job's status allows. */
        size_t n = 0;
        FILE *f = open_memstream(&allowed, &n);
        if (!f)
                oom();
        for (char **p = s->allowed; p && *p; p++)
                fprintf(f, "%s%s", p == s->allowed ? "" : ", ", *p);
        if (fclose(f) != 0)
                oom();
        if (asprintf(&hint, "a job that is %s accepts %s", s->status, *allowed ? allowed : "no verb") < 0)
                oom();
        return hint;
}

static void refusal_hint(sd_bus *bus, const char *path, Command verb, const char *id, const sd_bus_error *error) {
        JobState s;

        if (!sd_bus_error_has_name(error, "org.blockjobd.Jobs1.Error.InvalidState"))
                return;
        /* "Job is already paused" says it all. */
        if (verb == CMD_PAUSE && error->message && strstr(error->message, "already paused"))
                return;
        if (read_state(bus, path, &s) >= 0) {
                _cleanup_free_ char *e_id = esc(id);
                _cleanup_free_ char *hint = verb_hint(verb, &s, e_id);
                _cleanup_free_ char *e = esc(hint);
                log_error("(%s.)", e);
        }
        job_state_done(&s);
}

/* Cancelling a ready mirror throws the copy away: virsh users expect the abort of a ready copy
 * to keep it. */
static void warn_cancel(sd_bus *bus, const char *path, const char *id) {
        JobState s;

        if (read_state(bus, path, &s) >= 0 && streq(s.type, "mirror") &&
            (streq(s.status, "ready") || streq(s.status, "standby"))) {
                _cleanup_free_ char *e_id = esc(id), *e_target = esc(s.target);
                log_warning("Job '%s' is a ready mirror: cancelling it discards the copy%s%s%s; `%s complete %s` would "
                            "keep it.", e_id, *e_target ? " ('" : "", e_target, *e_target ? "' does not appear)" : "",
                            program_invocation_short_name, e_id);
        }
        job_state_done(&s);
}

int verb_job(sd_bus *bus) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_(watch_freep) Watch *w = NULL;
        _cleanup_free_ char *path = NULL;
        const char *id = arg.args[0];
        const VerbInfo *v = NULL;
        uint64_t speed = 0;
        int r;

        for (size_t i = 0; i < ELEMENTSOF(verb_table); i++)
                if (verb_table[i].command == arg.command)
                        v = &verb_table[i];
        if (!v)
                abort();

        if (arg.command == CMD_SET_SPEED) {
                const char *why = NULL;
                r = parse_size(arg.args[1], &speed, &why);
                if (r < 0)
                        return log_usage("Invalid speed '%s': %s.", arg.args[1],
                                         r == -ERANGE ? "too large" : why);
        }

        r = job_path(bus, id, &path);
        if (r < 0)
                return r;
        if (arg.command == CMD_CANCEL)
                warn_cancel(bus, path, id);
        if (arg.wait) {
                r = watch_new(bus, v->goal, &w);
                if (r < 0)
                        return r;
        }

        r = sd_bus_message_new_method_call(bus, &m, BUS_NAME, path, JOB_IFACE, v->method);
        if (r >= 0 && arg.command == CMD_SET_SPEED)
                r = sd_bus_message_append(m, "t", speed);
        if (r < 0)
                return log_error("Failed to build the call: %s", strerror(-r)), r;
        prepare_authorized_call();
        r = sd_bus_call(bus, m, 0, &error, NULL);
        if (r < 0) {
                _cleanup_free_ char *e_id = esc(id);
                if (sd_bus_error_has_names(&error, SD_BUS_ERROR_UNKNOWN_OBJECT, "org.blockjobd.Jobs1.Error.NoSuchJob"))
                        return no_job(id);
                r = bus_fail(&error, r, "Cannot %s job '%s'", commands[arg.command].name, e_id);
                refusal_hint(bus, path, arg.command, id, &error);
                return r;
        }
        if (!arg.wait)
                return 0;

        r = watch_add_job(w, path, v->leaving, false, arg.command == CMD_CANCEL);
        if (r < 0)
                return r;
        return watch_run(w);
}

int verb_wait(sd_bus *bus) {
        _cleanup_(watch_freep) Watch *w = NULL;
        int r;

        /* Subscribed first: what the jobs do from the moment their state is read is seen. */
        r = watch_new(bus, WATCH_UNTIL_END, &w);
        if (r < 0)
                return r;
        for (unsigned i = 0; i < arg.n_args; i++) {
                _cleanup_free_ char *path = NULL;
                r = job_path(bus, arg.args[i], &path);
                if (r == -ENXIO) {
                        _cleanup_free_ char *e = esc(arg.args[i]);
                        log_error("(A job is gone once it has ended, unless it was created with --no-auto-dismiss "
                                  "or followed with --wait; `journalctl BLOCKJOBD_JOB=%s` has its result.)", e);
                }
                if (r < 0)
                        return r;
                r = watch_add_job(w, path, NULL, false, false);
                if (r < 0)
                        return r;
        }
        return watch_run(w);
}
