/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * The job core.
 *
 * Concurrency model
 * -----------------
 * All state in this file (jobs, transactions, the registry) belongs to the event-loop thread and
 * is only ever touched there. Job I/O never runs on that thread: a driver works in bounded steps
 * (one chunk copied, one pass over a dirty map), and the core hands each step to an executor
 * (job-executor.h) that runs it on a small, fixed pool of worker threads and reports completion
 * back to the loop through an eventfd. A job has at most one work item in flight, so thousands of
 * jobs need no more threads than the pool has; they simply queue.
 *
 * Between two steps the job sits on the loop and the core decides what comes next, which makes
 * every step boundary QEMU's pause point:
 *   - a force cancel ends the run (the driver is not asked again);
 *   - a pause request turns running into paused (ready into standby) until resumed;
 *   - the rate limiter may ask for a sleep (a timer, not a blocked thread);
 *   - a driver with nothing to do may ask for an idle sleep;
 *   - otherwise the next step is submitted.
 * So pause, cancel, set-speed and complete answer at once on the loop and take effect within one
 * step, and a slow disk can delay a job but never a method call.
 *
 * The completion pipeline (prepare, commit or abort, clean) also does I/O (flushes, renames), so
 * it runs through the executor as well, one member at a time. A transaction therefore has a
 * phase: preparing (a force cancel arriving now is picked up when the phase ends and aborts the
 * whole transaction), committing (the point of no return: a cancel is ignored, the transaction is
 * already being published), or aborting. QEMU runs the whole pipeline inside job-finalize, so
 * that the command returns with every member concluded; here a finalize is told when the pipeline
 * has ended instead (job_finalize_notify()), and the D-Bus reply waits for that.
 *
 * Some prepares cannot be undone (JobDriver.prepare_is_final: commit pivots and empties the
 * image). Such a member is prepared last, after every other member prepared and after a last look
 * for cancels, and the point of no return moves to the moment its prepare is submitted: from then
 * on a cancel is ignored as in the commit phase, so that a job never reports "Operation canceled"
 * for changes it made. A transaction holds at most one such member, or two of them could end up
 * one changed for good and the other aborted.
 *
 * A driver never reads the job's cancel state from a worker (job_cancel_requested() is the loop's):
 * what a step needs arrives in its JobStepInput, and a step that finished because of a soft cancel
 * keeps that in the driver's data for prepare.
 *
 * Stopping for a restart (job_stop(), issue 15) is not a cancel: the job keeps its status and
 * comes back in it. The core only lets what is in flight end (a step; a completion pipeline under
 * way runs to its end, as it is short and must not be left half-done), starts nothing else, asks
 * the driver for one last checkpoint_only step where it may hold work that is not durable yet,
 * and then leaves the job alone (job_try_stop()). A group is stopped as one, so that no member
 * finishes, fails or publishes because of another while the daemon goes away.
 *
 * Where QEMU and this file differ (only where QEMU's synchronous design has no equivalent):
 *   - when one member's prepare fails, every other member is force-cancelled, including the one
 *     whose finalize started the pipeline (QEMU leaves that one alone and may commit it);
 *   - cancel during the commit phase and a second finalize during the pipeline are no-ops (that
 *     finalize is told when the pipeline ends, as the first is).
 */

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error-message.h"
#include "hashmap.h"
#include "job.h"
#include "list.h"
#include "log.h"
#include "macro.h"
#include "ratelimit.h"

typedef enum JobWorkKind {
        JOB_WORK_NONE,
        JOB_WORK_STEP,
        JOB_WORK_PREPARE,
        JOB_WORK_FINALIZE,
} JobWorkKind;

typedef enum JobSleep {
        JOB_SLEEP_NONE,
        JOB_SLEEP_RATELIMIT,
        JOB_SLEEP_IDLE,
        JOB_SLEEP_BACKOFF,
} JobSleep;

typedef enum JobTxnPhase {
        JOB_TXN_RUNNING,        /* members still running, or waiting for each other */
        JOB_TXN_PREPARING,
        JOB_TXN_PREPARING_FINAL,        /* the member whose prepare is final is preparing: too late to cancel */
        JOB_TXN_COMMITTING,
        JOB_TXN_ABORTING,
} JobTxnPhase;

/* Someone who finalized a transaction and is told once it has ended (job_finalize_notify()). */
typedef struct JobFinalizeWaiter JobFinalizeWaiter;
struct JobFinalizeWaiter {
        JobFinalizedFunc done;
        void *userdata;
        LIST_FIELDS(JobFinalizeWaiter, waiters);
};

/* What names a job: ids are unique per owner. */
typedef struct JobKey {
        uint32_t owner;
        const char *id;
} JobKey;

/* Where the search for an owner's lowest free default id of each type starts: every
 * "<type><N>" with N below next[type] is taken. Without it, each creation would try every id the
 * owner holds, and creating n jobs would cost n² lookups. */
typedef struct JobIdHint JobIdHint;
struct JobIdHint {
        uint32_t owner;                 /* the key */
        unsigned next[_JOB_TYPE_MAX];
        LIST_FIELDS(JobIdHint, hints);
};

struct JobRegistry {
        const JobExecutor *executor;
        void *executor_userdata;
        const JobObserver *observer;
        void *observer_userdata;
        Job *jobs;                      /* newest first */
        size_t n_jobs;
        size_t n_live;                  /* job objects not yet freed, listed or not */
        Hashmap *by_key;                /* JobKey → Job, the same jobs as the list */
        Hashmap *id_hints;              /* owner → JobIdHint, one per owner who had a default id */
        JobIdHint *hints;
        bool no_checkpoints;            /* nobody keeps them: steps are never asked for one */
};

struct JobTxn {
        unsigned n_ref;
        JobRegistry *registry;
        bool grouped;
        Job *members;                   /* newest first, as QEMU's txn list */
        JobTxnPhase phase;
        Job *cursor;                    /* preparing: next member to look at */
        bool final_pass;                /* preparing: the cursor's second pass, for the final member */
        Job *busy;                      /* member whose prepare/finalize work is in flight */
        Job *waiting_for;               /* aborting: member whose run we wait to end */
        JobFinalizeWaiter *finalize_waiters;    /* told once the last member has concluded */
        bool stopping;                  /* job_stop(): every member is stopping or stopped */
};

struct Job {
        unsigned n_ref;
        JobRegistry *registry;
        LIST_FIELDS(Job, jobs);
        LIST_FIELDS(Job, members);
        JobTxn *txn;

        JobKey key;                     /* key.id is the job's id, owned here */
        const JobDriver *driver;
        void *driver_data;
        void *userdata;
        void *executor_data;

        JobStatus status;
        bool auto_finalize;
        bool auto_dismiss;
        JobOnError on_source_error;
        JobOnError on_target_error;
        JobIoStatus io_status;

        /* Pausing: a counter shared by user and internal pauses, and which of them is the user's. */
        unsigned pause_count;
        bool user_paused;
        bool paused;                    /* sitting at a pause point (paused or standby) */

        bool started;
        bool busy;                      /* a work item is in flight */
        bool deferred;                  /* the run has returned */
        JobSleep sleep;
        uint64_t idle_ns;

        /* on-*-error=ignore: how long the last failing step made the job wait (0: the last step
         * that did something did not fail), and the earliest time of the next step. */
        uint64_t backoff_ns;
        uint64_t retry_at;
        /* What the observer was told of ignored errors: the current window and how many it was
         * not told about. */
        uint64_t io_error_window_start;
        unsigned io_error_window_count;
        unsigned io_errors_suppressed;

        bool cancelled;                 /* any cancel request */
        bool force_cancel;
        bool complete_requested;

        int ret;
        char *error;

        uint64_t speed;
        RateLimit limit;
        uint64_t progress_current;
        uint64_t progress_total;

        /* The last checkpoint a step reported (or the restore brought), and since when the next
         * one is counted (JOB_CHECKPOINT_INTERVAL_NS). */
        bool has_checkpoint;
        uint64_t checkpoint;
        uint64_t checkpoint_since;

        /* job_stop(): asked for; its one checkpoint_only step submitted; done (and told). */
        bool stop_requested;
        bool stop_step_sent;
        bool stopped;

        /* The work item in flight, owned by the worker while busy. */
        JobWorkKind work;
        JobStepInput step_in;
        JobStepResult step_out;
        int work_ret;
        char *work_error;
};

static void job_continue(Job *j);
static void job_completed(Job *j);
static void job_txn_abort(Job *j);
static void job_txn_abort_next(JobTxn *t);
static void job_txn_prepare_next(JobTxn *t);
static void job_txn_commit_next(JobTxn *t);
static void job_do_dismiss(Job *j);
static void job_enter(Job *j);
static void job_do_finalize(Job *j);
static void job_try_stop(Job *j);

/* ---- small helpers ------------------------------------------------------------------------ */

static uint64_t job_now(Job *j) {
        return j->registry->executor->now(j->registry->executor_userdata);
}

static void job_notify_changed(Job *j, JobChange what) {
        const JobObserver *o = j->registry->observer;
        if (o && o->changed)
                o->changed(j, what, j->registry->observer_userdata);
}

/* The user-paused flag can change without a status change (a pause asked for while a step runs, a
 * resume while an internal pause holds the job): observers that keep it (the records) hear of it
 * here, before any status change it leads to. */
static void job_set_user_paused(Job *j, bool b) {
        if (j->user_paused == b)
                return;
        j->user_paused = b;
        job_notify_changed(j, JOB_CHANGE_USER_PAUSED);
}

static void job_set_timer(Job *j, uint64_t deadline) {
        j->registry->executor->set_timer(j->registry->executor_userdata, j, deadline);
}

static void job_submit(Job *j, JobWorkKind kind) {
        assert(!j->busy);
        j->busy = true;
        j->work = kind;
        j->registry->executor->submit(j->registry->executor_userdata, j);
}

static void job_notify_status(Job *j) {
        const JobObserver *o = j->registry->observer;
        if (o && o->status_changed)
                o->status_changed(j, j->status, j->registry->observer_userdata);
}

void job_state_transition(Job *j, JobStatus to) {
        JobStatus from = j->status;

        if (!job_transition_allowed(from, to)) {
                /* Not a user error: the core itself went wrong. Stop before doing damage. */
                log_error("Job '%s': illegal transition %s -> %s, aborting.", strempty(j->key.id),
                          job_status_to_string(from), job_status_to_string(to));
                abort();
        }

        j->status = to;
        if (from == to)
                return;
        job_notify_status(j);
}

/* Every verb is refused from job_stop() on: the job is to continue after the restart as it was
 * when the daemon stopped. */
static int job_refuse_if_stopping(Job *j, char **ret_error) {
        if (!j->stop_requested)
                return 0;
        return error_message(ret_error, -ESHUTDOWN, "blockjobd is stopping; job '%s' continues after it starts again",
                             j->key.id);
}

static int job_apply_verb(Job *j, JobVerb verb, char **ret_error) {
        int r;

        r = job_refuse_if_stopping(j, ret_error);
        if (r < 0)
                return r;
        if (job_verb_allowed(verb, j->status))
                return 0;

        return error_message(ret_error, -EBUSY, "Job '%s' in state '%s' cannot accept command verb '%s'", j->key.id,
                             job_status_to_string(j->status), job_verb_to_string(verb));
}

/* ---- registry ----------------------------------------------------------------------------- */

static void job_key_hash(const void *key, SipHash *state) {
        const JobKey *k = key;

        siphash24_compress(&k->owner, sizeof(k->owner), state);
        siphash24_compress(k->id, strlen(k->id) + 1, state);
}

static bool job_key_equal(const void *a, const void *b) {
        const JobKey *x = a, *y = b;
        return x->owner == y->owner && strcmp(x->id, y->id) == 0;
}

static const HashOps job_key_hash_ops = {
        .hash = job_key_hash,
        .equal = job_key_equal,
};

static void owner_hash(const void *key, SipHash *state) {
        siphash24_compress(key, sizeof(uint32_t), state);
}

static bool owner_equal(const void *a, const void *b) {
        return *(const uint32_t *) a == *(const uint32_t *) b;
}

static const HashOps owner_hash_ops = {
        .hash = owner_hash,
        .equal = owner_equal,
};

int job_registry_new(const JobExecutor *executor, void *executor_userdata, JobRegistry **ret) {
        JobRegistry *r;

        assert(executor && ret);

        r = calloc(1, sizeof(*r));
        if (!r)
                return -ENOMEM;
        if (hashmap_new(&job_key_hash_ops, &r->by_key) < 0) {
                free(r);
                return -ENOMEM;
        }

        r->executor = executor;
        r->executor_userdata = executor_userdata;
        *ret = r;
        return 0;
}

JobRegistry *job_registry_free(JobRegistry *r) {
        if (!r)
                return NULL;

        /* Jobs reference the registry, dismissed ones too while someone holds them; freeing it under
         * them would leave them dangling. */
        assert(r->n_live == 0 && !r->jobs);
        while (r->hints) {
                JobIdHint *h = r->hints;
                LIST_REMOVE(hints, r->hints, h);
                free(h);
        }
        hashmap_free(r->id_hints);
        hashmap_free(r->by_key);
        free(r);
        return NULL;
}

void job_registry_set_checkpoints(JobRegistry *r, bool wanted) {
        r->no_checkpoints = !wanted;
}

void job_registry_set_observer(JobRegistry *r, const JobObserver *observer, void *userdata) {
        r->observer = observer;
        r->observer_userdata = userdata;
}

Job *job_registry_find(JobRegistry *r, uint32_t owner, const char *id) {
        if (!id)
                return NULL;
        return hashmap_get(r->by_key, &(JobKey) { .owner = owner, .id = id });
}

Job *job_registry_first(JobRegistry *r) {
        return r->jobs;
}

Job *job_registry_next(Job *j) {
        return j->jobs_next;
}

size_t job_registry_count(JobRegistry *r) {
        return r->n_jobs;
}

bool job_registry_all_stopped(JobRegistry *r) {
        Job *j;

        LIST_FOREACH(jobs, j, r->jobs)
                if (!j->stopped)
                        return false;
        return true;
}

size_t job_registry_n_live(JobRegistry *r) {
        return r->n_live;
}

uint64_t job_registry_now(JobRegistry *r) {
        return r->executor->now(r->executor_userdata);
}

bool job_id_is_valid(const char *id) {
        size_t n;

        if (!id)
                return false;

        n = strnlen(id, JOB_ID_MAX + 1);
        if (n == 0 || n > JOB_ID_MAX)
                return false;

        /* QEMU's id_wellformed(), in ASCII regardless of locale. */
        if (!((id[0] >= 'a' && id[0] <= 'z') || (id[0] >= 'A' && id[0] <= 'Z')))
                return false;
        for (size_t i = 1; i < n; i++) {
                char c = id[i];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '-' || c == '.' || c == '_'))
                        return false;
        }
        return true;
}

