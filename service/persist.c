/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <sys/stat.h>
#include <unistd.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus-job.h"
#include "error-message.h"
#include "fd-util.h"
#include "hashmap.h"
#include "opener.h"
#include "list.h"
#include "log.h"
#include "macro.h"
#include "manager.h"
#include "path-util.h"
#include "persist.h"
#include "state-dir.h"

#include <systemd/sd-daemon.h>

static void *mfree(void *p) {
        free(p);
        return NULL;
}

typedef struct Record Record;

/* A record whose job continues, collected at start (resume_all()). */
typedef struct ResumeEntry {
        char *name;                     /* the record's file name */
        JobRecord *record;
} ResumeEntry;

struct Persist {
        Manager *manager;
        StateDir *dir;
        char *path;                     /* for messages */
        Hashmap *records;               /* record name → Record */
        Record *all;                    /* the same, as a list */
        unsigned n_busy;                /* writes and removals in flight */

        /* At start: records of jobs that continue, collected, then built again in groups (a
         * grouped transaction's members together), n_resuming of them still being built. */
        ResumeEntry *resume;
        size_t n_resume;
        unsigned n_resuming;
        bool restore_started;

        /* Descriptors systemd kept for us (its file descriptor store), handed back at start:
         * by name for the restore, in order to close or drop the ones no record names. */
        struct StoredFd *stored;
        size_t n_stored;
        Hashmap *stored_by_name;
};

typedef struct StoredFd {
        char *name;
        int fd;
        bool used;
} StoredFd;

/* One record file and the job it belongs to. At most one operation on it is in flight ('busy');
 * whatever changes meanwhile is only marked ('dirty', 'gone') and done when it returns, newest
 * state first and only. */
struct Record {
        Persist *persist;
        LIST_FIELDS(Record, all);
        char *name;                     /* "<owner>-<id>.job", the key */
        uint32_t owner;
        Job *job;                       /* NULL once the job is gone */
        JobRecord *record;              /* what is to be on disk; NULL: a damaged record, never rewritten */
        bool on_disk;                   /* a file may exist under the name */
        bool dirty;                     /* 'record' is newer than what was written */
        bool gone;                      /* the job is dismissed: the file goes */
        bool restoring;                 /* a restored job on its way to concluded: its passing statuses
                                         * are not real, and are not written over what was recorded */
        TargetFile *target_file;        /* the job's new target, in its driver: kept under its hidden
                                         * name when the daemon stops (persist_forget()) */
        PersistDoneFunc done;           /* a creation waiting for the next write */
        void *done_userdata;

        /* The operation in flight (worker side reads these only). */
        bool busy;
        bool op_remove;
        char *op_data;
        size_t op_size;
        int op_r;
        char *op_error;
        PersistDoneFunc op_done;
        void *op_done_userdata;
};

static Record *record_free(Record *e) {
        if (!e)
                return NULL;
        assert(!e->busy);
        if (e->persist) {
                (void) hashmap_remove(e->persist->records, e->name);
                LIST_REMOVE(all, e->persist->all, e);
        }
        job_record_free(e->record);
        free(e->op_data);
        free(e->op_error);
        free(e->name);
        free(e);
        return NULL;
}

static int record_new(Persist *p, const char *name, uint32_t owner, Record **ret) {
        Record *e;
        int r;

        e = calloc(1, sizeof(*e));
        if (!e)
                return -ENOMEM;
        e->name = strdup(name);
        if (!e->name) {
                free(e);
                return -ENOMEM;
        }
        e->owner = owner;
        r = hashmap_put(p->records, e->name, e);
        if (r < 0) {
                record_free(e);
                return r;
        }
        e->persist = p;
        LIST_PREPEND(all, p->all, e);
        *ret = e;
        return 0;
}

/* ---- the worker's side ------------------------------------------------------------------------- */

static void record_run(void *userdata) {
        Record *e = userdata;

        if (e->op_remove) {
                e->op_r = state_dir_remove(e->persist->dir, e->name, &e->op_error);
                /* Never written (a creation whose first write failed): nothing to remove. */
                if (e->op_r == -ENOENT)
                        e->op_r = 0;
        } else
                e->op_r = state_dir_write(e->persist->dir, e->name, e->op_data, e->op_size, &e->op_error);
}

static int record_kick(Record *e);

static void record_done(void *userdata) {
        Record *e = userdata;
        Persist *p = e->persist;
        _cleanup_free_ char *error = TAKE_PTR(e->op_error);
        PersistDoneFunc done = TAKE_PTR(e->op_done);
        void *done_userdata = TAKE_PTR(e->op_done_userdata);
        int r = e->op_r;

        assert(p->n_busy > 0);
        p->n_busy--;
        e->busy = false;
        e->op_data = mfree(e->op_data);

        if (r < 0)
                log_warning_errno(r, "Failed to %s job record %s/%s/%s: %s", e->op_remove ? "remove" : "write",
                                  p->path, STATE_DIR_JOBS, e->name, (error ?: "out of memory"));
        else if (e->op_remove)
                e->on_disk = false;

        /* The next operation first: the callback may make the job go (and so this record). */
        (void) record_kick(e);
        if (done)
                done(r, r < 0 ? (error ?: "out of memory") : NULL, done_userdata);
        manager_changed(p->manager);
}

/* Starts what is due, unless an operation is in flight (then its return starts it). May free the
 * record (a removed job with nothing on disk). */
static int record_kick(Record *e) {
        Persist *p = e->persist;
        _cleanup_free_ char *error = NULL;
        int r;

        if (e->busy)
                return 0;
        if (e->gone) {
                if (!e->on_disk) {
                        record_free(e);
                        return 0;
                }
                e->op_remove = true;
        } else if (e->dirty && e->record) {
                r = job_record_serialize(e->record, &e->op_data, &e->op_size, &error);
                if (r < 0) {
                        /* Not expected: every field comes from a job the daemon accepted. */
                        e->dirty = false;
                        return log_error_errno(r, "Cannot write job record %s: %s", e->name, error ?: "out of memory");
                }
                e->op_remove = false;
                e->dirty = false;
                e->on_disk = true;
                e->op_done = TAKE_PTR(e->done);
                e->op_done_userdata = TAKE_PTR(e->done_userdata);
        } else
                return 0;

        r = worker_pool_call(p->manager->pool, e->owner, record_run, record_done, e);
        if (r < 0) {
                /* Tried again at the next change. */
                e->op_data = mfree(e->op_data);
                e->done = TAKE_PTR(e->op_done);
                e->done_userdata = TAKE_PTR(e->op_done_userdata);
                e->dirty = !e->op_remove;
                return log_oom();
        }
        e->busy = true;
        p->n_busy++;
        return 0;
}

/* ---- the jobs' side ------------------------------------------------------------------------------ */

static void record_unstore_fds(const JobRecord *r);

static Record *record_for_job(Persist *p, Job *j) {
        _cleanup_free_ char *name = NULL;
        Record *e;

        if (job_record_file_name(job_owner(j), job_id(j), &name) < 0)
                return NULL;
        e = hashmap_get(p->records, name);
        return e && e->job == j ? e : NULL;
}

void persist_status_changed(Persist *p, Job *j, JobStatus status) {
        Record *e = record_for_job(p, j);
        JobRecord *r;

        if (!e)
                return;         /* not recorded (yet): a creation before its first write */
        if (status == JOB_STATUS_NULL) {
                /* Dismissed (a job stopped for a restart was forgotten before it went). */
                record_unstore_fds(e->record);
                e->job = NULL;
                e->gone = true;
                e->done = NULL;
                (void) record_kick(e);
                return;
        }
        if (e->restoring) {
                if (status != JOB_STATUS_CONCLUDED)
                        return;
                e->restoring = false;
        }
        r = e->record;
        if (!r)
                return;

        r->status = status;
        r->user_paused = job_is_user_paused(j);
        r->error = mfree(r->error);
        if (IN_SET(status, JOB_STATUS_ABORTING, JOB_STATUS_CONCLUDED) && job_error(j) && *job_error(j)) {
                r->error = strndup(job_error(j), JOB_RECORD_ERROR_MAX);
                if (!r->error)
                        log_oom();
        }
        e->dirty = true;
        (void) record_kick(e);
}

