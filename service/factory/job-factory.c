/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backup.h"
#include "commit.h"
#include "error-message.h"
#include "job-factory.h"
#include "list.h"
#include "log.h"
#include "macro.h"
#include "mirror.h"
#include "opener.h"
#include "reservations.h"
#include "stream.h"

/* Openers running at once for one creation: a transaction of many jobs opens its files a few at a
 * time, within the creation's one deadline. */
#define OPENERS_PER_CREATION 4U
/* Openers of one user that may be stuck (killed, not ended) before its creations are refused. */
#define OPENERS_UNREAPED_MAX 8U

/* ---- users --------------------------------------------------------------------------------- */

/* What one user has and is getting: the limits are checked against these, never by walking the
 * jobs. */
typedef struct UserUsage {
        uid_t uid;
        unsigned n_jobs;                /* jobs alive, and jobs being created */
        unsigned n_creations;           /* creations in progress */
        unsigned n_calls;               /* other calls in progress (bitmap operations) */
        uint64_t memory;                /* the worst-case memory of its live jobs */
        LIST_FIELDS(struct UserUsage, users);
} UserUsage;

struct JobFactory {
        sd_event *event;
        WorkerPool *pool;
        JobRegistry *registry;
        JobFactoryLimits limits;
        Reservations *reservations;
        UserUsage *users;
};

static UserUsage *user_usage(JobFactory *f, uid_t uid, bool create) {
        UserUsage *u;

        LIST_FOREACH(users, u, f->users)
                if (u->uid == uid)
                        return u;
        if (!create)
                return NULL;
        u = calloc(1, sizeof(*u));
        if (!u)
                return NULL;
        u->uid = uid;
        LIST_PREPEND(users, f->users, u);
        return u;
}

/* Forgets a user that has nothing left. */
static void user_usage_trim(JobFactory *f, UserUsage *u) {
        if (u->n_jobs > 0 || u->n_creations > 0 || u->n_calls > 0 || u->memory > 0)
                return;
        LIST_REMOVE(users, f->users, u);
        free(u);
}

int job_factory_new(sd_event *event, WorkerPool *pool, JobRegistry *registry, JobFactory **ret) {
        JobFactory *f = calloc(1, sizeof(*f));

        if (!f)
                return -ENOMEM;
        *f = (JobFactory) {
                .event = sd_event_ref(event),
                .pool = pool,
                .registry = registry,
                .limits = {
                        .max_jobs_per_user = JOB_FACTORY_MAX_JOBS_PER_USER,
                        .max_creations_per_user = JOB_FACTORY_MAX_CREATIONS_PER_USER,
                        .max_memory_per_job = JOB_FACTORY_MAX_MEMORY_PER_JOB,
                        .max_memory_per_user = JOB_FACTORY_MAX_MEMORY_PER_USER,
                },
        };
        f->reservations = reservations_new();
        if (!f->reservations) {
                sd_event_unref(f->event);
                free(f);
                return -ENOMEM;
        }
        *ret = f;
        return 0;
}

JobFactory *job_factory_free(JobFactory *f) {
        if (!f)
                return NULL;
        assert(!f->users);
        reservations_free(f->reservations);
        sd_event_unref(f->event);
        free(f);
        return NULL;
}

JobFactoryLimits *job_factory_limits(JobFactory *f) {
        return &f->limits;
}

sd_event *job_factory_event(JobFactory *f) {
        return f->event;
}

WorkerPool *job_factory_pool(JobFactory *f) {
        return f->pool;
}

Reservations *job_factory_reservations(JobFactory *f) {
        return f->reservations;
}

int job_factory_admit_call(JobFactory *f, uid_t uid, const char *what, char **ret_error) {
        UserUsage *u;
        int r = 0;

        if (uid == 0)
                return 0;               /* root is not limited */
        u = user_usage(f, uid, true);
        if (!u)
                return error_message(ret_error, -ENOMEM, "Out of memory");
        if (f->limits.max_creations_per_user > 0 && u->n_calls >= f->limits.max_creations_per_user)
                r = error_message(ret_error, -EUSERS, "User %u has %u %s in progress, and may have at most %u",
                                  (unsigned) uid, u->n_calls, what, f->limits.max_creations_per_user);
        else if (opener_unreaped(uid) >= OPENERS_UNREAPED_MAX)
                r = error_message(ret_error, -EUSERS,
                                  "User %u has %u blockjobd-opener processes that did not end when told to (stuck in a file system that does not answer?)",
                                  (unsigned) uid, opener_unreaped(uid));
        if (r < 0) {
                user_usage_trim(f, u);
                return r;
        }
        u->n_calls++;
        return 0;
}

void job_factory_release_call(JobFactory *f, uid_t uid) {
        UserUsage *u;

        if (uid == 0)
                return;
        u = user_usage(f, uid, false);
        assert(u && u->n_calls > 0);
        u->n_calls--;
        user_usage_trim(f, u);
}