int job_registry_check_id(JobRegistry *r, uint32_t owner, const char *id, char **ret_error) {
        if (!id)
                return 0;
        if (!job_id_is_valid(id))
                return error_message(ret_error, -EINVAL, "Invalid job ID '%s'", id);
        if (job_registry_find(r, owner, id))
                return error_message(ret_error, -EEXIST, "Job ID '%s' already in use", id);
        return 0;
}

/* The owner's hint, made on first use; NULL short of memory (the search then starts at 0). */
static JobIdHint *job_registry_id_hint(JobRegistry *r, uint32_t owner) {
        JobIdHint *h;

        if (!r->id_hints && hashmap_new(&owner_hash_ops, &r->id_hints) < 0)
                return NULL;
        h = hashmap_get(r->id_hints, &owner);
        if (h)
                return h;
        h = calloc(1, sizeof(*h));
        if (!h)
                return NULL;
        h->owner = owner;
        if (hashmap_put(r->id_hints, &h->owner, h) < 0) {
                free(h);
                return NULL;
        }
        LIST_PREPEND(hints, r->hints, h);
        return h;
}

static char *job_registry_pick_id(JobRegistry *r, uint32_t owner, JobType type) {
        JobIdHint *h = job_registry_id_hint(r, owner);
        char buf[64];

        /* Lowest free N among the owner's ids, so that ids stay short and predictable for a user
         * typing them. The search starts where every lower id is known to be taken; it stays
         * there (the job may yet fail to be made), and the next one looks past it. */
        for (unsigned n = h ? h->next[type] : 0;; n++) {
                (void) snprintf(buf, sizeof(buf), "%s%u", job_type_to_string(type), n);
                if (!job_registry_find(r, owner, buf)) {
                        if (h)
                                h->next[type] = n;
                        return strdup(buf);
                }
        }
}