/* A checkpoint of the job's driver (job-driver.h), in the record: a backup's copied prefix,
 * commit's and stream's offset; a mirror keeps none. True if the record changed. */
static bool record_set_checkpoint(JobRecord *r, uint64_t value) {
        switch (r->type) {
        case JOB_TYPE_BACKUP:
                if (r->n_ranges == 1 && r->ranges[0].start == 0 && r->ranges[0].length == value)
                        return false;
                r->n_ranges = 0;
                if (value > 0 && job_record_add_range(r, 0, value) < 0) {
                        log_oom();      /* none: the job copies everything again after a restart */
                        return true;
                }
                return true;
        case JOB_TYPE_COMMIT:
        case JOB_TYPE_STREAM:
                if (r->offset == value)
                        return false;
                r->offset = value;
                return true;
        default:
                return false;
        }
}

void persist_changed(Persist *p, Job *j, JobChange what) {
        Record *e;
        bool dirty = false;
        uint64_t checkpoint;

        if (!(what & (JOB_CHANGE_SPEED | JOB_CHANGE_USER_PAUSED | JOB_CHANGE_CHECKPOINT)))
                return;
        e = record_for_job(p, j);
        if (!e || !e->record || e->restoring)
                return;
        if ((what & JOB_CHANGE_SPEED) && e->record->speed != job_speed(j)) {
                e->record->speed = job_speed(j);
                dirty = true;
        }
        /* A user pause is kept as soon as it is asked for: a job paused by its user while a step
         * ran, or resumed while held by an internal pause, comes back as its user left it. */
        if ((what & JOB_CHANGE_USER_PAUSED) && e->record->user_paused != job_is_user_paused(j)) {
                e->record->user_paused = job_is_user_paused(j);
                dirty = true;
        }
        if ((what & JOB_CHANGE_CHECKPOINT) && job_checkpoint(j, &checkpoint) &&
            record_set_checkpoint(e->record, checkpoint))
                dirty = true;
        if (!dirty)
                return;
        e->dirty = true;
        (void) record_kick(e);
}

int persist_job_created(Persist *p, Job *j, JobRecord *record, PersistDoneFunc done, void *userdata) {
        _cleanup_(job_record_freep) JobRecord *rec = record;
        _cleanup_free_ char *name = NULL;
        Record *e;
        int r;

        r = job_record_file_name(job_owner(j), job_id(j), &name);
        if (r < 0)
                return r;
        e = hashmap_get(p->records, name);
        if (e) {
                /* The same id's previous job: its record is still being removed. This one's first
                 * write waits behind that removal. */
                if (!e->gone)
                        return -EEXIST;
                e->gone = false;
        } else {
                r = record_new(p, name, job_owner(j), &e);
                if (r < 0)
                        return r;
        }
        job_record_free(e->record);
        e->record = TAKE_PTR(rec);
        e->job = j;
        e->dirty = true;
        e->done = done;
        e->done_userdata = userdata;
        r = record_kick(e);
        if (r < 0) {
                e->done = NULL;
                e->job = NULL;
                e->gone = true;
                (void) record_kick(e);
        }
        return r;
}

/* A path or label as the caller gave it, for the record: absolute and normalized, or none. */
static int record_path(const char *given, char **ret) {
        *ret = NULL;
        if (!given || given[0] != '/')
                return 0;
        *ret = path_simplify_dup(given);
        return *ret ? 0 : -ENOMEM;
}

static int record_file(JobRecord *rec, JobRecordFile *f, const char *given, bool passed, const char *role,
                       const struct stat *st, bool identity_of_contents) {
        int r;

        f->present = true;
        job_record_identity_from_stat(st, &f->identity);
        if (!identity_of_contents) {
                /* A target changes as the job writes it: only which file it is counts. */
                f->identity.size = 0;
                f->identity.mtime_ns = f->identity.ctime_ns = 0;
        }
        r = record_path(given, &f->path);
        if (r < 0)
                return r;
        if (passed)
                return job_record_fdname(rec->owner, rec->id, role, &f->fdname);
        return f->path ? 0 : -EINVAL;
}

static JobRecordSync record_sync(SyncMode s) {
        switch (s) {
        case SYNC_TOP:
                return JOB_RECORD_SYNC_TOP;
        case SYNC_BITMAP:
        case SYNC_INCREMENTAL:
                return JOB_RECORD_SYNC_BITMAP;
        default:
                return JOB_RECORD_SYNC_FULL;
        }
}

int persist_record_new(const JobRequest *q, Job *j, const JobCreationFiles *files, const char *txn_name,
                       Job *const *members, size_t n_members, JobRecord **ret) {
        _cleanup_(job_record_freep) JobRecord *rec = NULL;
        bool copy = IN_SET(q->type, JOB_TYPE_BACKUP, JOB_TYPE_MIRROR);
        int r;

        rec = job_record_new(job_type(j), job_owner(j), job_id(j));
        if (!rec)
                return -ENOMEM;
        rec->auto_finalize = q->auto_finalize;
        rec->auto_dismiss = q->auto_dismiss;
        rec->speed = q->speed;
        rec->on_source_error = q->on_source_error;
        rec->on_target_error = q->on_target_error;
        rec->source_format = q->source_format;
        if (copy) {
                rec->sync = record_sync(q->sync);
                rec->target_format = q->target_format;
                rec->overwrite = q->overwrite;
        } else
                rec->base_format = q->base_format;
        if (q->type == JOB_TYPE_MIRROR) {
                rec->granularity = q->granularity;
                rec->buf_size = q->buf_size;
        }
        if (!copy && q->backing_file && !(rec->backing_file = strdup(q->backing_file)))
                return -ENOMEM;
        if (q->type == JOB_TYPE_BACKUP && q->bitmap) {
                rec->bitmap = strdup(q->bitmap);
                if (!rec->bitmap)
                        return -ENOMEM;
                rec->bitmap_mode = job_record_bitmap_mode_from_string(bitmap_sync_mode_to_string(q->bitmap_mode));
        }
        if (!copy && ((q->top && q->type == JOB_TYPE_COMMIT && !(rec->top_name = strdup(q->top))) ||
                      (q->base && !(rec->base_name = strdup(q->base)))))
                return -ENOMEM;
        if (q->type == JOB_TYPE_BACKUP && q->target_backing) {
                rec->target_backing = strdup(q->target_backing);
                if (!rec->target_backing)
                        return -ENOMEM;
                rec->target_backing_format = q->target_backing_format;
        }

        if (!files->source_known)
                return -EIO;
        r = record_file(rec, &rec->source, q->source, q->chain_passed, "source", &files->source, true);
        if (r < 0)
                return r;
        /* The backing files, each with its identity, so that a chain changed while the daemon was
         * stopped is noticed (resume_check()). A chain passed as descriptors comes back from
         * systemd's store layer by layer; one opened by name is opened again by name, its backing
         * files as its images name them. (fstat() of a descriptor: nothing is looked up.) */
        for (size_t i = 1; i < q->files.n_chain && i <= JOB_RECORD_LAYERS_MAX; i++) {
                JobRecordFile *l = &rec->layers[i - 1];
                char role[16];
                struct stat st;
                if (fstat(q->files.chain[i], &st) < 0)
                        return -EIO;
                (void) snprintf(role, sizeof(role), "layer%zu", i);
                if (q->chain_passed)
                        r = record_file(rec, l, NULL, true, role, &st, true);
                else {
                        l->present = true;
                        job_record_identity_from_stat(&st, &l->identity);
                        r = 0;
                }
                if (r < 0)
                        return r;
                rec->n_layers = i;
        }
        if (copy) {
                if (!files->target_known)
                        return -EIO;
                r = record_file(rec, &rec->target, q->target, q->target_passed, "target", &files->target, false);
                if (r < 0)
                        return r;
                /* A new target lives under this name until it is published (persist_hide_targets()).
                 * A name too long for it keeps the file unnamed, as without records. */
                if (files->target_file && rec->target.path) {
                        r = job_record_hidden_target_name(rec->target.path, rec->owner, rec->id, &rec->target_hidden);
                        if (r == -ENOMEM)
                                return r;
                }
        }

        if (txn_name) {
                rec->txn_name = strdup(txn_name);
                rec->txn_members = calloc(MAX(n_members, (size_t) 1), sizeof(char *));
                if (!rec->txn_name || !rec->txn_members)
                        return -ENOMEM;
                for (size_t i = 0; i < n_members; i++) {
                        rec->txn_members[i] = strdup(job_id(members[i]));
                        if (!rec->txn_members[i])
                                return -ENOMEM;
                        rec->n_txn_members++;
                }
        }

        *ret = TAKE_PTR(rec);
        return 0;
}