int job_factory_claim_call_memory(JobFactory *f, uid_t uid, bool count, uint64_t *ret_max, char **ret_error) {
        const JobFactoryLimits *l = &f->limits;
        uint64_t max = l->max_memory_per_job;
        UserUsage *u;

        *ret_max = 0;
        if (uid == 0)
                return 0;               /* root is not limited, as in creations */
        u = user_usage(f, uid, true);
        if (!u)
                return error_message(ret_error, -ENOMEM, "Out of memory");
        if (l->max_memory_per_user > 0) {
                if (u->memory >= l->max_memory_per_user) {
                        user_usage_trim(f, u);
                        return error_message(ret_error, -E2BIG,
                                             "User %u's jobs already take the %" PRIu64 " MiB of memory a user may have for their images",
                                             (unsigned) uid, l->max_memory_per_user >> 20);
                }
                uint64_t left = l->max_memory_per_user - u->memory;
                max = max == 0 ? left : MIN(max, left);
        }
        if (count)
                u->memory += max;
        else
                user_usage_trim(f, u);
        *ret_max = max;
        return 0;
}

void job_factory_release_call_memory(JobFactory *f, uid_t uid, uint64_t memory) {
        UserUsage *u;

        if (uid == 0)
                return;
        u = user_usage(f, uid, false);
        assert(u && u->memory >= memory);
        u->memory -= memory;
        user_usage_trim(f, u);
}

/* ---- claims -------------------------------------------------------------------------------- */

struct JobClaim {
        JobFactory *factory;
        uid_t uid;
        ReservationSet *files;
        uint64_t memory;
        bool ended;
};

void job_claim_end(JobClaim *c) {
        UserUsage *u;

        if (!c || c->ended)
                return;
        c->ended = true;
        c->files = reservation_set_free(c->files);
        u = user_usage(c->factory, c->uid, false);
        assert(u && u->memory >= c->memory);
        u->memory -= c->memory;
        c->memory = 0;
}

JobClaim *job_claim_free(JobClaim *c) {
        UserUsage *u;

        if (!c)
                return NULL;
        job_claim_end(c);
        u = user_usage(c->factory, c->uid, false);
        assert(u && u->n_jobs > 0);
        u->n_jobs--;
        user_usage_trim(c->factory, u);
        free(c);
        return NULL;
}

/* ---- creations ----------------------------------------------------------------------------- */

/* One request's driver, as built on the worker. */
typedef struct Built {
        const JobDriver *driver;
        void *data;
        uint64_t size;
        ImageFormat source_format;
        uint64_t memory;
        uint64_t done;                  /* of 'size', what a resumed job had done before the restart */
        ReservationSet *files;
        ReservationSet *given;          /* the files as given, for telling who holds them */
} Built;

struct JobCreation {
        JobFactory *factory;
        uid_t uid;
        gid_t *groups;
        size_t n_groups;
        bool groups_unknown;
        bool grouped;
        JobCreationCheck check;         /* restored jobs: are these the recorded files? */
        void *check_userdata;

        size_t n;
        JobRequest *requests;
        Built *built;
        Job **jobs;
        JobClaim **claims;
        JobCreationFiles *files;        /* what each job's files were as it was built */
        unsigned jobs_counted;          /* in the user's n_jobs, for jobs no claim holds yet */
        bool creation_counted;          /* in the user's n_creations */

        /* Opening: each request's files, and its target-backing's chain. */
        OpenerCall **openers;
        OpenerCall **backing_openers;
        size_t next_open;
        unsigned openers_running;
        sd_event_source *deadline;

        /* Building: while a worker has it, a creation that is given up stays until it returns. */
        bool building;
        atomic_bool abandoned;          /* read by the worker: it stops early */
        uint64_t memory_left;           /* what the user may still take, as the build began; 0: no bound */
        int r;
        JobCreationError kind;
        char *error;
        size_t failed;                  /* the request that failed */

        JobCreationDone done;
        void *userdata;
};

static void built_done(Built *b) {
        if (b->data)
                b->driver->free(b->data);
        reservation_set_free(b->files);
        reservation_set_free(b->given);
        *b = (Built) {};
}

static void creation_uncount(JobCreation *c) {
        UserUsage *u = user_usage(c->factory, c->uid, false);

        if (!u)
                return;
        assert(u->n_jobs >= c->jobs_counted);
        u->n_jobs -= c->jobs_counted;
        c->jobs_counted = 0;
        if (c->creation_counted) {
                assert(u->n_creations > 0);
                u->n_creations--;
                c->creation_counted = false;
        }
        user_usage_trim(c->factory, u);
}

static void creation_stop_opening(JobCreation *c) {
        for (size_t i = 0; c->openers && i < c->n; i++)
                c->openers[i] = opener_call_free(c->openers[i]);
        for (size_t i = 0; c->backing_openers && i < c->n; i++)
                c->backing_openers[i] = opener_call_free(c->backing_openers[i]);
        c->openers_running = 0;
        c->deadline = sd_event_source_disable_unref(c->deadline);
}