/* An id goes: if it is a default id of any type (whatever the job's type, as a caller may name a
 * backup "stream3"), the search for that type must start no later than it. */
static void job_registry_id_released(JobRegistry *r, const JobKey *key) {
        JobIdHint *h = r->id_hints ? hashmap_get(r->id_hints, &key->owner) : NULL;

        if (!h)
                return;
        for (JobType t = 0; t < _JOB_TYPE_MAX; t++) {
                const char *prefix = job_type_to_string(t), *digits;
                size_t len = strlen(prefix);
                unsigned long n;
                char *end;

                if (strncmp(key->id, prefix, len) != 0)
                        continue;
                digits = key->id + len;
                /* Only what snprintf("%u") makes: digits, no sign, no leading zero. */
                if (!(*digits >= '0' && *digits <= '9') || (digits[0] == '0' && digits[1]))
                        return;
                errno = 0;
                n = strtoul(digits, &end, 10);
                if (errno != 0 || *end || n > UINT_MAX)
                        return;
                if (n < h->next[t])
                        h->next[t] = (unsigned) n;
                return;
        }
}

/* ---- transactions ------------------------------------------------------------------------- */

static int job_txn_alloc(JobRegistry *r, bool grouped, JobTxn **ret) {
        JobTxn *t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        t->n_ref = 1;
        t->registry = r;
        t->grouped = grouped;
        *ret = t;
        return 0;
}

int job_txn_new(JobRegistry *r, JobTxn **ret) {
        return job_txn_alloc(r, true, ret);
}

JobTxn *job_txn_ref(JobTxn *t) {
        if (t)
                t->n_ref++;
        return t;
}