void persist_forget(Persist *p, Job *j) {
        Record *e = record_for_job(p, j);

        if (!e)
                return;
        if (e->busy) {
                /* Not expected (the manager waits until nothing is in flight): it is removed at
                 * dismissal then, as it would be without this. */
                log_debug("Job record %s is being written, not keeping it.", e->name);
                return;
        }
        /* The job continues after the restart in the file it was writing: freeing its driver must
         * not remove it. (Its driver runs nothing now: the job is stopped.) */
        if (e->target_file)
                target_file_keep(e->target_file);
        record_free(e);
}

/* ---- hidden targets ------------------------------------------------------------------------------ */

typedef struct HideTargets {
        Persist *persist;
        TargetFile **targets;
        char **names;
        size_t n;
        int r;
        char *error;
        PersistDoneFunc done;
        void *userdata;
} HideTargets;

static void hide_targets_free(HideTargets *h) {
        for (size_t i = 0; i < h->n; i++)
                free(h->names[i]);
        free(h->names);
        free(h->targets);
        free(h->error);
        free(h);
}

static void hide_targets_run(void *userdata) {
        HideTargets *h = userdata;

        for (size_t i = 0; i < h->n && h->r >= 0; i++)
                h->r = target_file_set_hidden_name(h->targets[i], h->names[i], &h->error);
}

static void hide_targets_done(void *userdata) {
        HideTargets *h = userdata;
        Persist *p = h->persist;

        assert(p->n_busy > 0);
        p->n_busy--;
        h->done(h->r, h->r < 0 ? (h->error ?: "out of memory") : NULL, h->userdata);
        hide_targets_free(h);
        manager_changed(p->manager);
}

int persist_hide_targets(Persist *p, Job *const *jobs, TargetFile *const *targets, size_t n, PersistDoneFunc done,
                         void *userdata) {
        HideTargets *h;
        int r;

        h = calloc(1, sizeof(*h));
        if (!h)
                return -ENOMEM;
        *h = (HideTargets) { .persist = p, .done = done, .userdata = userdata };
        h->targets = calloc(MAX(n, (size_t) 1), sizeof(TargetFile *));
        h->names = calloc(MAX(n, (size_t) 1), sizeof(char *));
        if (!h->targets || !h->names) {
                hide_targets_free(h);
                return -ENOMEM;
        }
        for (size_t i = 0; i < n; i++) {
                Record *e = record_for_job(p, jobs[i]);
                if (!targets[i] || !e || !e->record || !e->record->target_hidden)
                        continue;
                e->target_file = targets[i];
                h->names[h->n] = strdup(e->record->target_hidden);
                if (!h->names[h->n]) {
                        hide_targets_free(h);
                        return -ENOMEM;
                }
                h->targets[h->n++] = targets[i];
        }
        if (h->n == 0) {
                hide_targets_free(h);
                return 0;
        }
        r = worker_pool_call(p->manager->pool, job_owner(jobs[0]), hide_targets_run, hide_targets_done, h);
        if (r < 0) {
                hide_targets_free(h);
                return r;
        }
        p->n_busy++;
        return 1;
}

bool persist_is_idle(const Persist *p) {
        return p->n_busy == 0;
}

/* ---- restoring ----------------------------------------------------------------------------------- */

/* Types whose jobs continue after a restart (their drivers take a DriverResume). */
static const bool type_resumes[_JOB_TYPE_MAX] = {
        [JOB_TYPE_BACKUP] = true,
        [JOB_TYPE_MIRROR] = true,
        [JOB_TYPE_COMMIT] = true,
        [JOB_TYPE_STREAM] = true,
};

static bool record_fds_stored(Persist *p, const JobRecord *r);

/* Can the recorded job continue where it stopped? 0: yes; 1 and (with 'ret') the reason it
 * cannot, as the end of "blockjobd stopped while the job was <status>, and ..."; -ENOMEM. A
 * concluded job has nothing to continue (it comes back as it was). */
static int resume_refusal(Persist *p, const JobRecord *r, char **ret) {
        const char *why;

        if (r->status == JOB_STATUS_CONCLUDED)
                why = "it had concluded";
        else if (r->status == JOB_STATUS_ABORTING)
                why = "it was being cancelled or failing; it ends as it would have";
        else if (!type_resumes[r->type])
                why = "this version of blockjobd does not resume such jobs after a restart";
        else if ((!r->source.path && !r->source.fdname) || (r->target.present && !r->target.path && !r->target.fdname))
                why = "its record names no file to open again";
        else if (!record_fds_stored(p, r))
                why = "its caller had passed its files as descriptors, and systemd's file descriptor store did not "
                      "keep them (it keeps them only across restarts of the service while systemd runs, not across "
                      "a reboot or without systemd)";
        else
                return 0;
        if (ret) {
                *ret = strdup(why);
                if (!*ret)
                        return -ENOMEM;
        }
        return 1;
}

/* THE place where the fate of a restored job that does not continue is decided: a concluded job
 * stays what it was, any other comes back failed, saying why (resume_refusal()). Jobs that can
 * continue are built again instead (resume_start()). */
static int restore_outcome(Persist *p, const JobRecord *record, char **ret_error) {
        char *s = NULL;

        if (record->status == JOB_STATUS_CONCLUDED) {
                if (record->error) {
                        s = strdup(record->error);
                        if (!s)
                                return -ENOMEM;
                }
                *ret_error = s;
                return 0;
        }
        _cleanup_free_ char *reason = NULL;
        if (resume_refusal(p, record, &reason) < 0 || !reason)
                return -ENOMEM;
        if (asprintf(&s, "blockjobd stopped while the job was %s, and %s, so the job did not finish%s%s",
                     job_status_to_string(record->status), reason, record->error ? " (it had failed: " : "",
                     record->error ? record->error : "") < 0)
                return -ENOMEM;
        if (record->error) {
                char *t = NULL;
                if (asprintf(&t, "%s)", s) < 0) {
                        free(s);
                        return -ENOMEM;
                }
                free(s);
                s = t;
        }
        *ret_error = s;
        return 0;
}

/* What a restored job that does not continue ends with: its recorded error, or the reason it
 * cannot continue; NULL for a job that had concluded successfully. */
typedef struct Restored {
        char *error;
} Restored;

/* A restored job does no work: its one step ends it, with that error. */
static void restored_step(Job *j, void *data, const JobStepInput *in, JobStepResult *out) {
        const Restored *d = data;

        out->finished = true;
        if (d->error) {
                out->ret = -ESTALE;
                out->error = strdup(d->error);
        }
}