static void creation_free_now(JobCreation *c) {
        creation_stop_opening(c);
        creation_uncount(c);
        for (size_t i = 0; i < c->n; i++) {
                if (c->built)
                        built_done(&c->built[i]);
                if (c->claims)
                        job_claim_free(c->claims[i]);
                /* A restored job's unfinished target is not removed by name here: whoever restores
                 * removes it, only while the name still holds the file it recorded. */
                if (c->requests[i].restore)
                        job_files_hand_over(&c->requests[i].files);
                job_request_done(&c->requests[i]);
        }
        free(c->openers);
        free(c->backing_openers);
        free(c->built);
        free(c->jobs);
        free(c->claims);
        free(c->files);
        free(c->requests);
        free(c->groups);
        free(c->error);
        free(c);
}

JobCreation *job_creation_free(JobCreation *c) {
        if (!c)
                return NULL;
        if (c->building) {
                /* The worker still uses it: it goes when the build returns. */
                creation_stop_opening(c);
                atomic_store(&c->abandoned, true);
                return NULL;
        }
        creation_free_now(c);
        return NULL;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(JobCreation *, job_creation_free);

/* 'restore': jobs that were admitted before a restart are counted, never refused. */
static int admit(JobCreation *c, size_t n, bool restore, char **ret_error) {
        JobFactory *f = c->factory;
        UserUsage *u;

        if (c->uid == 0)
                return 0;               /* root is not limited */

        u = user_usage(f, c->uid, true);
        if (!u)
                return error_message(ret_error, -ENOMEM, "Out of memory");
        if (restore)
                goto count;
        if (f->limits.max_creations_per_user > 0 && u->n_creations >= f->limits.max_creations_per_user)
                return error_message(ret_error, -EUSERS,
                                     "User %u has %u job creations in progress, and may have at most %u",
                                     (unsigned) c->uid, u->n_creations, f->limits.max_creations_per_user);
        if (opener_unreaped(c->uid) >= OPENERS_UNREAPED_MAX)
                return error_message(ret_error, -EUSERS,
                                     "User %u has %u blockjobd-opener processes that did not end when told to (stuck in a file system that does not answer?)",
                                     (unsigned) c->uid, opener_unreaped(c->uid));
        if (f->limits.max_jobs_per_user > 0 && u->n_jobs + n > f->limits.max_jobs_per_user)
                return error_message(ret_error, -EUSERS, "User %u has %u jobs, and may have at most %u",
                                     (unsigned) c->uid, u->n_jobs, f->limits.max_jobs_per_user);
count:
        u->n_creations++;
        u->n_jobs += n;
        c->creation_counted = true;
        c->jobs_counted = n;
        return 0;
}

static int creation_new(JobFactory *f, const JobCaller *caller, size_t n, bool grouped, bool restore,
                        JobCreation **ret, char **ret_error) {
        _cleanup_(job_creation_freep) JobCreation *c = NULL;
        int r;

        c = calloc(1, sizeof(*c));
        if (!c)
                return error_message(ret_error, -ENOMEM, "Out of memory");
        *c = (JobCreation) {
                .factory = f,
                .uid = caller->uid,
                .groups_unknown = caller->groups_unknown,
                .grouped = grouped,
                .n = n,
        };
        if (caller->n_groups > 0) {
                c->groups = calloc(caller->n_groups, sizeof(gid_t));
                if (!c->groups)
                        return error_message(ret_error, -ENOMEM, "Out of memory");
                memcpy(c->groups, caller->groups, caller->n_groups * sizeof(gid_t));
                c->n_groups = caller->n_groups;
        }
        c->requests = calloc(MAX(n, (size_t) 1), sizeof(JobRequest));
        c->built = calloc(MAX(n, (size_t) 1), sizeof(Built));
        c->jobs = calloc(MAX(n, (size_t) 1), sizeof(Job *));
        c->claims = calloc(MAX(n, (size_t) 1), sizeof(JobClaim *));
        c->files = calloc(MAX(n, (size_t) 1), sizeof(JobCreationFiles));
        c->openers = calloc(MAX(n, (size_t) 1), sizeof(OpenerCall *));
        c->backing_openers = calloc(MAX(n, (size_t) 1), sizeof(OpenerCall *));
        if (!c->requests || !c->built || !c->jobs || !c->claims || !c->files || !c->openers || !c->backing_openers)
                return error_message(ret_error, -ENOMEM, "Out of memory");
        for (size_t i = 0; i < n; i++)
                c->requests[i] = (JobRequest) JOB_REQUEST_INIT;

        r = admit(c, n, restore, ret_error);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(c);
        return 0;
}

int job_creation_new(JobFactory *f, const JobCaller *caller, size_t n, bool grouped, JobCreation **ret,
                     char **ret_error) {
        return creation_new(f, caller, n, grouped, false, ret, ret_error);
}

int job_creation_new_restore(JobFactory *f, const JobCaller *caller, size_t n, bool grouped, JobCreationCheck check,
                             void *userdata, JobCreation **ret, char **ret_error) {
        int r;

        r = creation_new(f, caller, n, grouped, true, ret, ret_error);
        if (r < 0)
                return r;
        (*ret)->check = check;
        (*ret)->check_userdata = userdata;
        return 0;
}

JobRequest *job_creation_request(JobCreation *c, size_t i) {
        assert(i < c->n);
        return &c->requests[i];
}

Job *job_creation_job(JobCreation *c, size_t i) {
        assert(i < c->n);
        return c->jobs[i];
}

ImageFormat job_creation_source_format(JobCreation *c, size_t i) {
        assert(i < c->n);
        return c->built[i].source_format;
}

const JobCreationFiles *job_creation_files(JobCreation *c, size_t i) {
        assert(i < c->n);
        return &c->files[i];
}

JobClaim *job_creation_take_claim(JobCreation *c, size_t i) {
        assert(i < c->n);
        return TAKE_PTR(c->claims[i]);
}

static void creation_finish(JobCreation *c, int r, JobCreationError kind, const char *message) {
        creation_stop_opening(c);
        if (r < 0)
                log_debug("Creating jobs for user %u failed: %s", (unsigned) c->uid, strempty(message));
        c->done(c, r, kind, message, c->userdata);
}

/* The reason to give for a failure that means the daemon ran out of something. */
static JobCreationError classify(int r, char **error) {
        if (IN_SET(r, -EMFILE, -ENFILE)) {
                (void) error_message(error, r, "blockjobd has run out of file descriptors");
                return JOB_CREATION_ERROR_LIMIT;
        }
        if (r == -ENOMEM) {
                (void) error_message(error, r, "blockjobd has run out of memory");
                return JOB_CREATION_ERROR_LIMIT;
        }
        if (IN_SET(r, -E2BIG, -EUSERS))
                return JOB_CREATION_ERROR_LIMIT;
        return JOB_CREATION_ERROR_IMAGE;
}

/* ---- creating the jobs (loop) ---------------------------------------------------------------- */

static int check_memory(JobCreation *c, char **ret_error) {
        const JobFactoryLimits *l = &c->factory->limits;
        UserUsage *u;
        uint64_t total = 0;

        if (c->uid == 0)
                return 0;
        for (size_t i = 0; i < c->n; i++) {
                if (l->max_memory_per_job > 0 && c->built[i].memory > l->max_memory_per_job)
                        return error_message(ret_error, -E2BIG,
                                             "Job on '%s' would need up to %" PRIu64 " MiB of memory for its images, more than the %" PRIu64 " MiB a job may have",
                                             c->requests[i].source, c->built[i].memory >> 20, l->max_memory_per_job >> 20);
                total += c->built[i].memory;
        }
        u = user_usage(c->factory, c->uid, false);
        if (u && l->max_memory_per_user > 0 && u->memory + total > l->max_memory_per_user)
                return error_message(ret_error, -E2BIG,
                                     "User %u's jobs would need up to %" PRIu64 " MiB of memory for their images, more than the %" PRIu64 " MiB a user may have",
                                     (unsigned) c->uid, (u->memory + total) >> 20, l->max_memory_per_user >> 20);
        return 0;
}

/* A restored job's progress: of what its driver has to do, what it had done at its checkpoint
 * (the driver knows: a backup of a bitmap counts only the marked bytes); the checkpoint too, kept
 * by the core until the next one. */
static void restore_progress(const JobRequest *q, const Built *b, JobRestoreParams *rp) {
        rp->progress_total = b->size;
        rp->progress_current = MIN(b->done, b->size);
        rp->has_checkpoint = q->resume.resume && q->resume.offset > 0;
        rp->checkpoint = q->resume.offset;
}

static void creation_create_jobs(JobCreation *c) {
        JobFactory *f = c->factory;
        _cleanup_free_ ReservationSet **sets = NULL;
        _cleanup_free_ char *error = NULL;
        JobTxn *txn = NULL;
        size_t n = 0;
        int r;

        r = check_memory(c, &error);
        if (r < 0) {
                creation_finish(c, r, JOB_CREATION_ERROR_LIMIT, error);
                return;
        }

        sets = calloc(MAX(c->n, (size_t) 1), sizeof(ReservationSet *));
        if (!sets) {
                creation_finish(c, -ENOMEM, JOB_CREATION_ERROR_LIMIT, "blockjobd has run out of memory");
                return;
        }
        for (size_t i = 0; i < c->n; i++)
                sets[i] = c->built[i].files;
        for (size_t i = 0; i < c->n; i++) {
                r = reservation_set_check(sets[i], sets, c->n, &error);
                if (r < 0) {
                        creation_finish(c, r, JOB_CREATION_ERROR_IN_USE, error);
                        return;
                }
        }

        if (c->grouped && job_txn_new(f->registry, &txn) < 0) {
                creation_finish(c, -ENOMEM, JOB_CREATION_ERROR_LIMIT, "blockjobd has run out of memory");
                return;
        }
        for (; n < c->n; n++) {
                const JobRequest *q = &c->requests[n];
                Built *b = &c->built[n];
                JobCreateParams p = {
                        .id = q->job_id,
                        .owner = c->uid,
                        .driver = b->driver,
                        .driver_data = b->data,
                        .auto_finalize = q->auto_finalize,
                        .auto_dismiss = q->auto_dismiss,
                        .speed = q->speed,
                        .on_source_error = q->on_source_error,
                        .on_target_error = q->on_target_error,
                        .txn = txn,
                };

                if (q->restore) {
                        JobRestoreParams rp = q->restore_params;
                        rp.create = p;
                        restore_progress(q, b, &rp);
                        r = job_restore(f->registry, &rp, &c->jobs[n], &error);
                } else
                        r = job_create(f->registry, &p, &c->jobs[n], &error);
                if (r < 0)
                        break;
                b->data = NULL;         /* the job owns it now */
                if (!q->restore)
                        job_progress_set_remaining(c->jobs[n], b->size);
        }
        job_txn_unref(txn);
        if (r < 0) {
                /* As in QEMU: jobs that already existed go away again, created → null. A restored
                 * one was never started: cancelled, it ends at once (job_restore()). */
                for (size_t i = 0; i < n; i++) {
                        if (c->requests[i].restore) {
                                (void) job_user_cancel(c->jobs[i], true, NULL);
                                job_restore_start(c->jobs[i]);
                        } else
                                job_early_fail(c->jobs[i]);
                        c->jobs[i] = NULL;
                }
                creation_finish(c, r, r == -ENOMEM ? JOB_CREATION_ERROR_LIMIT : JOB_CREATION_ERROR_CORE, error);
                return;
        }

        /* From here on nothing fails: each job holds its files and its place. */
        UserUsage *u = user_usage(f, c->uid, true);
        for (size_t i = 0; i < c->n; i++) {
                JobClaim *claim = calloc(1, sizeof(*claim));
                Built *b = &c->built[i];

                if (!claim || !u || reservation_set_commit(b->files, job_id(c->jobs[i]),
                                                           job_type_to_string(job_type(c->jobs[i]))) < 0) {
                        /* Too late to fail the creation: the job runs without its reservations. */
                        log_oom();
                        free(claim);
                        continue;
                }
                *claim = (JobClaim) {
                        .factory = f,
                        .uid = c->uid,
                        .files = TAKE_PTR(b->files),
                        .memory = b->memory,
                };
                u->memory += b->memory;
                if (c->jobs_counted > 0)
                        c->jobs_counted--;
                else
                        u->n_jobs++;    /* root's jobs are counted from here */
                c->claims[i] = claim;
        }
        creation_finish(c, 0, 0, NULL);
}

/* ---- building the drivers (worker) --------------------------------------------------------- */

typedef struct ClaimList {
        FileClaim *claims;
        size_t n;
        int r;
} ClaimList;

static void add_claim(int fd, const char *entry, const char *label, FileUse use, void *userdata) {
        ClaimList *l = userdata;
        FileClaim c = { .write = use == FILE_USE_WRITE };
        int r;

        if (l->r < 0)
                return;
        r = file_identity(fd, &c.id);
        if (r < 0) {
                l->r = r;
                return;
        }
        c.entry = entry ? strdup(entry) : NULL;
        c.label = strdup(strempty(label));
        FileClaim *a = reallocarray(l->claims, l->n + 1, sizeof(FileClaim));
        if (!c.label || (entry && !c.entry) || !a) {
                file_claim_done(&c);
                if (a)
                        l->claims = a;
                l->r = -ENOMEM;
                return;
        }
        l->claims = a;
        l->claims[l->n++] = c;
}

static void list_files(const JobRequest *q, const Built *b, FileUseFunc f, void *userdata) {
        switch (q->type) {
        case JOB_TYPE_BACKUP:
                backup_list_files(b->data, f, userdata);
                break;
        case JOB_TYPE_MIRROR:
                mirror_list_files(b->data, f, userdata);
                break;
        case JOB_TYPE_COMMIT:
                commit_list_files(b->data, f, userdata);
                break;
        case JOB_TYPE_STREAM:
                stream_list_files(b->data, f, userdata);
                break;
        default:
                assert_se(false);
        }
}

/* A descriptor opened for appending only is never written at random offsets. */
static int check_passed_chain(const JobRequest *q, char **ret_error) {
        if (!q->chain_passed || !IN_SET(q->type, JOB_TYPE_COMMIT, JOB_TYPE_STREAM))
                return 0;
        for (size_t i = 0; i < q->files.n_chain; i++) {
                int fl = fcntl(q->files.chain[i], F_GETFL);
                if (fl >= 0 && (fl & O_APPEND))
                        return error_message(ret_error, -EACCES,
                                             "The descriptor for layer %zu of '%s' is open for appending only", i,
                                             q->source);
        }
        return 0;
}

static int build_driver(JobRequest *q, uint64_t memory_max, Built *b, char **ret_error) {
        const CopyParams copy = {
                .source = q->source,
                .target = q->target,
                .files = &q->files,
                .source_format = q->source_format,
                .overwrite = q->overwrite,
                .sync_top = q->sync == SYNC_TOP,
                .target_format = q->target_format,
                .memory_max = memory_max,
                .resume = q->resume,
        };
        int r;

        switch (q->type) {
        case JOB_TYPE_BACKUP: {
                BackupParams p = {
                        .copy = copy,
                        .bitmap = q->bitmap,
                        .bitmap_mode = q->bitmap_mode,
                        .sync_bitmap = q->sync == SYNC_BITMAP,
                        .target_backing = q->target_backing,
                        .target_backing_path = q->target_backing_path,
                        .target_backing_format = q->target_backing_format,
                        .target_backing_files = &q->target_backing_files,
                };
                Backup *d = NULL;
                r = backup_open(&p, &d, ret_error);
                if (r < 0)
                        return r;
                *b = (Built) { &backup_driver, d, backup_size(d), backup_source_format(d), backup_memory(d),
                               .done = backup_resumed_progress(d) };
                return 0;
        }
        case JOB_TYPE_MIRROR: {
                MirrorParams p = { .copy = copy, .granularity = q->granularity, .buf_size = q->buf_size };
                Mirror *d = NULL;
                r = mirror_open(&p, &d, ret_error);
                if (r < 0)
                        return r;
                *b = (Built) { &mirror_driver, d, mirror_size(d), mirror_source_format(d), mirror_memory(d) };
                return 0;
        }
        case JOB_TYPE_COMMIT: {
                CommitParams p = {
                        .image = q->source,
                        .top = q->top,
                        .base = q->base,
                        .backing_file = q->backing_file,
                        .base_format = q->base_format,
                        .files = &q->files,
                        .memory_max = memory_max,
                        .resume = q->resume,
                };
                Commit *d = NULL;
                r = commit_open(&p, &d, ret_error);
                if (r < 0)
                        return r;
                *b = (Built) { &commit_driver, d, commit_size(d), IMAGE_FORMAT_QCOW2, commit_memory(d),
                               .done = q->resume.offset };
                return 0;
        }
        case JOB_TYPE_STREAM: {
                StreamParams p = {
                        .image = q->source,
                        .base = q->base,
                        .backing_file = q->backing_file,
                        .base_format = q->base_format,
                        .files = &q->files,
                        .memory_max = memory_max,
                        .resume = q->resume,
                };
                Stream *d = NULL;
                r = stream_open(&p, &d, ret_error);
                if (r < 0)
                        return r;
                *b = (Built) { &stream_driver, d, stream_size(d), IMAGE_FORMAT_QCOW2, stream_memory(d),
                               .done = q->resume.offset };
                return 0;
        }
        default:
                return error_message(ret_error, -EINVAL, "Unknown job type");
        }
}

/* The claims of a ClaimList, moved into a new set. */
static int claims_to_set(Reservations *reservations, ClaimList *l, ReservationSet **ret) {
        ReservationSet *set = NULL;
        int r = l->r;

        if (r >= 0) {
                set = reservation_set_new(reservations);
                r = set ? reservation_set_add(set, l->claims, l->n) : -ENOMEM;
        }
        for (size_t i = 0; i < l->n; i++)
                file_claim_done(&l->claims[i]);
        free(l->claims);
        *l = (ClaimList) {};
        if (r < 0) {
                reservation_set_free(set);
                return r;
        }
        *ret = set;
        return 0;
}

/* The files as they were given, before anything is opened on them: if opening fails because a
 * file is in use, these tell by which job. */
static void list_given_files(const JobRequest *q, FileUseFunc f, void *userdata) {
        const JobFiles *files = &q->files;
        bool written = IN_SET(q->type, JOB_TYPE_COMMIT, JOB_TYPE_STREAM);

        for (size_t i = 0; i < files->n_chain; i++)
                f(files->chain[i], NULL, q->source,
                  (written || job_request_writes_bitmap(q)) && i == 0 ? FILE_USE_WRITE : FILE_USE_READ, userdata);
        for (size_t i = 0; i < q->target_backing_files.n_chain; i++)
                f(q->target_backing_files.chain[i], NULL, q->target_backing, FILE_USE_READ, userdata);
        if (files->target_fd >= 0 && files->target_dir_fd >= 0)
                f(files->target_dir_fd, files->target_name, q->target, FILE_USE_WRITE, userdata);
        else if (files->target_fd >= 0)
                f(files->target_fd, NULL, q->target, FILE_USE_WRITE, userdata);
}

static int build_one(Reservations *reservations, JobRequest *q, uint64_t memory_max, Built *b, char **ret_error) {
        ClaimList given_claims = {}, used = {};
        ReservationSet *given = NULL;
        int r;

        list_given_files(q, add_claim, &given_claims);
        (void) claims_to_set(reservations, &given_claims, &given);

        r = check_passed_chain(q, ret_error);
        if (r >= 0)
                r = build_driver(q, memory_max, b, ret_error);
        if (r < 0) {
                b->given = given;
                return r;
        }
        reservation_set_free(given);
        /* The driver has the target now, and removes a named temporary file itself. */
        job_files_hand_over(&q->files);

        list_files(q, b, add_claim, &used);
        r = claims_to_set(reservations, &used, &b->files);
        if (r < 0)
                return error_message(ret_error, r, "Could not tell the files of the job on '%s' apart: %m", q->source);
        return 0;
}

/* How much the next job may take: what a job may have, and what is left of the user's. */
static uint64_t memory_for_next(const JobCreation *c) {
        uint64_t per_job = c->factory->limits.max_memory_per_job;

        if (c->uid == 0)
                return 0;
        if (c->memory_left == 0)
                return per_job;
        return per_job == 0 ? c->memory_left : MIN(per_job, c->memory_left);
}

/* Worker: what the source and the target are, as the job starts (what a record keeps, to tell
 * after a restart whether they are still the same files). */
static void note_files(const JobRequest *q, JobCreationFiles *ret) {
        const JobFiles *files = &q->files;

        *ret = (JobCreationFiles) {};
        if (files->n_chain > 0 && fstat(files->chain[0], &ret->source) >= 0)
                ret->source_known = true;
        if (files->target_fd >= 0 && fstat(files->target_fd, &ret->target) >= 0) {
                ret->target_known = true;
                ret->target_in_place = files->target_dir_fd < 0;
        }
}

/* Worker: the new target's file, for its hidden name (persist.h). */
static void note_target_file(const Built *b, JobCreationFiles *ret) {
        TargetFile *t = NULL;

        if (b->driver == &backup_driver)
                t = backup_target_file(b->data);
        else if (b->driver == &mirror_driver)
                t = mirror_target_file(b->data);
        ret->target_file = t && !target_file_in_place(t) && target_file_fd(t) >= 0 ? t : NULL;
}

static void creation_build(void *userdata) {
        JobCreation *c = userdata;

        /* Each job's images stop opening once they would take more than the bounds allow, and so
         * does the creation, however many jobs it holds: nothing is allocated past the bound and
         * then counted. (The loop checks again, against what others took meanwhile.) */
        for (size_t i = 0; i < c->n && !atomic_load(&c->abandoned); i++) {
                _cleanup_free_ char *error = NULL;
                int r = 0;
                note_files(&c->requests[i], &c->files[i]);
                if (c->check)
                        r = c->check(&c->requests[i], &c->files[i], c->check_userdata, &error);
                if (r >= 0)
                        r = build_one(c->factory->reservations, &c->requests[i], memory_for_next(c), &c->built[i],
                                      &error);
                if (r >= 0 && c->uid != 0 && c->memory_left > 0) {
                        if (c->built[i].memory >= c->memory_left)
                                r = error_message(&error, -E2BIG,
                                                  "User %u's jobs would need more than the %" PRIu64 " MiB of memory a user may have for their images",
                                                  (unsigned) c->uid, c->factory->limits.max_memory_per_user >> 20);
                        else
                                c->memory_left -= c->built[i].memory;
                }
                if (r >= 0)
                        note_target_file(&c->built[i], &c->files[i]);
                if (r < 0) {
                        c->r = r;
                        c->failed = i;
                        c->kind = classify(r, &error);
                        c->error = TAKE_PTR(error);
                        return;
                }
        }
}

static void creation_built(void *userdata) {
        JobCreation *c = userdata;

        c->building = false;
        if (atomic_load(&c->abandoned)) {
                creation_free_now(c);
                return;
        }
        if (c->r == -EBUSY) {
                /* A file is in use (QEMU's locks, a device claimed): by one of our jobs? Then say
                 * which. */
                _cleanup_free_ char *holder = NULL;
                ReservationSet *given = c->built[c->failed].given;
                if (given && reservation_set_check(given, NULL, 0, &holder) < 0)
                        creation_finish(c, -ETXTBSY, JOB_CREATION_ERROR_IN_USE, holder);
                else
                        creation_finish(c, c->r, JOB_CREATION_ERROR_IN_USE, c->error);
                return;
        }
        if (c->r < 0) {
                creation_finish(c, c->r, c->kind, c->error);
                return;
        }
        creation_create_jobs(c);
}

/* ---- opening the files (loop) ---------------------------------------------------------------- */

static void creation_open_next(JobCreation *c);

static int on_deadline(sd_event_source *s, uint64_t usec, void *userdata) {
        JobCreation *c = userdata;
        _cleanup_free_ char *error = NULL;

        (void) error_message(&error, -ETIMEDOUT, "Opening the files as user %u took too long", (unsigned) c->uid);
        creation_finish(c, -ETIMEDOUT, JOB_CREATION_ERROR_IMAGE, error);
        return 0;
}

/* The opener's refusal of a probed qcow2 target-backing that has a backing file names the
 * option that gives the format: target-backing-format there, not source-format. */
static char *backing_message(const char *error) {
        static const char hint[] = "pass source-format=";
        const char *p = error ? strstr(error, hint) : NULL;
        char *s;

        if (!p)
                return NULL;
        if (asprintf(&s, "%.*spass target-backing-format=%s", (int) (p - error), error, p + strlen(hint)) < 0)
                return NULL;
        return s;
}

static void on_opened(OpenerCall *call, int r, bool ours, const char *error, void *userdata) {
        JobCreation *c = userdata;
        bool backing = false;

        for (size_t i = 0; i < c->n; i++) {
                if (c->openers[i] == call)
                        c->openers[i] = opener_call_free(call);
                if (c->backing_openers[i] == call) {
                        c->backing_openers[i] = opener_call_free(call);
                        backing = true;
                }
        }
        assert(c->openers_running > 0);
        c->openers_running--;

        /* What the opener says is about the caller's files, as the caller sees them (even an
         * EMFILE is the opener's, not ours); what we could not take of its answer is ours. */
        if (r < 0 && ours) {
                _cleanup_free_ char *message = NULL;
                JobCreationError kind = classify(r, &message);
                creation_finish(c, r, kind, message ?: error);
                return;
        }
        if (r < 0) {
                _cleanup_free_ char *message = backing ? backing_message(error) : NULL;
                creation_finish(c, r, JOB_CREATION_ERROR_IMAGE, message ?: error);
                return;
        }
        creation_open_next(c);
}

/* What the opener is to do for one request, if anything. */
static bool opener_request(const JobCreation *c, const JobRequest *q, OpenerRequest *ret) {
        bool chain = !q->chain_passed, target = q->target && !q->target_passed;

        *ret = (OpenerRequest) {
                .uid = c->uid,
                .groups = c->groups,
                .n_groups = c->n_groups,
                .groups_from_user_database = c->groups_unknown,
                .chain_path = chain ? q->source : NULL,
                /* Commit and stream work on qcow2 images only, so nothing is probed for them. */
                .chain_format = IN_SET(q->type, JOB_TYPE_COMMIT, JOB_TYPE_STREAM) ? IMAGE_FORMAT_QCOW2 : q->source_format,
                /* A backup that writes the source's bitmap needs the caller's right to write it. */
                .chain_write = IN_SET(q->type, JOB_TYPE_COMMIT, JOB_TYPE_STREAM) || job_request_writes_bitmap(q),
                .target_path = target ? q->target : NULL,
                .target_overwrite = q->overwrite,
                .target_resume_name = target ? q->target_resume_name : NULL,
        };
        return chain || target;
}

/* A backup's target-backing: its chain, read, with the caller's rights; a relative name is
 * relative to the target's directory, as QEMU reads it from the target. */
static int backing_opener_request(const JobCreation *c, JobRequest *q, OpenerRequest *ret) {
        if (!q->target_backing)
                return 0;
        if (!q->target_backing_path) {
                if (q->target_backing[0] == '/')
                        q->target_backing_path = strdup(q->target_backing);
                else {
                        const char *slash = strrchr(strempty(q->target), '/');
                        int n = slash ? (int) (slash - q->target) : 0;
                        if (asprintf(&q->target_backing_path, "%.*s/%s", n, q->target, q->target_backing) < 0)
                                q->target_backing_path = NULL;
                }
                if (!q->target_backing_path)
                        return -ENOMEM;
        }
        *ret = (OpenerRequest) {
                .uid = c->uid,
                .groups = c->groups,
                .n_groups = c->n_groups,
                .groups_from_user_database = c->groups_unknown,
                .chain_path = q->target_backing_path,
                .chain_format = q->target_backing_format,
        };
        return 1;
}

static void creation_open_next(JobCreation *c) {
        JobFactory *f = c->factory;
        int r;

        /* Two calls per request at most: its files, then its target-backing's. */
        while (c->next_open < 2 * c->n && c->openers_running < OPENERS_PER_CREATION) {
                size_t i = c->next_open / 2;
                bool backing = c->next_open++ % 2;
                JobRequest *q = &c->requests[i];
                OpenerRequest o;

                if (backing) {
                        r = backing_opener_request(c, q, &o);
                        if (r < 0) {
                                creation_finish(c, r, JOB_CREATION_ERROR_LIMIT, "blockjobd has run out of memory");
                                return;
                        }
                        if (r == 0)
                                continue;
                        r = opener_call_start(f->event, &o, &q->target_backing_files, on_opened, c, &c->backing_openers[i]);
                } else {
                        if (!opener_request(c, q, &o))
                                continue;
                        r = opener_call_start(f->event, &o, &q->files, on_opened, c, &c->openers[i]);
                }
                if (r < 0) {
                        _cleanup_free_ char *error = NULL;
                        (void) error_message(&error, r, "Could not run blockjobd-opener: %m");
                        creation_finish(c, r, classify(r, &error), error);
                        return;
                }
                c->openers_running++;
        }
        if (c->openers_running > 0 || c->next_open < 2 * c->n)
                return;

        /* Everything is open: on to a worker, with what the user may still take. */
        c->deadline = sd_event_source_disable_unref(c->deadline);
        UserUsage *u = user_usage(f, c->uid, false);
        if (c->uid != 0 && f->limits.max_memory_per_user > 0)
                c->memory_left = f->limits.max_memory_per_user - MIN(u ? u->memory : 0, f->limits.max_memory_per_user - 1);
        r = worker_pool_call(f->pool, c->uid, creation_build, creation_built, c);
        if (r < 0) {
                creation_finish(c, r, JOB_CREATION_ERROR_LIMIT, "blockjobd has run out of memory");
                return;
        }
        c->building = true;
}

int job_creation_start(JobCreation *c, JobCreationDone done, void *userdata) {
        uint64_t now;
        int r;

        c->done = done;
        c->userdata = userdata;

        r = sd_event_now(c->factory->event, CLOCK_MONOTONIC, &now);
        if (r < 0)
                return r;
        r = sd_event_add_time(c->factory->event, &c->deadline, CLOCK_MONOTONIC, now + JOB_FACTORY_OPEN_TIMEOUT_USEC,
                              0, on_deadline, c);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(c->deadline, "creation-deadline");

        creation_open_next(c);
        return 0;
}