JobTxn *job_txn_unref(JobTxn *t) {
        if (!t)
                return NULL;
        assert(t->n_ref > 0);
        if (--t->n_ref > 0)
                return NULL;
        assert(!t->members);
        /* Told when the last member concluded, which happens before the last reference goes. */
        assert(!t->finalize_waiters);
        free(t);
        return NULL;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(JobTxn *, job_txn_unref);

bool job_txn_is_grouped(const JobTxn *t) {
        return t->grouped;
}

static bool job_txn_has_final_member(const JobTxn *t) {
        const Job *m;

        LIST_FOREACH(members, m, t->members)
                if (m->driver->prepare_is_final)
                        return true;
        return false;
}

static void job_txn_remove(Job *j) {
        JobTxn *t = j->txn;

        if (!t)
                return;
        LIST_REMOVE(members, t->members, j);
        j->txn = NULL;
        job_txn_unref(t);
}

/* ---- creation and destruction ------------------------------------------------------------- */

static Job *job_free(Job *j) {
        JobRegistry *r = j->registry;

        assert(!j->busy);
        assert(!j->txn);

        if (r->executor->detach)
                r->executor->detach(r->executor_userdata, j);
        if (j->driver_data && j->driver->free)
                j->driver->free(j->driver_data);
        free(j->step_out.error);
        free(j->step_out.io_error.message);
        free(j->work_error);
        free(j->error);
        free((char *) j->key.id);
        free(j);

        assert(r->n_live > 0);
        if (--r->n_live == 0 && r->observer && r->observer->empty)
                r->observer->empty(r, r->observer_userdata);
        return NULL;
}

Job *job_ref(Job *j) {
        if (j)
                j->n_ref++;
        return j;
}

Job *job_unref(Job *j) {
        if (!j)
                return NULL;
        assert(j->n_ref > 0);
        if (--j->n_ref > 0)
                return NULL;
        return job_free(j);
}

DEFINE_TRIVIAL_CLEANUP_FUNC(Job *, job_unref);

/* A new job in the registry and its transaction, status undefined: job_create() and job_restore()
 * then give it its first status. */
static int job_new(JobRegistry *r, const JobCreateParams *p, bool join_txn, Job **ret, char **ret_error) {
        _cleanup_free_ char *id = NULL;
        _cleanup_(job_txn_unrefp) JobTxn *txn = NULL;
        Job *j;
        int k;

        assert(r && p && p->driver && p->driver->step);

        k = job_registry_check_id(r, p->owner, p->id, ret_error);
        if (k < 0)
                return k;

        id = p->id ? strdup(p->id) : job_registry_pick_id(r, p->owner, p->driver->type);
        if (!id)
                return error_message(ret_error, -ENOMEM, "Out of memory");

        /* Its members are being stopped for a restart (job_stop()): one more would not be. */
        if (p->txn && p->txn->stopping)
                return error_message(ret_error, -ESHUTDOWN, "blockjobd is stopping; the transaction takes no new job");

        if (p->txn && p->driver->prepare_is_final && job_txn_has_final_member(p->txn))
                return error_message(ret_error, -EINVAL,
                                     "A transaction can hold only one job whose completion cannot be undone");

        if (p->txn)
                txn = job_txn_ref(p->txn);
        else if (job_txn_alloc(r, false, &txn) < 0)
                return error_message(ret_error, -ENOMEM, "Out of memory");

        j = calloc(1, sizeof(*j));
        if (!j)
                return error_message(ret_error, -ENOMEM, "Out of memory");

        *j = (Job) {
                .n_ref = 1,
                .registry = r,
                .key = { .owner = p->owner, .id = id },
                .driver = p->driver,
                .status = JOB_STATUS_UNDEFINED,
                .auto_finalize = p->auto_finalize,
                .auto_dismiss = p->auto_dismiss,
                .on_source_error = p->on_source_error,
                .on_target_error = p->on_target_error,
                .io_status = JOB_IO_STATUS_OK,
                /* Not started counts as one pause, as in QEMU: job_start() drops it. */
                .pause_count = 1,
        };

        if (hashmap_put(r->by_key, &j->key, j) < 0) {
                free(j);
                return error_message(ret_error, -ENOMEM, "Out of memory");
        }

        if (r->executor->attach) {
                k = r->executor->attach(r->executor_userdata, j);
                if (k < 0) {
                        assert_se(hashmap_remove(r->by_key, &j->key) == j);
                        free(j);
                        return error_message(ret_error, k, "Cannot set up job: %s", strerror(-k));
                }
        }

        id = NULL;                      /* j->key.id owns it now */
        j->driver_data = p->driver_data;
        j->speed = p->speed;
        ratelimit_set_speed(&j->limit, p->speed, RATELIMIT_JOB_SLICE_NS);

        if (join_txn) {
                j->txn = TAKE_PTR(txn);
                LIST_PREPEND(members, j->txn->members, j);
        }
        LIST_PREPEND(jobs, r->jobs, j);
        r->n_jobs++;
        r->n_live++;

        *ret = j;
        return 0;
}

int job_create(JobRegistry *r, const JobCreateParams *p, Job **ret, char **ret_error) {
        Job *j;
        int k;

        k = job_new(r, p, true, &j, ret_error);
        if (k < 0)
                return k;

        job_state_transition(j, JOB_STATUS_CREATED);

        if (ret)
                *ret = j;
        return 0;
}

/* Which recorded statuses a job can come back in, and whether a user pause must, may or must not
 * come with it. Aborting is not one: its run had failed and only the abort was left, so the layer
 * above brings such a job back concluded with its error (and undoes what the abort would have).
 * Undefined and null are never recorded. A user pause in created, running or ready takes effect at
 * the first pause point, as it would have (a real transition, told). */
typedef enum RestorePause {
        RESTORE_PAUSE_NEVER,
        RESTORE_PAUSE_MAY,
        RESTORE_PAUSE_MUST,
} RestorePause;

static const struct {
        bool allowed;
        RestorePause pause;
} job_restore_table[_JOB_STATUS_MAX] = {
        [JOB_STATUS_CREATED]   = { true, RESTORE_PAUSE_MAY },
        [JOB_STATUS_RUNNING]   = { true, RESTORE_PAUSE_MAY },
        [JOB_STATUS_PAUSED]    = { true, RESTORE_PAUSE_MUST },
        [JOB_STATUS_READY]     = { true, RESTORE_PAUSE_MAY },
        [JOB_STATUS_STANDBY]   = { true, RESTORE_PAUSE_MUST },
        [JOB_STATUS_WAITING]   = { true, RESTORE_PAUSE_NEVER },
        [JOB_STATUS_PENDING]   = { true, RESTORE_PAUSE_NEVER },
        [JOB_STATUS_CONCLUDED] = { true, RESTORE_PAUSE_NEVER },
};

int job_restore(JobRegistry *r, const JobRestoreParams *p, Job **ret, char **ret_error) {
        _cleanup_free_ char *error = NULL;
        JobStatus s = p->status;
        bool completed;
        Job *j;
        int k;

        assert(r && p && ret);

        if (!p->create.id)
                return error_message(ret_error, -EINVAL, "A restored job needs its recorded id");
        if (s < 0 || s >= _JOB_STATUS_MAX || !job_restore_table[s].allowed)
                return error_message(ret_error, -EINVAL, "A job cannot be restored in status '%s'",
                                     job_status_to_string(s) ?: "invalid");
        if ((job_restore_table[s].pause == RESTORE_PAUSE_MUST && !p->user_paused) ||
            (job_restore_table[s].pause == RESTORE_PAUSE_NEVER && p->user_paused))
                return error_message(ret_error, -EINVAL, "A job cannot be restored in status '%s' %s a user pause",
                                     job_status_to_string(s), p->user_paused ? "with" : "without");
        if (s == JOB_STATUS_CONCLUDED ? p->ret > 0 : p->ret != 0)
                return error_message(ret_error, -EINVAL, "A job restored in status '%s' cannot have result %d",
                                     job_status_to_string(s), p->ret);
        if (IN_SET(s, JOB_STATUS_WAITING, JOB_STATUS_PENDING) && p->create.txn && !p->create.txn->grouped)
                return error_message(ret_error, -EINVAL, "Invalid transaction for a restored job");

        /* Before the job exists: nothing can fail once it does. */
        if (p->ret < 0) {
                /* As job_update_rc() does for a failure without a message. */
                error = strdup(p->error ?: strerror(-p->ret));
                if (!error)
                        return error_message(ret_error, -ENOMEM, "Out of memory");
        }

        /* A concluded job has left its transaction, as one that concluded here has. */
        k = job_new(r, &p->create, s != JOB_STATUS_CONCLUDED, &j, ret_error);
        if (k < 0)
                return k;
        j->error = TAKE_PTR(error);

        /* Straight into the recorded status: no transition, no observer call. The job is new to
         * everyone who watches; the layer above announces it as it is (InterfacesAdded with its
         * status), and observers hear only of what happens from here on. */
        completed = job_status_is_completed(s);
        j->status = s;
        j->ret = p->ret;
        j->progress_current = p->progress_current;
        j->progress_total = MAX(p->progress_total, p->progress_current);
        j->has_checkpoint = p->has_checkpoint;
        j->checkpoint = p->has_checkpoint ? p->checkpoint : 0;
        j->user_paused = p->user_paused;
        j->pause_count += p->user_paused;
        j->paused = IN_SET(s, JOB_STATUS_PAUSED, JOB_STATUS_STANDBY);
        j->started = completed;
        j->deferred = completed;
        if (completed)
                j->pause_count = 0;

        *ret = j;
        return 0;
}

/* All members' runs have returned: all go pending, and on to finalize unless one of them wants a
 * manual finalize. */
static void job_txn_all_completed(JobTxn *t, Job *j) {
        Job *m;

        LIST_FOREACH(members, m, t->members)
                if (!job_status_is_completed(m->status))
                        return;

        /* A member stopped already keeps its status (it follows after the restart). */
        LIST_FOREACH(members, m, t->members)
                if (m->status != JOB_STATUS_PENDING && !m->stopped)
                        job_state_transition(m, JOB_STATUS_PENDING);

        /* One member that wants a manual finalize holds all of them in pending. */
        LIST_FOREACH(members, m, t->members)
                if (!m->auto_finalize)
                        return;

        /* Stopping: the completion is not started, it is for after the restart. */
        if (t->phase == JOB_TXN_RUNNING && !t->stopping)
                job_do_finalize(j);
}

void job_restore_start(Job *j) {
        _unused_ _cleanup_(job_unrefp) Job *ref = job_ref(j);

        /* Stopped while held: it stays held, and comes back as it was after the next restart. */
        if (j->stop_requested)
                return;

        switch (j->status) {
        case JOB_STATUS_CREATED:
                job_start(j);
                return;

        case JOB_STATUS_RUNNING:
        case JOB_STATUS_READY:
        case JOB_STATUS_PAUSED:
        case JOB_STATUS_STANDBY:
                if (j->started)
                        return;
                assert(j->pause_count > 0);
                j->started = true;
                j->pause_count--;
                /* A restore is a start: the first checkpoint is due an interval from now. */
                j->checkpoint_since = job_now(j);
                if (j->paused) {
                        /* Resumed while held: it goes on now. (A cancel while held has ended it
                         * already, as it ends a job that never started.) */
                        if (j->pause_count == 0)
                                job_enter(j);
                        return;
                }
                job_continue(j);
                return;

        case JOB_STATUS_WAITING:
        case JOB_STATUS_PENDING:
                /* Every member must be back by now: with one missing, the others would not wait. */
                if (j->txn)
                        job_txn_all_completed(j->txn, j);
                return;

        default:
                return;
        }
}

void job_start(Job *j) {
        assert(j->status == JOB_STATUS_CREATED);
        assert(j->pause_count > 0);

        if (j->stop_requested)
                return;

        j->started = true;
        j->pause_count--;
        j->checkpoint_since = job_now(j);
        job_state_transition(j, JOB_STATUS_RUNNING);
        job_continue(j);
}

void job_early_fail(Job *j) {
        assert(j->status == JOB_STATUS_CREATED);
        /* A real dismissal even when stopped: the job never existed for anyone. */
        j->stopped = false;
        job_do_dismiss(j);
}

static void job_do_dismiss(Job *j) {
        JobRegistry *r = j->registry;

        job_txn_remove(j);
        j->paused = false;
        j->deferred = true;
        if (j->stopped && !job_transition_allowed(j->status, JOB_STATUS_NULL)) {
                /* Released at exit in the status it continues in after the restart: outside the
                 * lifecycle's table, and observers can tell by job_is_stopped(). */
                j->status = JOB_STATUS_NULL;
                job_notify_status(j);
        } else
                job_state_transition(j, JOB_STATUS_NULL);

        LIST_REMOVE(jobs, r->jobs, j);
        assert_se(hashmap_remove(r->by_key, &j->key) == j);
        job_registry_id_released(r, &j->key);
        r->n_jobs--;
        job_unref(j);
}

/* ---- running: the pause point and the step loop ------------------------------------------- */

static void job_enter_pause(Job *j) {
        job_state_transition(j, j->status == JOB_STATUS_READY ? JOB_STATUS_STANDBY : JOB_STATUS_PAUSED);
        j->paused = true;
}

static void job_leave_pause(Job *j) {
        j->paused = false;
        job_state_transition(j, j->status == JOB_STATUS_STANDBY ? JOB_STATUS_READY : JOB_STATUS_RUNNING);
}

static void job_sleep_until(Job *j, JobSleep why, uint64_t deadline) {
        j->sleep = why;
        job_set_timer(j, deadline);
}

static void job_finish_run(Job *j, int ret, char *error) {
        j->deferred = true;
        j->ret = ret;
        if (error) {
                free(j->error);
                j->error = error;
        }
        job_completed(j);
}

/* What one step may dispatch: unlimited (0), or the slice quota but never less than
 * JOB_THROTTLE_STEP_MIN, the limiter carrying what goes beyond the quota into later slices. */
static uint64_t job_step_max_bytes(const Job *j) {
        uint64_t quota = ratelimit_quota(&j->limit);

        return quota == 0 ? 0 : MAX(quota, JOB_THROTTLE_STEP_MIN);
}

static void job_submit_step(Job *j, const JobStepInput *in) {
        j->step_in = *in;
        free(j->step_out.error);
        free(j->step_out.io_error.message);
        j->step_out = (JobStepResult) {};
        job_submit(j, JOB_WORK_STEP);
}

/* The pause point: called whenever the job is between two steps with nothing in flight. */
static void job_continue(Job *j) {
        uint64_t now, delay;

        assert(j->started && !j->deferred && !j->busy && !j->paused && j->sleep == JOB_SLEEP_NONE);

        if (j->force_cancel) {
                job_finish_run(j, 0, NULL);
                return;
        }

        if (j->pause_count > 0) {
                job_enter_pause(j);
                job_try_stop(j);
                return;
        }

        if (j->stop_requested) {
                job_try_stop(j);
                return;
        }

        now = job_now(j);
        delay = ratelimit_calculate_delay(&j->limit, now, 0);
        if (delay > 0) {
                job_sleep_until(j, JOB_SLEEP_RATELIMIT, now + delay);
                return;
        }

        /* The backoff after an ignored error, and the driver's idle wish: sleep until the later
         * of the two. A job woken early comes back here and sleeps out what is left of the
         * backoff (the idle wish is spent once woken). */
        JobSleep why = JOB_SLEEP_NONE;
        uint64_t deadline = 0;
        if (j->retry_at > now) {
                why = JOB_SLEEP_BACKOFF;
                deadline = j->retry_at;
        }
        if (j->idle_ns > 0) {
                uint64_t idle_end = now + j->idle_ns;
                j->idle_ns = 0;
                if (idle_end > deadline) {
                        why = JOB_SLEEP_IDLE;
                        deadline = idle_end;
                }
        }
        if (why != JOB_SLEEP_NONE) {
                job_sleep_until(j, why, deadline);
                return;
        }

        job_submit_step(j, &(JobStepInput) {
                .max_bytes = job_step_max_bytes(j),
                .complete_requested = j->complete_requested,
                .cancel_requested = j->cancelled,
                .checkpoint = !j->registry->no_checkpoints && now >= j->checkpoint_since + JOB_CHECKPOINT_INTERVAL_NS,
        });
}

/* QEMU's job_enter(): wake a job that sits at a pause point or sleeps, so that it re-evaluates.
 * A job with a step in flight re-evaluates anyway when the step returns. */
static void job_enter(Job *j) {
        if (!j->started || j->deferred || j->busy)
                return;
        /* Stopping: nothing wakes it any more, but the abort of its transaction (under way when
         * job_stop() came), which must see the run end. */
        if (j->stop_requested && !j->force_cancel)
                return;

        if (j->paused)
                job_leave_pause(j);
        else if (j->sleep != JOB_SLEEP_NONE) {
                job_set_timer(j, UINT64_MAX);
                j->sleep = JOB_SLEEP_NONE;
                j->idle_ns = 0;
        } else
                return;

        job_continue(j);
}

void job_timer_fired(Job *j) {
        _unused_ _cleanup_(job_unrefp) Job *ref = job_ref(j);

        if (j->sleep == JOB_SLEEP_NONE)
                return;                 /* disarmed in the meantime */
        j->sleep = JOB_SLEEP_NONE;
        job_continue(j);
}

JobErrorAction job_step_io_error(Job *j, JobStepResult *out, bool on_source, bool is_read, int error,
                                 const char *format, ...) {
        JobErrorAction action;
        char *message = NULL;
        va_list ap;

        /* Runs on a worker: reads only the job's immutable policy and writes only the step result. */
        if (error > 0)
                error = -error;
        action = job_on_error_decide(on_source ? j->on_source_error : j->on_target_error, error);

        va_start(ap, format);
        message = error_message_format(error, format, ap);
        va_end(ap);

        free(out->io_error.message);
        out->io_error = (JobIoError) {
                .set = true,
                .is_read = is_read,
                .on_source = on_source,
                .action = action,
                .error = error,
                .message = message,
        };

        if (action == JOB_ERROR_ACTION_REPORT) {
                out->finished = true;
                out->ret = error;
                free(out->error);
                out->error = message ? strdup(message) : NULL;
        }
        return action;
}

/* Should the observer hear of this error? Errors that change the job's course always; ignored
 * ones JOB_IO_ERROR_BURST per window, and the first one after a quiet spell says how many it
 * stands for. */
static bool job_io_error_admit(Job *j, JobIoError *e) {
        uint64_t now = job_now(j);

        if (j->io_error_window_count == 0 || now - j->io_error_window_start >= JOB_IO_ERROR_INTERVAL_NS) {
                j->io_error_window_start = now;
                j->io_error_window_count = 0;
        }
        if (e->action == JOB_ERROR_ACTION_IGNORE && j->io_error_window_count >= JOB_IO_ERROR_BURST) {
                j->io_errors_suppressed++;
                return false;
        }

        j->io_error_window_count++;
        e->suppressed = j->io_errors_suppressed;
        j->io_errors_suppressed = 0;
        return true;
}

/* An ignored error makes the next step wait, longer each time in a row; progress without an
 * error forgets it. Steps that neither fail nor progress (a ready mirror with nothing to do)
 * leave it as it is. */
static void job_update_backoff(Job *j, const JobStepResult *out) {
        if (out->io_error.set && out->io_error.action == JOB_ERROR_ACTION_IGNORE) {
                j->backoff_ns = j->backoff_ns == 0 ? JOB_IO_ERROR_BACKOFF_MIN_NS
                                                   : MIN(2 * j->backoff_ns, JOB_IO_ERROR_BACKOFF_MAX_NS);
                j->retry_at = job_now(j) + j->backoff_ns;
        } else if (!out->io_error.set && out->progress > 0) {
                j->backoff_ns = 0;
                j->retry_at = 0;
        }
}

static void job_handle_io_error(Job *j, JobIoError *e) {
        const JobObserver *o = j->registry->observer;

        if (o && o->io_error && job_io_error_admit(j, e))
                o->io_error(j, e, j->registry->observer_userdata);

        if (e->action != JOB_ERROR_ACTION_STOP)
                return;

        /* Make the stop look like a user pause, so that the user resumes it. */
        if (!j->user_paused) {
                j->pause_count++;
                job_set_user_paused(j, true);
        }
        if (j->io_status == JOB_IO_STATUS_OK) {
                j->io_status = e->error == -ENOSPC ? JOB_IO_STATUS_NOSPACE : JOB_IO_STATUS_FAILED;
                job_notify_changed(j, JOB_CHANGE_IO_STATUS);
        }
}

/* A step reported a checkpoint: kept, the interval starts again, and the observer hears of it
 * before anything else the step leads to (a record written for 'waiting' then holds it). */
static void job_take_checkpoint(Job *j, const JobStepResult *out) {
        if (!out->checkpoint)
                return;
        j->has_checkpoint = true;
        j->checkpoint = out->checkpoint_value;
        j->checkpoint_since = job_now(j);
        job_notify_changed(j, JOB_CHANGE_CHECKPOINT);
}

static void job_step_done(Job *j) {
        JobStepResult *out = &j->step_out;
        bool progressed = false;

        job_take_checkpoint(j, out);

        if (out->progress > 0) {
                j->progress_current += out->progress;
                progressed = true;
        }
        if (out->has_remaining) {
                j->progress_total = j->progress_current + out->remaining;
                progressed = true;
        }
        if (j->progress_total < j->progress_current)
                j->progress_total = j->progress_current;
        if (progressed)
                job_notify_changed(j, JOB_CHANGE_PROGRESS);

        if (out->dispatched > 0)
                (void) ratelimit_calculate_delay(&j->limit, job_now(j), out->dispatched);

        if (out->io_error.set)
                job_handle_io_error(j, &out->io_error);
        job_update_backoff(j, out);

        if (out->ready && j->status == JOB_STATUS_RUNNING)
                job_state_transition(j, JOB_STATUS_READY);

        if (out->finished) {
                job_finish_run(j, out->ret, TAKE_PTR(out->error));
                return;
        }

        j->idle_ns = out->idle_ns;
        job_continue(j);
}

/* ---- stopping for a restart --------------------------------------------------------------- */

/* The job is stopping and has nothing in flight: run its one checkpoint_only step if its driver
 * may hold work that is not durable yet, else it is stopped. Called wherever a stopping job may
 * have come to rest: job_stop(), the pause point, the end of its run, its checkpoint step, its
 * conclusion. */
static void job_try_stop(Job *j) {
        if (!j->stop_requested || j->stopped || j->busy)
                return;
        /* Its transaction's completion is under way: it runs to the end, and the job is stopped as
         * it concludes (job_conclude()). */
        if (j->txn && j->txn->phase != JOB_TXN_RUNNING)
                return;

        if (j->sleep != JOB_SLEEP_NONE) {
                job_set_timer(j, UINT64_MAX);
                j->sleep = JOB_SLEEP_NONE;
        }
        j->idle_ns = 0;

        if (!j->stop_step_sent && j->started &&
            IN_SET(j->status, JOB_STATUS_RUNNING, JOB_STATUS_PAUSED, JOB_STATUS_READY, JOB_STATUS_STANDBY)) {
                j->stop_step_sent = true;
                job_submit_step(j, &(JobStepInput) { .checkpoint = true, .checkpoint_only = true });
                return;
        }

        j->stopped = true;
        job_notify_changed(j, JOB_CHANGE_STOPPED);
}

/* The checkpoint_only step: its checkpoint is all that counts. A failure to make the work durable
 * costs only the work since the previous checkpoint, which the job does again after the restart. */
static void job_stop_step_done(Job *j) {
        const JobStepResult *out = &j->step_out;

        job_take_checkpoint(j, out);
        if (out->io_error.set || (out->finished && out->ret < 0)) {
                int error = out->io_error.set ? out->io_error.error : out->ret;
                const char *message = out->io_error.set ? out->io_error.message : out->error;

                log_warning("Job '%s': could not make its work durable before stopping, it continues from "
                            "its previous checkpoint after the restart: %s",
                            j->key.id, message ?: strerror(-error));
        }
        job_try_stop(j);
}

/* Outside the core, a running job is always paused, asleep or busy with its next step. Without
 * any of these, job_stop() was called by an observer from inside the core (a transition, progress),
 * which takes the job to its pause point next, and stops it there. */
static bool job_at_rest(const Job *j) {
        return !j->started || j->deferred || j->paused || j->sleep != JOB_SLEEP_NONE;
}

static void job_stop_one(Job *j) {
        _unused_ _cleanup_(job_unrefp) Job *ref = job_ref(j);

        j->stop_requested = true;
        if (job_at_rest(j))
                job_try_stop(j);
}

void job_stop(Job *j) {
        _unused_ _cleanup_(job_unrefp) Job *ref = job_ref(j);
        _cleanup_(job_txn_unrefp) JobTxn *t = job_txn_ref(j->txn);

        if (j->stop_requested)
                return;

        if (!t) {
                /* Concluded: it has left its transaction. */
                job_stop_one(j);
                return;
        }

        /* The whole transaction: a group is stopped as one. An observer told of one member may
         * dismiss another, so look for the next one afresh each time. */
        t->stopping = true;
        for (;;) {
                Job *m, *next = NULL;

                LIST_FOREACH(members, m, t->members)
                        if (!m->stop_requested) {
                                next = m;
                                break;
                        }
                if (!next)
                        break;
                job_stop_one(next);
        }
}

bool job_is_stopped(const Job *j) {
        return j->stopped;
}

bool job_checkpoint(const Job *j, uint64_t *ret) {
        if (ret)
                *ret = j->checkpoint;
        return j->has_checkpoint;
}

/* ---- pause and resume --------------------------------------------------------------------- */

void job_pause(Job *j) {
        j->pause_count++;
        if (!j->paused)
                job_enter(j);
}

void job_resume(Job *j) {
        assert(j->pause_count > 0);
        if (--j->pause_count > 0)
                return;
        /* A sleeping job wakes by its timer, as QEMU's job_resume() leaves a pending timer alone. */
        if (j->sleep == JOB_SLEEP_NONE)
                job_enter(j);
}

static void job_user_resume_reset(Job *j) {
        /* What QEMU's block_job_user_resume() does: a resumed job starts with a clean io-status. */
        if (j->io_status != JOB_IO_STATUS_OK) {
                j->io_status = JOB_IO_STATUS_OK;
                job_notify_changed(j, JOB_CHANGE_IO_STATUS);
        }
}

int job_user_pause(Job *j, char **ret_error) {
        int r;

        r = job_apply_verb(j, JOB_VERB_PAUSE, ret_error);
        if (r < 0)
                return r;
        if (j->user_paused)
                return error_message(ret_error, -EBUSY, "Job is already paused");

        job_set_user_paused(j, true);
        job_pause(j);
        return 0;
}

int job_user_resume(Job *j, char **ret_error) {
        int r;

        r = job_refuse_if_stopping(j, ret_error);
        if (r < 0)
                return r;
        /* Checked before the verb table, as in QEMU: the message tells what is really wrong. */
        if (!j->user_paused || j->pause_count == 0)
                return error_message(ret_error, -EBUSY, "Can't resume a job that was not paused");

        r = job_apply_verb(j, JOB_VERB_RESUME, ret_error);
        if (r < 0)
                return r;

        job_user_resume_reset(j);
        job_set_user_paused(j, false);
        job_resume(j);
        return 0;
}

/* ---- cancel ------------------------------------------------------------------------------- */

static void job_cancel_async(Job *j, bool force) {
        if (j->driver->cancel)
                force = j->driver->cancel(j, j->driver_data, force) || force;
        else
                force = true;

        if (j->user_paused) {
                /* Cancelling a paused job resumes it; the caller wakes it. */
                job_user_resume_reset(j);
                job_set_user_paused(j, false);
                assert(j->pause_count > 0);
                j->pause_count--;
        }

        /* A soft request means nothing once the run has returned; a force request is never
         * weakened by a later soft one. */
        if (force || !j->deferred) {
                j->cancelled = true;
                j->force_cancel = j->force_cancel || force;
        }
}

static void job_cancel(Job *j, bool force) {
        JobTxn *t = j->txn;

        if (j->status == JOB_STATUS_CONCLUDED) {
                job_do_dismiss(j);
                return;
        }

        /* Once every member has prepared, or one whose prepare cannot be undone has started, the
         * transaction is being published: too late. */
        if (IN_SET(t->phase, JOB_TXN_PREPARING_FINAL, JOB_TXN_COMMITTING))
                return;

        job_cancel_async(j, force);

        if (!j->started)
                job_completed(j);
        else if (j->deferred) {
                /* While preparing, the phase notices the cancel when the member in flight returns;
                 * while aborting, the abort already covers it. */
                if (j->force_cancel && t->phase == JOB_TXN_RUNNING)
                        job_txn_abort(j);
        } else
                job_enter(j);
}

int job_user_cancel(Job *j, bool force, char **ret_error) {
        int r;

        r = job_apply_verb(j, JOB_VERB_CANCEL, ret_error);
        if (r < 0)
                return r;

        _unused_ _cleanup_(job_unrefp) Job *ref = job_ref(j);
        job_cancel(j, force);
        return 0;
}

/* ---- complete, set-speed, dismiss --------------------------------------------------------- */

int job_complete(Job *j, char **ret_error) {
        int r;

        r = job_apply_verb(j, JOB_VERB_COMPLETE, ret_error);
        if (r < 0)
                return r;
        if (j->cancelled || !j->driver->complete)
                return error_message(ret_error, -EBUSY, "The active block job '%s' cannot be completed", j->key.id);

        r = j->driver->complete(j, j->driver_data, ret_error);
        if (r < 0)
                return r;

        j->complete_requested = true;
        /* A job in standby completes once it is resumed. */
        if (!j->paused)
                job_enter(j);
        return 0;
}

int job_set_speed(Job *j, uint64_t bytes_per_second, char **ret_error) {
        uint64_t old;
        int r;

        r = job_apply_verb(j, JOB_VERB_SET_SPEED, ret_error);
        if (r < 0)
                return r;

        old = j->speed;
        j->speed = bytes_per_second;
        ratelimit_set_speed(&j->limit, bytes_per_second, RATELIMIT_JOB_SLICE_NS);
        if (old != bytes_per_second)
                job_notify_changed(j, JOB_CHANGE_SPEED);

        /* A raised or removed limit takes effect at once: wake a job that sleeps. */
        if (bytes_per_second != 0 && bytes_per_second <= old)
                return 0;
        if (j->sleep != JOB_SLEEP_NONE)
                job_enter(j);
        return 0;
}

int job_dismiss(Job *j, char **ret_error) {
        int r;

        /* A stopped job is released at exit, whatever its status (job_stop()). */
        if (!j->stopped) {
                r = job_apply_verb(j, JOB_VERB_DISMISS, ret_error);
                if (r < 0)
                        return r;
        }

        job_do_dismiss(j);
        return 0;
}

/* ---- the completion pipeline -------------------------------------------------------------- */

/* QEMU's job_update_rc(): a force cancel turns success into ECANCELED; any failure gets a message
 * and moves the job to aborting. */
static void job_update_rc(Job *j) {
        if (j->ret == 0 && j->force_cancel)
                j->ret = -ECANCELED;
        if (j->ret == 0)
                return;

        if (!j->error)
                j->error = strdup(strerror(-j->ret));
        job_state_transition(j, JOB_STATUS_ABORTING);
}

static void job_conclude(Job *j) {
        job_state_transition(j, JOB_STATUS_CONCLUDED);
        /* Concluded by a completion that was under way when job_stop() came: one that goes now is
         * finished and gone (a real dismissal: nothing comes back after the restart), the others
         * are stopped concluded. */
        if (j->auto_dismiss || !j->started)
                job_do_dismiss(j);
        else
                job_try_stop(j);
}

static void job_txn_continue(JobTxn *t) {
        switch (t->phase) {
        case JOB_TXN_PREPARING:
                job_txn_prepare_next(t);
                break;
        case JOB_TXN_COMMITTING:
                job_txn_commit_next(t);
                break;
        case JOB_TXN_ABORTING:
                job_txn_abort_next(t);
                break;
        case JOB_TXN_PREPARING_FINAL:
        case JOB_TXN_RUNNING:
                break;
        }
}

/* The transaction has ended, each member concluded: those who finalized it hear of it now, in the
 * order they asked. */
static void job_txn_notify_finalized(JobTxn *t) {
        JobFinalizeWaiter *w;

        while ((w = t->finalize_waiters)) {
                LIST_REMOVE(waiters, t->finalize_waiters, w);
                w->done(w->userdata);
                free(w);
        }
}

static void job_finalize_single_done(Job *j) {
        _cleanup_(job_txn_unrefp) JobTxn *t = job_txn_ref(j->txn);

        t->busy = NULL;
        job_txn_remove(j);
        job_conclude(j);
        job_txn_continue(t);
        /* After the conclude, so that whoever is told sees every member concluded. */
        if (!t->members)
                job_txn_notify_finalized(t);
}

/* Exactly one of commit or abort, then clean, then conclude. */
static void job_finalize_single(Job *j) {
        const JobDriver *d = j->driver;

        assert(job_status_is_completed(j->status));

        job_update_rc(j);

        if ((j->ret == 0 ? d->commit : d->abort) || d->clean) {
                j->txn->busy = j;
                job_submit(j, JOB_WORK_FINALIZE);
                return;
        }
        job_finalize_single_done(j);
}

static void job_txn_commit_next(JobTxn *t) {
        if (t->busy)
                return;
        if (t->members)
                job_finalize_single(t->members);
        /* Continues in job_finalize_single_done() until the transaction is empty. */
}

/* Members in list order, except that the one whose prepare is final comes last. */
static Job *job_txn_next_to_prepare(JobTxn *t) {
        for (;;) {
                Job *m = t->cursor;

                if (!m) {
                        if (t->final_pass)
                                return NULL;
                        t->final_pass = true;
                        t->cursor = t->members;
                        continue;
                }
                t->cursor = m->members_next;
                if (m->driver->prepare_is_final == t->final_pass)
                        return m;
        }
}

/* A cancel may have arrived for a member prepared earlier: that still aborts everything, as long as
 * nothing irreversible has happened. */
static bool job_txn_abort_if_cancelled(JobTxn *t) {
        Job *m;

        LIST_FOREACH(members, m, t->members) {
                job_update_rc(m);
                if (m->ret != 0) {
                        t->phase = JOB_TXN_RUNNING;
                        job_txn_abort(m);
                        return true;
                }
        }
        return false;
}

static void job_txn_prepare_next(JobTxn *t) {
        Job *m;

        while ((m = job_txn_next_to_prepare(t))) {
                job_update_rc(m);
                if (m->ret != 0) {
                        t->phase = JOB_TXN_RUNNING;
                        job_txn_abort(m);
                        return;
                }
                if (!m->driver->prepare)
                        continue;

                if (m->driver->prepare_is_final) {
                        /* The last moment a cancel can still stop everything. */
                        if (job_txn_abort_if_cancelled(t))
                                return;
                        t->phase = JOB_TXN_PREPARING_FINAL;
                }
                t->busy = m;
                job_submit(m, JOB_WORK_PREPARE);
                return;                 /* continues in job_prepare_done() */
        }

        /* Everyone is prepared. */
        if (job_txn_abort_if_cancelled(t))
                return;

        t->phase = JOB_TXN_COMMITTING;
        job_txn_commit_next(t);
}

static void job_prepare_done(Job *j) {
        JobTxn *t = j->txn;

        t->busy = NULL;
        if (j->ret == 0 && j->work_ret < 0) {
                j->ret = j->work_ret;
                if (j->work_error && !j->error)
                        j->error = TAKE_PTR(j->work_error);
        }
        free(TAKE_PTR(j->work_error));

        job_update_rc(j);
        if (j->ret != 0) {
                t->phase = JOB_TXN_RUNNING;
                job_txn_abort(j);
                return;
        }
        job_txn_prepare_next(t);
}

static void job_do_finalize(Job *j) {
        JobTxn *t = j->txn;

        t->phase = JOB_TXN_PREPARING;
        t->cursor = t->members;
        t->final_pass = false;
        job_txn_prepare_next(t);
}

int job_finalize_notify(Job *j, JobFinalizedFunc done, void *userdata, char **ret_error) {
        int r;

        r = job_apply_verb(j, JOB_VERB_FINALIZE, ret_error);
        if (r < 0)
                return r;

        /* A member is pending, so all are, and the transaction ends with the pipeline (started now,
         * or by an earlier finalize or a cancel): whoever asks is told then, as QEMU's job-finalize
         * returns then. In place before the pipeline starts, which may end before it returns. */
        if (done) {
                JobFinalizeWaiter *w = malloc(sizeof(*w));
                if (!w)
                        return error_message(ret_error, -ENOMEM, "Out of memory");
                *w = (JobFinalizeWaiter) { .done = done, .userdata = userdata };
                LIST_APPEND(waiters, j->txn->finalize_waiters, w);
        }

        _unused_ _cleanup_(job_unrefp) Job *ref = job_ref(j);
        if (j->txn->phase == JOB_TXN_RUNNING)
                job_do_finalize(j);
        return 0;
}

int job_finalize(Job *j, char **ret_error) {
        return job_finalize_notify(j, NULL, NULL, ret_error);
}

static void job_completed_txn_success(Job *j) {
        job_state_transition(j, JOB_STATUS_WAITING);
        job_txn_all_completed(j->txn, j);
        job_try_stop(j);
}

static void job_txn_abort_next(JobTxn *t) {
        Job *m;

        while (!t->busy && (m = t->members)) {
                if (!job_status_is_completed(m->status)) {
                        if (!m->started) {
                                /* Never started: nothing runs that we could wait for. */
                                job_completed(m);
                                continue;
                        }
                        if (t->waiting_for == m)
                                return;
                        /* Wake it so that it notices the force cancel; job_txn_abort() continues
                         * here once its run has returned. */
                        t->waiting_for = m;
                        job_enter(m);
                        return;
                }
                job_finalize_single(m);
        }
}

/* One member failed or was force-cancelled: no result matters any more. Cancel the others, wait
 * for each to stop, and abort them one by one. */
static void job_txn_abort(Job *j) {
        _cleanup_(job_txn_unrefp) JobTxn *t = job_txn_ref(j->txn);
        Job *m;

        if (t->phase == JOB_TXN_ABORTING) {
                if (t->waiting_for == j) {
                        t->waiting_for = NULL;
                        job_txn_abort_next(t);
                }
                return;
        }

        t->phase = JOB_TXN_ABORTING;
        LIST_FOREACH(members, m, t->members)
                if (m != j)
                        job_cancel_async(m, true);

        job_txn_abort_next(t);
}

static void job_completed(Job *j) {
        _unused_ _cleanup_(job_unrefp) Job *ref = job_ref(j);

        assert(!job_status_is_completed(j->status));

        job_update_rc(j);
        if (j->ret == 0)
                job_completed_txn_success(j);
        else if (j->txn->stopping && j->txn->phase == JOB_TXN_RUNNING)
                /* No abort starts any more: the job stays aborting, and comes back after the
                 * restart as one that failed (job_stop()). */
                job_try_stop(j);
        else
                job_txn_abort(j);
}

/* ---- executor entry points ---------------------------------------------------------------- */

void job_work_run(Job *j) {
        const JobDriver *d = j->driver;

        switch (j->work) {
        case JOB_WORK_STEP:
                d->step(j, j->driver_data, &j->step_in, &j->step_out);
                break;

        case JOB_WORK_PREPARE:
                j->work_error = NULL;
                j->work_ret = d->prepare(j, j->driver_data, &j->work_error);
                break;

        case JOB_WORK_FINALIZE:
                if (j->ret == 0) {
                        if (d->commit)
                                d->commit(j, j->driver_data);
                } else if (d->abort)
                        d->abort(j, j->driver_data);
                if (d->clean)
                        d->clean(j, j->driver_data);
                break;

        case JOB_WORK_NONE:
        default:
                abort();
        }
}

void job_work_done(Job *j) {
        _unused_ _cleanup_(job_unrefp) Job *ref = job_ref(j);
        JobWorkKind kind = j->work;

        assert(j->busy);
        j->busy = false;
        j->work = JOB_WORK_NONE;

        switch (kind) {
        case JOB_WORK_STEP:
                if (j->step_in.checkpoint_only)
                        job_stop_step_done(j);
                else
                        job_step_done(j);
                break;
        case JOB_WORK_PREPARE:
                job_prepare_done(j);
                break;
        case JOB_WORK_FINALIZE:
                job_finalize_single_done(j);
                break;
        case JOB_WORK_NONE:
        default:
                abort();
        }
}

void *job_executor_data(Job *j) {
        return j->executor_data;
}

void job_set_executor_data(Job *j, void *data) {
        j->executor_data = data;
}

/* ---- progress and accessors --------------------------------------------------------------- */

void job_progress_set_remaining(Job *j, uint64_t remaining) {
        j->progress_total = j->progress_current + remaining;
        job_notify_changed(j, JOB_CHANGE_PROGRESS);
}

void job_progress_increase_remaining(Job *j, uint64_t delta) {
        j->progress_total += delta;
        job_notify_changed(j, JOB_CHANGE_PROGRESS);
}

const char *job_id(const Job *j) {
        return j->key.id;
}

uint32_t job_owner(const Job *j) {
        return j->key.owner;
}

JobType job_type(const Job *j) {
        return j->driver->type;
}

JobStatus job_status(const Job *j) {
        return j->status;
}

const char *job_error(const Job *j) {
        return j->ret != 0 ? j->error : NULL;
}

int job_ret(const Job *j) {
        return j->ret;
}

uint64_t job_current_progress(const Job *j) {
        return j->progress_current;
}

uint64_t job_total_progress(const Job *j) {
        return j->progress_total;
}

uint64_t job_speed(const Job *j) {
        return j->speed;
}

bool job_auto_finalize(const Job *j) {
        return j->auto_finalize;
}

bool job_auto_dismiss(const Job *j) {
        return j->auto_dismiss;
}

void job_set_auto_dismiss(Job *j) {
        j->auto_dismiss = true;
}

JobIoStatus job_io_status(const Job *j) {
        return j->io_status;
}

bool job_is_user_paused(const Job *j) {
        return j->user_paused;
}

unsigned job_pause_count(const Job *j) {
        return j->pause_count;
}

bool job_cancel_requested(const Job *j) {
        return j->cancelled;
}

bool job_is_cancelled(const Job *j) {
        return j->force_cancel;
}

bool job_accepts_verb(const Job *j, JobVerb v) {
        return !j->stop_requested && job_verb_allowed(v, j->status);
}

JobTxn *job_get_txn(const Job *j) {
        return j->txn;
}

void *job_driver_data(const Job *j) {
        return j->driver_data;
}

void *job_get_userdata(const Job *j) {
        return j->userdata;
}

void job_set_userdata(Job *j, void *userdata) {
        j->userdata = userdata;
}

JobRegistry *job_get_registry(const Job *j) {
        return j->registry;
}