static void restored_free(void *data) {
        Restored *d = data;

        if (!d)
                return;
        free(d->error);
        free(d);
}

#define RESTORED_DRIVER(t) [t] = { .type = (t), .step = restored_step, .free = restored_free }
static const JobDriver restored_drivers[_JOB_TYPE_MAX] = {
        RESTORED_DRIVER(JOB_TYPE_COMMIT),
        RESTORED_DRIVER(JOB_TYPE_STREAM),
        RESTORED_DRIVER(JOB_TYPE_MIRROR),
        RESTORED_DRIVER(JOB_TYPE_BACKUP),
};

/* The type a damaged record still tells, from a line "TYPE=<type>" that reads as one: enough to
 * bring its job back (failed) so that its owner learns what happened. */
static JobType damaged_record_type(const char *data, size_t size) {
        static const char key[] = "\nTYPE=";

        for (const char *p = data; p && (size_t) (p - data) < size; ) {
                const char *hit = memmem(p, size - (size_t) (p - data), key, strlen(key));
                if (!hit)
                        break;
                const char *v = hit + strlen(key);
                const char *end = memchr(v, '\n', size - (size_t) (v - data));
                if (!end)
                        break;
                char buf[16];
                if ((size_t) (end - v) < sizeof(buf)) {
                        memcpy(buf, v, (size_t) (end - v));
                        buf[end - v] = '\0';
                        JobType t = job_type_from_string(buf);
                        if (t >= 0)
                                return t;
                }
                p = end;
        }
        return _JOB_TYPE_INVALID;
}

static void set_aside(Persist *p, const char *name) {
        _cleanup_free_ char *error = NULL;
        int r;

        r = state_dir_set_aside(p->dir, name, &error);
        if (r < 0)
                log_error_errno(r, "Failed to set the job record %s/%s/%s aside: %s", p->path, STATE_DIR_JOBS, name,
                                error ?: "out of memory");
        else
                log_error("Job record %s/%s/%s set aside as %s" STATE_DIR_DAMAGED_SUFFIX ".", p->path,
                          STATE_DIR_JOBS, name, name);
}

/* Grouped transactions are named "transaction<N>": new ones must not take a restored one's name. */
static void note_transaction(Manager *m, const char *name) {
        unsigned n;
        int k = 0;

        if (name && sscanf(name, "transaction%u%n", &n, &k) == 1 && name[k] == '\0' && n != UINT_MAX)
                m->next_txn = MAX(m->next_txn, n + 1);
}

/* A restored job's hidden target, removed before the job goes on (to concluded, in this layer):
 * its directory is opened by blockjobd-opener as the job's owner, exactly as a new call with
 * that name as its target would (every check of a new call applies; the daemon walks no path in
 * a user's directory), and the name is removed only while it is still the file recorded: a
 * regular file of the recorded device and inode, looked at without following a symlink. */
typedef struct HiddenRemoval {
        Persist *persist;
        Job *job;
        char *path;                     /* the hidden name's full path, for the opener and messages */
        char *name;                     /* within the directory */
        JobRecordIdentity identity;
        JobFiles files;
        OpenerCall *call;
        int r;
        bool removed;
} HiddenRemoval;

static void hidden_removal_finish(HiddenRemoval *h) {
        Persist *p = h->persist;

        opener_call_free(h->call);
        job_files_done(&h->files);
        if (job_status(h->job) == JOB_STATUS_CREATED)
                job_start(h->job);
        job_unref(h->job);
        free(h->path);
        free(h->name);
        free(h);
        assert(p->n_busy > 0);
        p->n_busy--;
        manager_changed(p->manager);
}

static void hidden_removal_run(void *userdata) {
        HiddenRemoval *h = userdata;
        struct stat st;

        h->r = 0;
        if (fstatat(h->files.target_dir_fd, h->name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                h->r = errno == ENOENT ? 0 : negative_errno();
                return;
        }
        if (!S_ISREG(st.st_mode) || (uint64_t) st.st_dev != h->identity.dev || (uint64_t) st.st_ino != h->identity.ino) {
                h->r = -ESTALE;
                return;
        }
        if (unlinkat(h->files.target_dir_fd, h->name, 0) < 0) {
                h->r = errno == ENOENT ? 0 : negative_errno();
                return;
        }
        h->removed = true;
        if (fsync(h->files.target_dir_fd) < 0)
                h->r = negative_errno();
}

static void hidden_removal_done(void *userdata) {
        HiddenRemoval *h = userdata;

        if (h->r == -ESTALE)
                log_warning("Not removing '%s' of job '%s': it is no longer the file blockjobd made there.", h->path,
                            job_id(h->job));
        else if (h->r < 0)
                log_warning_errno(h->r, "Failed to remove the unfinished target '%s' of job '%s': %m", h->path,
                                  job_id(h->job));
        else if (h->removed)
                log_info("Removed the unfinished target '%s' of job '%s'.", h->path, job_id(h->job));
        hidden_removal_finish(h);
}

static void on_hidden_opened(OpenerCall *call, int r, bool ours, const char *error, void *userdata) {
        HiddenRemoval *h = userdata;

        h->call = opener_call_free(call);
        if (r < 0) {
                log_warning_errno(r, "Cannot remove the unfinished target '%s' of job '%s': %s", h->path, job_id(h->job),
                                  error ?: "out of memory");
                hidden_removal_finish(h);
                return;
        }
        if (h->files.target_dir_fd < 0) {
                /* The name leads to a device now: not a file blockjobd made. */
                log_warning("Not removing '%s' of job '%s': it is no longer the file blockjobd made there.", h->path,
                            job_id(h->job));
                hidden_removal_finish(h);
                return;
        }
        r = worker_pool_call(h->persist->manager->pool, job_owner(h->job), hidden_removal_run, hidden_removal_done, h);
        if (r < 0) {
                log_oom();
                hidden_removal_finish(h);
        }
}

/* Starts the removal and the job after it; 0 if there is none to remove (start the job). */
static int remove_hidden_target(Persist *p, Job *j, const JobRecord *record) {
        _cleanup_free_ char *dir = NULL;
        HiddenRemoval *h;
        int r;

        if (!record || !record->target_hidden || !record->target.path)
                return 0;
        dir = strdup(record->target.path);
        h = calloc(1, sizeof(*h));
        if (!dir || !h) {
                free(h);
                return log_oom();
        }
        *h = (HiddenRemoval) {
                .persist = p,
                .job = job_ref(j),
                .identity = record->target.identity,
                .files = JOB_FILES_INIT,
        };
        h->name = strdup(record->target_hidden);
        if (!h->name || asprintf(&h->path, "%s/%s", dirname(dir), record->target_hidden) < 0) {
                h->path = NULL;
                r = log_oom();
                goto fail;
        }

        /* As a new call with this target: overwrite, so that an existing file is looked at and
         * not refused; what the opener makes for it (an unnamed file) goes with the descriptors. */
        OpenerRequest req = {
                .uid = (uid_t) job_owner(j),
                .groups_from_user_database = true,
                .target_path = h->path,
                .target_overwrite = true,
        };
        r = opener_call_start(p->manager->event, &req, &h->files, on_hidden_opened, h, &h->call);
        if (r < 0) {
                log_warning_errno(r, "Cannot remove the unfinished target '%s' of job '%s': %m", h->path, job_id(j));
                goto fail;
        }
        p->n_busy++;
        return 1;

fail:
        job_unref(h->job);
        free(h->path);
        free(h->name);
        free(h);
        return r;
}

/* Which parts of the source's recorded identity must still hold after a restart, by job type. A
 * backup is a point-in-time copy: its source must not have changed at all (size, mtime, ctime),
 * or the part copied before the stop and the part copied after would come from different
 * states. A mirror's source is written by its user throughout, and commit and stream write their
 * image themselves: only which file it is (device, inode) counts for them. */
static const bool source_contents_must_hold[_JOB_TYPE_MAX] = {
        [JOB_TYPE_BACKUP] = true,
};

/* The message for a source that no longer matches its record, or NULL (out of memory: the job
 * keeps the reason it has). */
static char *source_mismatch(const JobRecord *rec, const struct stat *st) {
        JobRecordIdentity now;
        const JobRecordIdentity *was = &rec->source.identity;
        char *s = NULL;

        job_record_identity_from_stat(st, &now);
        if (now.dev != was->dev || now.ino != was->ino) {
                if (asprintf(&s, "Source '%s' was replaced by another file while blockjobd was stopped, so the job "
                             "cannot continue", rec->source.path) < 0)
                        return NULL;
                return s;
        }
        if (source_contents_must_hold[rec->type] && !job_record_identity_equal(&now, was)) {
                if (asprintf(&s, "Source '%s' changed while blockjobd was stopped (its %s differs from when the job "
                             "was created), so the job cannot continue", rec->source.path,
                             now.size != was->size ? "size" : now.mtime_ns != was->mtime_ns ? "modification time"
                                                                                            : "change time") < 0)
                        return NULL;
                return s;
        }
        return NULL;
}

/* A recorded job that does not continue comes back with what it ends with ('why', NULL for a
 * success): the restored driver's job, on the bus, with its record ('record', taken; NULL for a
 * damaged one). 'direct': it had concluded (or its record is damaged), and comes back concluded
 * at once (job_restore(): no StatusChanged for a status it did not go through); a name the
 * record still holds is looked at too, and removed only if it is still the recorded file.
 * Otherwise it was to continue but cannot: its unfinished target is removed first, then it
 * concludes through the restored driver's one step, whose passing statuses are not written over
 * the record (only the concluded one is). Either way it waits for its owner's Dismiss(), whatever
 * its auto-dismiss said, so that nobody misses what happened; the record keeps the option. */
static int restore_back(Persist *p, const char *name, uint32_t owner, const char *id, JobType type, JobRecord *record,
                        const char *why, bool direct) {
        Manager *m = p->manager;
        _cleanup_(job_record_freep) JobRecord *rec = record;
        _cleanup_free_ char *create_error = NULL;
        Restored *restored;
        Record *e;
        Job *j;
        int r;

        restored = calloc(1, sizeof(*restored));
        if (!restored || (why && !(restored->error = strdup(why)))) {
                free(restored);
                return log_oom();
        }
        JobCreateParams params = {
                .owner = owner,
                .id = id,
                .driver = &restored_drivers[type],
                .driver_data = restored,
                .auto_finalize = true,
                .auto_dismiss = false,
                .speed = rec ? rec->speed : 0,
                .on_source_error = rec ? rec->on_source_error : JOB_ON_ERROR_REPORT,
                .on_target_error = rec ? rec->on_target_error : JOB_ON_ERROR_REPORT,
        };
        if (direct) {
                JobRestoreParams rp = {
                        .create = params,
                        .status = JOB_STATUS_CONCLUDED,
                        .ret = why ? -ESTALE : 0,
                        .error = restored->error,
                };
                r = job_restore(m->registry, &rp, &j, &create_error);
        } else
                r = job_create(m->registry, &params, &j, &create_error);
        if (r < 0) {
                restored_free(restored);
                return log_error_errno(r, "Cannot restore job '%s' of uid %" PRIu32 " from %s: %s", id, owner, name,
                                       create_error ?: "out of memory");
        }
        BusJobInfo info = {
                .source = rec ? rec->source.path : NULL,
                .target = rec ? rec->target.path : NULL,
                .owner = owner,
                .transaction = rec ? rec->txn_name : NULL,
                .source_format = rec ? rec->source_format : IMAGE_FORMAT_PROBE,
        };
        r = bus_job_attach(m, j, &info, NULL);
        if (r >= 0)
                r = record_new(p, name, owner, &e);
        if (r < 0) {
                if (direct)
                        (void) job_dismiss(j, NULL);
                else
                        job_early_fail(j);
                return log_error_errno(r, "Cannot restore job '%s' of uid %" PRIu32 ": %m", id, owner);
        }
        if (rec)
                note_transaction(m, rec->txn_name);
        e->job = j;
        e->record = TAKE_PTR(rec);
        e->on_disk = true;
        e->restoring = !direct;
        log_info("Restored job '%s' of uid %" PRIu32 " (%s) from %s.", id, owner, job_type_to_string(type), name);
        if (direct) {
                job_restore_start(j);
                (void) remove_hidden_target(p, j, e->record);
        } else if (m->shutting_down)
                /* Stopped before it could even fail: its record is as it was, for the next start. */
                job_stop(j);
        else if (remove_hidden_target(p, j, e->record) <= 0)
                job_start(j);
        return 1;
}

/* A job that was to continue but cannot (restore_back()). Takes the entry's record. */
static int restore_failed(Persist *p, ResumeEntry *en, const char *why) {
        JobRecord *rec = TAKE_PTR(en->record);

        return restore_back(p, en->name, rec->owner, rec->id, rec->type, rec, why, false);
}

/* ---- systemd's file descriptor store --------------------------------------------------------- */

/* Descriptors a caller passed (source-fd, image-fd, chain-fds, target-fd) die with the process.
 * Where systemd runs the service with FileDescriptorStoreMax=, they are kept in its store, named
 * as the record names them (job_record_fdname(): "<uid>-<id>-<role>"), handed back at the next
 * start (sd_listen_fds_with_names()) for the restore, and dropped from the store when the job is
 * dismissed. systemd keeps them across restarts of the service (a crash, systemctl restart), not
 * across a reboot: a job whose descriptors are not there fails, saying so. Without systemd
 * (no $NOTIFY_SOCKET) nothing is kept. */

static void stored_fds_take_names(Persist *p, int n, char **names);

static StoredFd *stored_fd(Persist *p, const char *name) {
        return name && p->stored_by_name ? hashmap_get(p->stored_by_name, name) : NULL;
}

static bool record_fds_stored(Persist *p, const JobRecord *r) {
        if (r->source.fdname && !stored_fd(p, r->source.fdname))
                return false;
        for (size_t i = 0; i < r->n_layers; i++)
                if (r->layers[i].fdname && !stored_fd(p, r->layers[i].fdname))
                        return false;
        return !r->target.fdname || stored_fd(p, r->target.fdname);
}

static void stored_fds_mark_used(Persist *p, const JobRecord *r) {
        StoredFd *s;

        if ((s = stored_fd(p, r->source.fdname)))
                s->used = true;
        if ((s = stored_fd(p, r->target.fdname)))
                s->used = true;
        for (size_t i = 0; i < r->n_layers; i++)
                if ((s = stored_fd(p, r->layers[i].fdname)))
                        s->used = true;
}

/* A copy of a stored descriptor for a request (the store keeps its own). */
static int stored_fd_dup(Persist *p, const char *name) {
        StoredFd *s = stored_fd(p, name);
        int fd;

        if (!s)
                return -ENOENT;
        fd = fcntl(s->fd, F_DUPFD_CLOEXEC, 3);
        return fd < 0 ? negative_errno() : fd;
}

/* The request's files from the store, where the caller had passed descriptors. */
static int resume_passed_files(Persist *p, const JobRecord *r, JobRequest *q) {
        int fd, k;

        if (r->source.fdname) {
                fd = stored_fd_dup(p, r->source.fdname);
                if (fd < 0)
                        return fd;
                assert_se(job_files_add_layer(&q->files, fd) >= 0);
                for (size_t i = 0; i < r->n_layers; i++) {
                        fd = stored_fd_dup(p, r->layers[i].fdname);
                        if (fd < 0)
                                return fd;
                        k = job_files_add_layer(&q->files, fd);
                        if (k < 0) {
                                safe_close(fd);
                                return k;
                        }
                }
                q->chain_passed = true;
        }
        if (r->target.fdname) {
                fd = stored_fd_dup(p, r->target.fdname);
                if (fd < 0)
                        return fd;
                job_files_set_target_in_place(&q->files, fd);
                q->target_passed = true;
        }
        return 0;
}

static void fd_store_put(const char *name, int fd) {
        _cleanup_free_ char *state = NULL;
        int r;

        if (asprintf(&state, "FDSTORE=1\nFDNAME=%s", name) < 0) {
                log_oom();
                return;
        }
        r = sd_pid_notify_with_fds(0, false, state, &fd, 1);
        if (r < 0)
                log_warning_errno(r, "Could not keep descriptor %s in systemd's file descriptor store: %m", name);
}

static void fd_store_remove(const char *name) {
        if (name)
                (void) sd_notifyf(false, "FDSTOREREMOVE=1\nFDNAME=%s", name);
}

/* A new job's passed descriptors go to the store (its record names them). */
void persist_store_fds(Persist *p, const JobRecord *record, const JobFiles *files) {
        if (record->source.fdname && files->n_chain > 0) {
                fd_store_put(record->source.fdname, files->chain[0]);
                for (size_t i = 0; i < record->n_layers && i + 1 < files->n_chain; i++)
                        fd_store_put(record->layers[i].fdname, files->chain[i + 1]);
        }
        if (record->target.fdname && files->target_fd >= 0)
                fd_store_put(record->target.fdname, files->target_fd);
}

/* The job is gone for good: its descriptors leave the store. */
static void record_unstore_fds(const JobRecord *r) {
        if (!r)
                return;
        fd_store_remove(r->source.fdname);
        fd_store_remove(r->target.fdname);
        for (size_t i = 0; i < r->n_layers; i++)
                fd_store_remove(r->layers[i].fdname);
}

/* At start: what systemd kept for us. Anything but a stored descriptor of ours is closed. */
static void stored_fds_take(Persist *p) {
        char **names = NULL;
        int n;

        n = sd_listen_fds_with_names(true, &names);
        if (n <= 0)
                return;
        stored_fds_take_names(p, n, names);
        for (char **x = names; x && *x; x++)
                free(*x);
        free(names);
}

static void stored_fds_take_names(Persist *p, int n, char **names) {
        p->stored = calloc(n, sizeof(StoredFd));
        if (!p->stored || hashmap_new(&string_hash_ops, &p->stored_by_name) < 0) {
                log_oom();
                for (int i = 0; i < n; i++)
                        safe_close(SD_LISTEN_FDS_START + i);
                return;
        }
        for (int i = 0; i < n; i++) {
                int fd = SD_LISTEN_FDS_START + i;
                StoredFd *s = &p->stored[p->n_stored];
                if (!names || !names[i] || hashmap_get(p->stored_by_name, names[i])) {
                        safe_close(fd);
                        continue;
                }
                *s = (StoredFd) { .name = strdup(names[i]), .fd = fd };
                if (!s->name || hashmap_put(p->stored_by_name, s->name, s) < 0) {
                        free(s->name);
                        safe_close(fd);
                        continue;
                }
                (void) fcntl(fd, F_SETFD, FD_CLOEXEC);
                p->n_stored++;
        }
        log_info("systemd kept %zu descriptor(s) for the recorded jobs.", p->n_stored);
}

/* After the restore: the requests have copies; ours go, and so do the stored ones no record
 * names any more (their job was dismissed while the store could not be told). */
static void stored_fds_release(Persist *p) {
        for (size_t i = 0; i < p->n_stored; i++) {
                if (!p->stored[i].used)
                        fd_store_remove(p->stored[i].name);
                safe_close(p->stored[i].fd);
                free(p->stored[i].name);
        }
        p->stored = mfree(p->stored);
        p->n_stored = 0;
        p->stored_by_name = hashmap_free(p->stored_by_name);
}

/* ---- resuming ------------------------------------------------------------------------------------ */

/* A recorded job that continues: built again through the job factory, exactly as a new call
 * with its recorded arguments would be built (its owner's rights, blockjobd-opener, the same
 * checks, limits counted), but created directly in its recorded status (job_restore()), with the
 * unfinished target it was writing and its driver continuing from its last checkpoint. The files
 * must still be the ones recorded (resume_check()). A job that cannot be built again comes back
 * concluded with the reason (resume_failed()), and its unfinished target goes. */

typedef struct ResumeGroup {
        Persist *persist;
        JobCreation *creation;
        ResumeEntry *entries;
        size_t n;
} ResumeGroup;

static int resume_add(Persist *p, const char *name, JobRecord *record) {
        _cleanup_(job_record_freep) JobRecord *rec = record;
        ResumeEntry *a;

        a = reallocarray(p->resume, p->n_resume + 1, sizeof(*a));
        if (!a)
                return log_oom();
        p->resume = a;
        a[p->n_resume].name = strdup(name);
        if (!a[p->n_resume].name)
                return log_oom();
        a[p->n_resume++].record = TAKE_PTR(rec);
        return 0;
}

static void resume_entry_done(ResumeEntry *e) {
        free(e->name);
        job_record_free(e->record);
        *e = (ResumeEntry) {};
}

/* The status a job comes back in: its recorded one, but for what must be done again first. A
 * ready mirror has to catch up with its source (it comes back running, and ready once it has); a
 * paused job that no user paused was only held for a moment. */
static void resume_status(const JobRecord *r, JobRestoreParams *ret) {
        JobStatus s = r->status;
        bool user_paused = r->user_paused;

        switch (s) {
        case JOB_STATUS_CREATED:
        case JOB_STATUS_READY:
                s = JOB_STATUS_RUNNING;
                break;
        case JOB_STATUS_STANDBY:
        case JOB_STATUS_PAUSED:
                s = user_paused ? JOB_STATUS_PAUSED : JOB_STATUS_RUNNING;
                break;
        default:
                break;
        }
        *ret = (JobRestoreParams) {
                .status = s,
                .user_paused = user_paused && IN_SET(s, JOB_STATUS_RUNNING, JOB_STATUS_PAUSED),
        };
}

/* The last checkpoint: a backup's copied prefix, commit's and stream's offset. */
static uint64_t resume_offset(const JobRecord *r) {
        if (r->type == JOB_TYPE_BACKUP)
                return r->n_ranges > 0 && r->ranges[0].start == 0 ? r->ranges[0].length : 0;
        if (IN_SET(r->type, JOB_TYPE_COMMIT, JOB_TYPE_STREAM))
                return r->offset;
        return 0;
}

static SyncMode request_sync(JobRecordSync s) {
        return s == JOB_RECORD_SYNC_TOP ? SYNC_TOP : s == JOB_RECORD_SYNC_BITMAP ? SYNC_BITMAP : SYNC_FULL;
}

static int strdup_or_null(const char *s, char **ret) {
        *ret = NULL;
        if (!s)
                return 0;
        *ret = strdup(s);
        return *ret ? 0 : -ENOMEM;
}

/* What a new call would have asked for, from the record (the inverse of persist_record_new()). */
static int resume_request(Persist *p, const JobRecord *r, JobRequest *q) {
        int k = 0;

        q->type = r->type;
        q->speed = r->speed;
        q->auto_finalize = r->auto_finalize;
        q->auto_dismiss = r->auto_dismiss;
        q->on_source_error = r->on_source_error;
        q->on_target_error = r->on_target_error;
        q->sync = request_sync(r->sync);
        q->source_format = r->source_format;
        q->target_format = r->target_format;
        q->base_format = r->base_format;
        q->overwrite = r->overwrite;
        q->granularity = r->granularity;
        q->buf_size = r->buf_size;
        if (r->bitmap) {
                q->bitmap_mode = bitmap_sync_mode_from_string(job_record_bitmap_mode_to_string(r->bitmap_mode));
                q->bitmap_mode_given = true;
        }
        k |= strdup_or_null(r->id, &q->job_id);
        /* A passed descriptor's label, if the record has no name for it. */
        k |= strdup_or_null(r->source.path ?: r->source.fdname, &q->source);
        k |= strdup_or_null(r->target.path ?: r->target.fdname, &q->target);
        k |= strdup_or_null(r->backing_file, &q->backing_file);
        k |= strdup_or_null(r->bitmap, &q->bitmap);
        k |= strdup_or_null(r->target_hidden, &q->target_resume_name);
        k |= strdup_or_null(r->target_backing, &q->target_backing);
        k |= strdup_or_null(r->top_name, &q->top);
        k |= strdup_or_null(r->base_name, &q->base);
        q->target_backing_format = r->target_backing_format;
        if (k < 0)
                return -ENOMEM;

        k = resume_passed_files(p, r, q);
        if (k < 0)
                return k;

        q->restore = true;
        resume_status(r, &q->restore_params);
        q->resume = (DriverResume) { .resume = true, .offset = resume_offset(r) };
        return 0;
}

/* Worker: the backing files of a backup's or mirror's source, as they are now, against the
 * record: the same number of layers, each the same file, and for a backup (a point-in-time copy)
 * unchanged. (Commit and stream change their chain themselves: base is written, and the rewrite
 * drops layers; their drivers check what they find.) */
static int chain_mismatch(const JobRecord *rec, const JobFiles *files, char **ret_error) {
        size_t n = files->n_chain > 0 ? files->n_chain - 1 : 0;

        if (n != rec->n_layers)
                return error_message(ret_error, -ESTALE,
                                     "The backing chain of source '%s' has %zu backing file(s) now, not %zu as when the "
                                     "job was created: it changed while blockjobd was stopped, so the job cannot continue",
                                     rec->source.path ?: rec->source.fdname, n, rec->n_layers);
        for (size_t i = 0; i < n; i++) {
                JobRecordIdentity now;
                struct stat st;
                char proc[64], name[PATH_MAX] = "";
                ssize_t k;

                if (fstat(files->chain[i + 1], &st) < 0)
                        return error_message(ret_error, negative_errno(), "Could not look at a backing file again: %m");
                job_record_identity_from_stat(&st, &now);
                const JobRecordIdentity *was = &rec->layers[i].identity;
                bool same_file = now.dev == was->dev && now.ino == was->ino;
                if (same_file && (rec->type != JOB_TYPE_BACKUP || job_record_identity_equal(&now, was)))
                        continue;
                (void) snprintf(proc, sizeof(proc), "/proc/self/fd/%d", files->chain[i + 1]);
                k = readlink(proc, name, sizeof(name) - 1);
                name[k > 0 ? k : 0] = 0;
                return error_message(ret_error, -ESTALE,
                                     "Backing file %zu of source '%s' ('%s') %s while blockjobd was stopped, so the job "
                                     "cannot continue", i + 1, rec->source.path ?: rec->source.fdname, name,
                                     same_file ? "changed" : "was replaced by another file");
        }
        return 0;
}

/* Worker: are these the files the record names? The source as source_mismatch() judges it (a
 * backup's must not have changed at all), the unfinished target the very file it was. */
static int resume_check(const JobRequest *q, const JobCreationFiles *files, void *userdata, char **ret_error) {
        const ResumeGroup *g = userdata;
        const JobRecord *rec = NULL;

        for (size_t i = 0; i < g->n && !rec; i++)
                if (strcmp(g->entries[i].record->id, q->job_id) == 0)
                        rec = g->entries[i].record;
        if (!rec)
                return error_message(ret_error, -EINVAL, "No record for job '%s'", q->job_id);
        if (!files->source_known)
                return error_message(ret_error, -EIO, "Could not look at source '%s' again", rec->source.path);
        char *why = source_mismatch(rec, &files->source);
        if (why) {
                *ret_error = why;
                return -ESTALE;
        }
        if (IN_SET(rec->type, JOB_TYPE_BACKUP, JOB_TYPE_MIRROR)) {
                int r = chain_mismatch(rec, &q->files, ret_error);
                if (r < 0)
                        return r;
        }
        if (rec->target.present) {
                if (!files->target_known)
                        return error_message(ret_error, -EIO, "Could not look at target '%s' again", rec->target.path);
                if ((uint64_t) files->target.st_dev != rec->target.identity.dev ||
                    (uint64_t) files->target.st_ino != rec->target.identity.ino)
                        return error_message(ret_error, -ESTALE,
                                             "%s '%s' was replaced by another file while blockjobd was stopped, so "
                                             "the job cannot continue",
                                             rec->target_hidden ? "The unfinished target of" : "Target",
                                             rec->target.path);
        }
        return 0;
}

static void resume_group_free(ResumeGroup *g) {
        Persist *p = g->persist;

        job_creation_free(g->creation);
        for (size_t i = 0; i < g->n; i++)
                resume_entry_done(&g->entries[i]);
        free(g->entries);
        free(g);
        assert(p->n_resuming > 0);
        p->n_resuming--;
        assert(p->n_busy > 0);
        p->n_busy--;
        if (p->n_resuming == 0 && p->restore_started)
                manager_jobs_restored(p->manager);
        manager_changed(p->manager);
}


/* The group's jobs exist: on the bus, recorded as they were, started. */
static void resume_publish(ResumeGroup *g) {
        Persist *p = g->persist;
        Manager *m = p->manager;
        JobCreation *c = g->creation;

        for (size_t i = 0; i < g->n; i++) {
                ResumeEntry *en = &g->entries[i];
                const JobRequest *q = job_creation_request(c, i);
                Job *j = job_creation_job(c, i);
                Record *e = NULL;
                BusJobInfo info = {
                        .source = q->source,
                        .target = q->target,
                        .owner = en->record->owner,
                        .transaction = en->record->txn_name,
                        .source_format = job_creation_source_format(c, i),
                        .claim = job_creation_take_claim(c, i),
                };
                int r = bus_job_attach(m, j, &info, NULL);
                if (r < 0)
                        job_claim_free(info.claim);
                else
                        r = record_new(p, en->name, en->record->owner, &e);
                if (r < 0) {
                        /* Out of memory: it ends at once; its record brings it back next time. */
                        log_error_errno(r, "Cannot restore job '%s' of uid %" PRIu32 ": %m", job_id(j),
                                        en->record->owner);
                        (void) job_user_cancel(j, true, NULL);
                        continue;
                }
                note_transaction(m, en->record->txn_name);
                e->job = j;
                e->record = TAKE_PTR(en->record);
                e->on_disk = true;
                e->target_file = job_creation_files(c, i)->target_file;
                log_info("Job '%s' of uid %" PRIu32 " (%s) continues where it stopped, %s.", job_id(j), e->owner,
                         job_type_to_string(job_type(j)), job_status_to_string(job_status(j)));
        }
        for (size_t i = 0; i < g->n; i++) {
                Job *j = job_creation_job(c, i);
                job_restore_start(j);
                /* The daemon is stopping already: back, and stopped where it was. */
                if (m->shutting_down)
                        job_stop(j);
        }
}

static void on_resumed(JobCreation *c, int r, JobCreationError kind, const char *message, void *userdata) {
        ResumeGroup *g = userdata;

        if (r >= 0)
                resume_publish(g);
        else
                for (size_t i = 0; i < g->n; i++) {
                        _cleanup_free_ char *why = NULL;
                        const char *text = message ?: strerror(-r);
                        /* A reason found by comparing with the record says so already. */
                        if (strstr(text, "cannot continue"))
                                why = strdup(text);
                        else if (asprintf(&why,
                                          "The job cannot continue after blockjobd was restarted (its files were opened "
                                          "again with the rights of its owner, uid %" PRIu32 "): %s",
                                          g->entries[i].record->owner, text) < 0)
                                why = NULL;
                        log_warning("Job '%s' of uid %" PRIu32 " cannot continue: %s", g->entries[i].record->id,
                                    g->entries[i].record->owner, message ?: strerror(-r));
                        (void) restore_failed(g->persist, &g->entries[i], why ?: "out of memory");
                }
        resume_group_free(g);
}

/* Builds one group again (one job, or a grouped transaction's members): takes the entries. */
static int resume_start(Persist *p, ResumeEntry *entries, size_t n) {
        _cleanup_free_ char *error = NULL;
        ResumeGroup *g;
        int r;

        g = calloc(1, sizeof(*g));
        if (!g)
                return log_oom();
        *g = (ResumeGroup) { .persist = p, .entries = entries, .n = n };
        p->n_resuming++;
        p->n_busy++;

        JobCaller caller = { .uid = (uid_t) entries[0].record->owner, .groups_unknown = true };
        r = job_creation_new_restore(p->manager->factory, &caller, n, entries[0].record->txn_name != NULL,
                                     resume_check, g, &g->creation, &error);
        for (size_t i = 0; r >= 0 && i < n; i++)
                r = resume_request(p, entries[i].record, job_creation_request(g->creation, i));
        if (r >= 0)
                r = job_creation_start(g->creation, on_resumed, g);
        if (r < 0) {
                on_resumed(g->creation, r, JOB_CREATION_ERROR_LIMIT, error ?: "out of memory", g);
                return r;
        }
        return 0;
}

static int resume_entry_compare(const void *a, const void *b) {
        const JobRecord *x = ((const ResumeEntry *) a)->record, *y = ((const ResumeEntry *) b)->record;

        if (x->owner != y->owner)
                return x->owner < y->owner ? -1 : 1;
        if (!x->txn_name || !y->txn_name)
                return !!x->txn_name - !!y->txn_name;
        return strcmp(x->txn_name, y->txn_name);
}

/* A transaction comes back whole or not at all: every member its records name, each once. */
static bool resume_group_complete(const ResumeEntry *e, size_t n) {
        const JobRecord *first = e[0].record;

        if (first->n_txn_members != n)
                return false;
        for (size_t i = 0; i < n; i++) {
                bool found = false;
                for (size_t k = 0; k < n && !found; k++)
                        found = strcmp(first->txn_members[i], e[k].record->id) == 0;
                if (!found || e[i].record->n_txn_members != n)
                        return false;
        }
        return true;
}

/* Starts every collected group: sorted by owner and transaction, a transaction's members are
 * neighbours. */
static void resume_all(Persist *p) {
        ResumeEntry *all = TAKE_PTR(p->resume);
        size_t n = p->n_resume;

        p->n_resume = 0;
        if (n == 0)
                return;
        qsort(all, n, sizeof(*all), resume_entry_compare);
        for (size_t i = 0; i < n;) {
                size_t k = 1;
                if (all[i].record->txn_name)
                        while (i + k < n && resume_entry_compare(&all[i], &all[i + k]) == 0)
                                k++;
                if (all[i].record->txn_name && !resume_group_complete(all + i, k)) {
                        for (size_t x = i; x < i + k; x++) {
                                (void) restore_failed(p, &all[x],
                                                      "The job cannot continue after blockjobd was restarted: not every "
                                                      "job of its transaction was recorded, and a transaction continues "
                                                      "whole or not at all");
                                resume_entry_done(&all[x]);
                        }
                        i += k;
                        continue;
                }
                ResumeEntry *group = calloc(k, sizeof(*group));
                if (!group) {
                        log_oom();
                        for (size_t x = i; x < i + k; x++)
                                resume_entry_done(&all[x]);
                        i += k;
                        continue;
                }
                memcpy(group, all + i, k * sizeof(*group));
                (void) resume_start(p, group, k);
                i += k;
        }
        free(all);
}

static int restore_one(Persist *p, const char *name) {
        _cleanup_(job_record_freep) JobRecord *record = NULL;
        _cleanup_free_ char *data = NULL, *error = NULL, *id = NULL, *why = NULL;
        size_t size = 0;
        uint32_t owner;
        JobType type;
        int r;

        r = job_record_file_name_parse(name, &owner, &id);
        if (r < 0)
                return log_error_errno(r, "Job record %s/%s/%s has a name that is not a record's, ignoring it.", p->path,
                                       STATE_DIR_JOBS, name);

        r = state_dir_read(p->dir, name, &data, &size, &error);
        if (r >= 0) {
                error = mfree(error);
                r = job_record_parse(data, size, name, &record, &error);
        }
        if (r == -ENOMEM)
                return log_oom();       /* left as it is, for the next start */
        if (r >= 0)
                stored_fds_mark_used(p, record);
        if (r >= 0 && resume_refusal(p, record, NULL) == 0)
                return resume_add(p, name, TAKE_PTR(record));
        if (r >= 0) {
                type = record->type;
                r = restore_outcome(p, record, &why);
                if (r < 0)
                        return log_oom();
        } else {
                /* The message names the file and the line. */
                log_error_errno(r, "Job record %s/%s/%s is damaged: %s", p->path, STATE_DIR_JOBS, name,
                                error ?: "unreadable");
                type = data ? damaged_record_type(data, size) : _JOB_TYPE_INVALID;
                if (type < 0) {
                        set_aside(p, name);
                        return 0;
                }
                if (asprintf(&why, "The record blockjobd kept of this job is damaged, so the job was not restored: %s",
                             error ?: "unreadable") < 0)
                        return log_oom();
        }

        /* Known already: a concluded job's outcome, and a damaged record's; any other is one that
         * cannot continue (resume_refusal() said why). */
        bool direct = !record || record->status == JOB_STATUS_CONCLUDED;
        return restore_back(p, name, owner, id, type, TAKE_PTR(record), why, direct);
}

int persist_restore(Persist *p) {
        _cleanup_free_ char *error = NULL;
        char **names = NULL;
        size_t n = 0;
        int r, restored = 0;

        stored_fds_take(p);
        r = state_dir_list(p->dir, &names, &n, &error);
        if (r < 0) {
                stored_fds_release(p);
                return log_error_errno(r, "Cannot list the job records in %s: %s", p->path, error ?: "out of memory");
        }
        for (size_t i = 0; i < n; i++)
                if (restore_one(p, names[i]) > 0)
                        restored++;
        state_dir_names_free(names);
        if (n > 0)
                log_info("Restored %d of %zu recorded job(s) from %s; %zu continue where they stopped once they are "
                         "built again.", restored, n, p->path, p->n_resume);
        resume_all(p);
        stored_fds_release(p);
        p->restore_started = true;
        return p->n_resuming > 0;
}

/* ---- setup ------------------------------------------------------------------------------------- */

int persist_new(Manager *m, const char *path, Persist **ret) {
        _cleanup_free_ char *error = NULL;
        Persist *p;
        int r;

        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p->manager = m;
        p->path = strdup(path);
        r = p->path ? hashmap_new(&string_hash_ops, &p->records) : -ENOMEM;
        if (r >= 0) {
                r = state_dir_open(path, &p->dir, &error);
                if (r < 0)
                        log_error_errno(r, "%s", error ?: "Out of memory.");
        }
        if (r < 0) {
                persist_free(p);
                return r;
        }
        *ret = p;
        return 0;
}

Persist *persist_free(Persist *p) {
        if (!p)
                return NULL;
        /* Records of jobs still there at exit stay on disk, by design. The pool is gone by now
         * (manager_free()): an operation it dropped will not return. */
        while (p->all) {
                p->all->busy = false;
                record_free(p->all);
        }
        hashmap_free(p->records);
        state_dir_free(p->dir);
        free(p->path);
        free(p);
        return NULL;
}
