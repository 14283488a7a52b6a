/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus-bitmap.h"
#include "bus-errors.h"
#include "bus-job.h"
#include "bus-manager.h"
#include "bus-options.h"
#include "bus-polkit.h"
#include "bus-read-access.h"
#include "bus-sender.h"
#include "job-factory.h"
#include "log.h"
#include "persist.h"
#include "macro.h"

#define TRANSACTION_ACTIONS_MAX 256U
/* Not the factory's: the jobs exist, but their records could not be written. */
#define CREATION_ERROR_RECORD ((JobCreationError) -1)

/* A method call that creates jobs: Backup() and friends create one, Transaction() several, all or
 * none. The bus layer reads the call, asks polkit, and replies; the job factory below it opens
 * the files and makes the jobs. */
typedef struct CreateRequest {
        Manager *manager;
        sd_bus_message *message;
        uid_t owner;
        gid_t *groups;                  /* the caller's groups, as the bus tells them */
        size_t n_groups;
        bool groups_unknown;
        bool transaction;               /* reply "ao" rather than "o" */
        bool grouped;
        JobRequest *requests;           /* as read, until the creation takes them */
        size_t n_requests;
        JobCreation *creation;

        /* With a state directory: the jobs exist, their records are being written. */
        char *txn_name;                 /* a grouped transaction's name, once the jobs exist */
        unsigned n_recording;
        int record_r;
        char *record_error;
} CreateRequest;

static CreateRequest *create_request_free(CreateRequest *req) {
        if (!req)
                return NULL;
        for (size_t i = 0; i < req->n_requests; i++)
                job_request_done(&req->requests[i]);
        free(req->requests);
        job_creation_free(req->creation);
        free(req->txn_name);
        free(req->record_error);
        free(req->groups);
        sd_bus_message_unref(req->message);
        free(req);
        return NULL;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(CreateRequest *, create_request_free);

static void create_request_free_void(void *req) {
        create_request_free(req);
}

/* ---- the jobs exist (or could not be made) --------------------------------------------------- */

/* Puts the jobs on the bus and starts them. */
static int publish_jobs(CreateRequest *req, sd_bus_error *error) {
        Manager *m = req->manager;
        JobCreation *c = req->creation;
        size_t n = 0;
        int r = 0;

        if (req->grouped && !req->txn_name && asprintf(&req->txn_name, "transaction%u", m->next_txn++) < 0)
                r = -ENOMEM;
        for (; r >= 0 && n < req->n_requests; n++) {
                const JobRequest *q = job_creation_request(c, n);
                BusJobInfo info = {
                        .source = q->source,
                        .target = q->target,
                        .owner = req->owner,
                        .transaction = req->txn_name,
                        .source_format = job_creation_source_format(c, n),
                        .claim = job_creation_take_claim(c, n),
                };
                r = bus_job_attach(m, job_creation_job(c, n), &info, NULL);
                if (r < 0)
                        job_claim_free(info.claim);
        }
        if (r < 0 || m->shutting_down) {
                /* As in QEMU: jobs that already existed go away again, created → null. */
                for (size_t i = 0; i < req->n_requests; i++)
                        job_early_fail(job_creation_job(c, i));
                if (m->shutting_down)
                        return sd_bus_error_set(error, BUS_ERROR_SHUTTING_DOWN, "blockjobd is shutting down");
                return r;
        }
        for (size_t i = 0; i < req->n_requests; i++)
                job_start(job_creation_job(c, i));
        return 0;
}

static int create_request_reply(CreateRequest *req, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        r = publish_jobs(req, error);
        if (r < 0)
                return r;

        r = sd_bus_message_new_method_return(req->message, &reply);
        if (r < 0)
                return r;
        if (req->transaction) {
                r = sd_bus_message_open_container(reply, 'a', "o");
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i < req->n_requests; i++) {
                /* Started jobs run on; none of them can have ended yet, their steps are queued. */
                BusJob *bj = job_get_userdata(job_creation_job(req->creation, i));
                r = sd_bus_message_append(reply, "o", bus_job_path(bj));
                if (r < 0)
                        return r;
        }
        if (req->transaction) {
                r = sd_bus_message_close_container(reply);
                if (r < 0)
                        return r;
        }
        return sd_bus_send(NULL, reply, NULL);
}

/* The creation is over, one way or the other: the reply, and the request goes. */
static void create_request_finish(CreateRequest *req, int r, JobCreationError kind, const char *message) {
        _cleanup_(create_request_freep) CreateRequest *req_free = req;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        Manager *m = req->manager;

        assert(m->n_requests > 0);
        m->n_requests--;

        if (r >= 0)
                r = create_request_reply(req, &error);
        else if (kind == CREATION_ERROR_RECORD) {
                /* The jobs existed: they go again, and so do their records. */
                for (size_t i = 0; i < req->n_requests; i++)
                        job_early_fail(job_creation_job(req->creation, i));
                /* Out of descriptors or memory is said as such, as for any other creation. */
                if (IN_SET(r, -EMFILE, -ENFILE, -ENOMEM))
                        r = bus_error_from_creation(&error, JOB_CREATION_ERROR_LIMIT, r, message);
                else
                        r = sd_bus_error_setf(&error, SD_BUS_ERROR_FAILED, "%s", message);
        } else
                r = bus_error_from_creation(&error, kind, r, message);
        r = bus_error_from_resources(&error, r);
        if (r < 0) {
                if (!sd_bus_error_is_set(&error))
                        sd_bus_error_set_errno(&error, r);
                r = sd_bus_reply_method_error(req->message, &error);
                if (r < 0)
                        log_warning_errno(r, "Failed to send an error reply: %m");
        }
        manager_changed(m);
}

static void on_targets_hidden(int r, const char *error, void *userdata) {
        CreateRequest *req = userdata;

        if (r < 0) {
                _cleanup_free_ char *message = NULL;
                if (asprintf(&message, "Cannot keep the new target under its hidden name while the job runs: %s",
                             error ?: "out of memory") < 0)
                        message = NULL;
                create_request_finish(req, r, CREATION_ERROR_RECORD, message ?: "Cannot keep the new target");
                return;
        }
        create_request_finish(req, 0, 0, NULL);
}

/* The records are durable: now the new targets take the hidden names they record, so that after a
 * crash the next start finds them there (and never a hidden file without a record). */
static void hide_targets(CreateRequest *req) {
        _cleanup_free_ Job **jobs = NULL;
        _cleanup_free_ TargetFile **targets = NULL;
        int r;

        jobs = calloc(MAX(req->n_requests, (size_t) 1), sizeof(Job *));
        targets = calloc(MAX(req->n_requests, (size_t) 1), sizeof(TargetFile *));
        if (!jobs || !targets) {
                create_request_finish(req, -ENOMEM, CREATION_ERROR_RECORD, "Cannot keep the new target: out of memory");
                return;
        }
        for (size_t i = 0; i < req->n_requests; i++) {
                jobs[i] = job_creation_job(req->creation, i);
                targets[i] = job_creation_files(req->creation, i)->target_file;
        }
        r = persist_hide_targets(req->manager->persist, jobs, targets, req->n_requests, on_targets_hidden, req);
        if (r < 0)
                create_request_finish(req, r, CREATION_ERROR_RECORD, "Cannot keep the new target: out of memory");
        else if (r == 0)
                create_request_finish(req, 0, 0, NULL);
}

static void record_jobs_done(CreateRequest *req) {
        if (req->record_r < 0) {
                _cleanup_free_ char *message = NULL;
                if (asprintf(&message, "%sCannot keep a record of the job, so that it would survive a restart of blockjobd: %s",
                             IN_SET(req->record_r, -EMFILE, -ENFILE) ? "blockjobd has run out of file descriptors. " : "",
                             req->record_error ?: "out of memory") < 0)
                        message = NULL;
                create_request_finish(req, req->record_r, CREATION_ERROR_RECORD,
                                      message ?: "Cannot keep a record of the job");
                return;
        }
        hide_targets(req);
}

static void on_recorded(int r, const char *error, void *userdata) {
        CreateRequest *req = userdata;

        assert(req->n_recording > 0);
        req->n_recording--;
        if (r < 0 && req->record_r >= 0) {
                req->record_r = r;
                req->record_error = error ? strdup(error) : NULL;
        }
        if (req->n_recording == 0)
                record_jobs_done(req);
}

/* With a state directory, the reply waits until every new job's record is durable: a job a
 * caller was told about survives a crash right after. */
static void record_jobs(CreateRequest *req) {
        Manager *m = req->manager;
        JobCreation *c = req->creation;
        _cleanup_free_ Job **jobs = NULL;
        int r = 0;

        jobs = calloc(MAX(req->n_requests, (size_t) 1), sizeof(Job *));
        if (!jobs)
                r = -ENOMEM;
        for (size_t i = 0; r >= 0 && i < req->n_requests; i++)
                jobs[i] = job_creation_job(c, i);
        if (r >= 0 && req->grouped && asprintf(&req->txn_name, "transaction%u", m->next_txn++) < 0)
                r = -ENOMEM;
        for (size_t i = 0; r >= 0 && i < req->n_requests; i++) {
                JobRecord *record = NULL;

                r = persist_record_new(job_creation_request(c, i), jobs[i], job_creation_files(c, i), req->txn_name,
                                       jobs, req->n_requests, &record);
                if (r < 0) {
                        free(req->record_error);
                        req->record_error = strdup(r == -EINVAL ? "a file has neither an absolute name nor a descriptor"
                                                                : strerror(-r));
                        break;
                }
                persist_store_fds(m->persist, record, &job_creation_request(c, i)->files);
                r = persist_job_created(m->persist, jobs[i], record, on_recorded, req);
                if (r >= 0)
                        req->n_recording++;
                else {
                        free(req->record_error);
                        req->record_error = strdup(strerror(-r));
                }
        }
        if (r < 0)
                req->record_r = r;
        if (req->n_recording == 0)
                record_jobs_done(req);
}

static void on_created(JobCreation *c, int r, JobCreationError kind, const char *message, void *userdata) {
        CreateRequest *req = userdata;

        if (r >= 0 && req->manager->persist) {
                record_jobs(req);
                return;
        }
        create_request_finish(req, r, kind, message);
}

/* ---- authorized: on to the factory ----------------------------------------------------------- */

static int create_request_authorized(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        _cleanup_(create_request_freep) CreateRequest *req = userdata;
        Manager *m = req->manager;
        int r;

        if (m->shutting_down)
                return sd_bus_error_set(error, BUS_ERROR_SHUTTING_DOWN, "blockjobd is shutting down");

        /* From here on, the request is the creation's to answer (on_created() frees it). */
        m->n_requests++;
        r = job_creation_start(req->creation, on_created, req);
        if (r < 0) {
                m->n_requests--;
                return bus_error_from_resources(error, r);
        }
        TAKE_PTR(req);
        return 1;
}

static const char *create_action_id(JobType type) {
        static const char *const ids[_JOB_TYPE_MAX] = {
                [JOB_TYPE_BACKUP] = "org.blockjobd.create.backup",
                [JOB_TYPE_MIRROR] = "org.blockjobd.create.mirror",
                [JOB_TYPE_COMMIT] = "org.blockjobd.create.commit",
                [JOB_TYPE_STREAM] = "org.blockjobd.create.stream",
        };
        return ids[type];
}

/* Admission by the factory (the user's limits count this call from now on, while polkit thinks
 * too), then polkit: one check per job to create, with what rules need to know about it, and for
 * a backup that writes the source's bitmap (bitmap-mode on-success or always: cleared or merged at
 * finalize) bitmap.modify as well, with the details AddBitmap and the like give it: a rule that
 * keeps a user from changing bitmaps must not be bypassed by a backup. Takes 'req'. */
static int create_request_authorize(CreateRequest *req, sd_bus_error *error) {
        _cleanup_(create_request_freep) CreateRequest *owned = req;
        _cleanup_free_ BusAuthCheck *checks = NULL;
        _cleanup_free_ char *message = NULL;
        Manager *m = req->manager;
        size_t n_checks = 0;
        char owner[16];
        int r;

        JobCaller caller = {
                .uid = req->owner,
                .groups = req->groups,
                .n_groups = req->n_groups,
                .groups_unknown = req->groups_unknown,
        };
        r = job_creation_new(m->factory, &caller, req->n_requests, req->grouped, &req->creation, &message);
        if (r < 0)
                return bus_error_from_creation(error, JOB_CREATION_ERROR_LIMIT, r, message);
        for (size_t i = 0; i < req->n_requests; i++) {
                *job_creation_request(req->creation, i) = req->requests[i];
                req->requests[i] = (JobRequest) JOB_REQUEST_INIT;
        }

        _Static_assert(TRANSACTION_ACTIONS_MAX * 2 <= BUS_AUTH_CHECKS_MAX, "every check must fit");
        checks = calloc(req->n_requests * 2, sizeof(BusAuthCheck));
        if (!checks)
                return -ENOMEM;
        snprintf(owner, sizeof(owner), "%u", (unsigned) req->owner);
        for (size_t i = 0; i < req->n_requests; i++) {
                const JobRequest *q = job_creation_request(req->creation, i);
                BusAuthCheck *c = &checks[n_checks++];
                size_t k = 12;          /* the details set here */

                /* With descriptors, source and target are the caller's labels: rules can tell. */
                *c = (BusAuthCheck) {
                        .action = create_action_id(q->type),
                        .details = { "job-type", job_type_to_string(q->type), "owner-uid", owner,
                                     "source", q->source, "target", strempty(q->target),
                                     "source-fd", q->chain_passed ? "yes" : "no",
                                     "target-fd", q->target_passed ? "yes" : "no" },
                };
                if (q->job_id) {
                        c->details[k++] = "job-id";
                        c->details[k++] = q->job_id;
                }
                if (q->bitmap) {
                        c->details[k++] = "bitmap";
                        c->details[k++] = q->bitmap;
                        c->details[k++] = "bitmap-mode";
                        c->details[k++] = bitmap_sync_mode_to_string(q->bitmap_mode);
                }
                assert(k <= ELEMENTSOF(c->details));

                if (job_request_writes_bitmap(q))
                        checks[n_checks++] = (BusAuthCheck) {
                                .action = BITMAP_MODIFY_ACTION,
                                .details = { "image", q->source, "bitmap", q->bitmap, "operation", "Backup",
                                             "owner-uid", owner },
                        };
        }
        return bus_authorize(m, req->message, req->owner, checks, n_checks, create_request_authorized,
                             TAKE_PTR(owned), create_request_free_void, error);
}

/* ---- method handlers ----------------------------------------------------------------------- */

static int create_request_new(Manager *m, sd_bus_message *message, size_t n_max, CreateRequest **ret,
                              sd_bus_error *error) {
        _cleanup_(create_request_freep) CreateRequest *req = NULL;
        uid_t uid;
        int r;

        r = bus_sender_uid(m, message, &uid, error);
        if (r < 0)
                return r;

        req = calloc(1, sizeof(*req));
        if (!req)
                return -ENOMEM;
        req->manager = m;
        req->message = sd_bus_message_ref(message);
        req->owner = uid;
        req->requests = calloc(MAX(n_max, 1U), sizeof(JobRequest));
        if (!req->requests)
                return -ENOMEM;
        r = bus_sender_groups(m, message, &req->groups, &req->n_groups, &req->groups_unknown, error);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(req);
        return 0;
}

/* The next request, to read into. */
static JobRequest *create_request_add(CreateRequest *req, JobType type) {
        JobRequest *q = &req->requests[req->n_requests++];

        *q = (JobRequest) JOB_REQUEST_INIT;
        q->type = type;
        return q;
}

static const char *path_role(JobType type, bool target) {
        if (target)
                return "Target";
        return IN_SET(type, JOB_TYPE_BACKUP, JOB_TYPE_MIRROR) ? "Source" : "Image";
}

/* Reads a request's options and checks everything that needs no I/O. 'target' is NULL for the
 * types that have none. */
static int read_request(sd_bus_message *message, JobRequest *q, const char *source, const char *target,
                        CreateRequest *req, sd_bus_error *error) {
        _cleanup_free_ char *id_error = NULL;
        int r;

        r = bus_read_job_options(message, q, error);
        if (r < 0)
                return r;

        r = bus_check_path(path_role(q->type, false), source, error);
        if (r < 0)
                return r;
        if (target) {
                r = bus_check_path(path_role(q->type, true), target, error);
                if (r < 0)
                        return r;
        }
        if (q->top && (r = bus_check_path("Top", q->top, error)) < 0)
                return r;
        if (q->base && (r = bus_check_path("Base", q->base, error)) < 0)
                return r;

        r = job_registry_check_id(req->manager->registry, req->owner, q->job_id, &id_error);
        if (r < 0)
                return bus_error_from_job_id(error, r, id_error);

        q->source = strdup(source);
        q->target = target ? strdup(target) : NULL;
        if (!q->source || (target && !q->target))
                return -ENOMEM;
        return 0;
}

static int create_single(sd_bus_message *message, Manager *m, JobType type, bool with_target, sd_bus_error *error) {
        _cleanup_(create_request_freep) CreateRequest *req = NULL;
        const char *source, *target = NULL;
        int r;

        if (m->shutting_down)
                return sd_bus_error_set(error, BUS_ERROR_SHUTTING_DOWN, "blockjobd is shutting down");

        r = sd_bus_message_read(message, "s", &source);
        if (r < 0)
                return r;
        if (with_target) {
                r = sd_bus_message_read(message, "s", &target);
                if (r < 0)
                        return r;
        }

        r = create_request_new(m, message, 1, &req, error);
        if (r < 0)
                return r;
        r = read_request(message, create_request_add(req, type), source, target, req, error);
        if (r < 0)
                return r;

        return create_request_authorize(TAKE_PTR(req), error);
}

/* Running out of descriptors or memory anywhere in a creation is LimitExceeded, whichever step
 * it was (bus_error_from_resources()). */
static int method_backup(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        return bus_error_from_resources(error, create_single(message, userdata, JOB_TYPE_BACKUP, true, error));
}

static int method_mirror(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        return bus_error_from_resources(error, create_single(message, userdata, JOB_TYPE_MIRROR, true, error));
}

static int method_commit(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        return bus_error_from_resources(error, create_single(message, userdata, JOB_TYPE_COMMIT, false, error));
}

static int method_stream(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        return bus_error_from_resources(error, create_single(message, userdata, JOB_TYPE_STREAM, false, error));
}

static int transaction(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        _cleanup_(create_request_freep) CreateRequest *req = NULL;
        Manager *m = userdata;
        int r;

        if (m->shutting_down)
                return sd_bus_error_set(error, BUS_ERROR_SHUTTING_DOWN, "blockjobd is shutting down");

        r = create_request_new(m, message, TRANSACTION_ACTIONS_MAX, &req, error);
        if (r < 0)
                return r;
        req->transaction = true;

        r = sd_bus_message_enter_container(message, 'a', "(sssa{sv})");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(message, 'r', "sssa{sv}")) > 0) {
                const char *type_name, *source, *target;
                JobRequest *q;

                if (req->n_requests >= TRANSACTION_ACTIONS_MAX)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "A transaction holds at most %u actions", TRANSACTION_ACTIONS_MAX);

                r = sd_bus_message_read(message, "sss", &type_name, &source, &target);
                if (r < 0)
                        return r;
                if (job_type_from_string(type_name) != JOB_TYPE_BACKUP)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "Action type '%s' cannot be part of a transaction: only 'backup' can",
                                                 type_name);
                q = create_request_add(req, JOB_TYPE_BACKUP);
                r = read_request(message, q, source, target, req, error);
                if (r < 0)
                        return r;

                r = sd_bus_message_exit_container(message);
                if (r < 0)
                        return r;

                /* Two actions may not ask for the same id. */
                for (size_t i = 0; q->job_id && i + 1 < req->n_requests; i++)
                        if (req->requests[i].job_id && strcmp(req->requests[i].job_id, q->job_id) == 0)
                                return sd_bus_error_setf(error, BUS_ERROR_JOB_EXISTS, "Job ID '%s' already in use",
                                                         q->job_id);
        }
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(message);
        if (r < 0)
                return r;

        r = bus_read_transaction_properties(message, &req->grouped, error);
        if (r < 0)
                return r;

        if (req->n_requests == 0)
                return sd_bus_reply_method_return(message, "ao", 0);

        return create_request_authorize(TAKE_PTR(req), error);
}

static int method_transaction(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        return bus_error_from_resources(error, transaction(message, userdata, error));
}

static int method_list_jobs(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        Manager *m = userdata;
        int r;

        r = sd_bus_message_new_method_return(message, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "(ossstts)");
        if (r < 0)
                return r;
        for (Job *j = job_registry_first(m->registry); j; j = job_registry_next(j)) {
                BusJob *bj = job_get_userdata(j);
                if (!bj)
                        continue;
                r = sd_bus_message_append(reply, "(ossstts)", bus_job_path(bj), job_id(j),
                                          job_type_to_string(job_type(j)), job_status_to_string(job_status(j)),
                                          job_current_progress(j), job_total_progress(j),
                                          bus_job_error_for_reader(bj, reply));
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_get_job(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        const char *id;
        uid_t uid;
        Job *j;
        int r;

        r = sd_bus_message_read(message, "s", &id);
        if (r < 0)
                return r;
        r = bus_sender_uid(m, message, &uid, error);
        if (r < 0)
                return r;
        /* Ids are the owner's: a job of the same id of another user is not this caller's. */
        j = job_registry_find(m->registry, uid, id);
        if (!j || !job_get_userdata(j))
                return sd_bus_error_set(error, BUS_ERROR_NO_SUCH_JOB, "Job not found");
        return sd_bus_reply_method_return(message, "o", bus_job_path(job_get_userdata(j)));
}

/* ---- properties ---------------------------------------------------------------------------- */

static int property_get_version(sd_bus *bus, const char *path, const char *interface, const char *property,
                                sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "s", PROJECT_VERSION);
}

static int property_get_job_types(sd_bus *bus, const char *path, const char *interface, const char *property,
                                  sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        int r;

        r = sd_bus_message_open_container(reply, 'a', "s");
        if (r < 0)
                return r;
        for (JobType t = 0; t < _JOB_TYPE_MAX; t++) {
                r = sd_bus_message_append(reply, "s", job_type_to_string(t));
                if (r < 0)
                        return r;
        }
        return sd_bus_message_close_container(reply);
}

static int property_get_jobs(sd_bus *bus, const char *path, const char *interface, const char *property,
                             sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        return sd_bus_message_append(reply, "u", m->n_bus_jobs);
}

static const sd_bus_vtable manager_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Version", "s", property_get_version, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("JobTypes", "as", property_get_job_types, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Jobs", "u", property_get_jobs, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),

        SD_BUS_METHOD_WITH_ARGS("Backup", SD_BUS_ARGS("s", source, "s", target, "a{sv}", options),
                                SD_BUS_RESULT("o", job), method_backup, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Mirror", SD_BUS_ARGS("s", source, "s", target, "a{sv}", options),
                                SD_BUS_RESULT("o", job), method_mirror, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Commit", SD_BUS_ARGS("s", image, "a{sv}", options), SD_BUS_RESULT("o", job),
                                method_commit, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Stream", SD_BUS_ARGS("s", image, "a{sv}", options), SD_BUS_RESULT("o", job),
                                method_stream, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Transaction", SD_BUS_ARGS("a(sssa{sv})", actions, "a{sv}", properties),
                                SD_BUS_RESULT("ao", jobs), method_transaction, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListJobs", SD_BUS_NO_ARGS, SD_BUS_RESULT("a(ossstts)", jobs), method_list_jobs,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetJob", SD_BUS_ARGS("s", id), SD_BUS_RESULT("o", job), method_get_job,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("AddBitmap", SD_BUS_ARGS("s", image, "s", name, "a{sv}", options), SD_BUS_NO_RESULT,
                                bus_method_add_bitmap, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("RemoveBitmap", SD_BUS_ARGS("s", image, "s", name), SD_BUS_NO_RESULT,
                                bus_method_remove_bitmap, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ClearBitmap", SD_BUS_ARGS("s", image, "s", name), SD_BUS_NO_RESULT,
                                bus_method_clear_bitmap, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("EnableBitmap", SD_BUS_ARGS("s", image, "s", name), SD_BUS_NO_RESULT,
                                bus_method_enable_bitmap, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("DisableBitmap", SD_BUS_ARGS("s", image, "s", name), SD_BUS_NO_RESULT,
                                bus_method_disable_bitmap, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("MergeBitmaps", SD_BUS_ARGS("s", image, "s", target, "as", sources), SD_BUS_NO_RESULT,
                                bus_method_merge_bitmaps, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListBitmaps", SD_BUS_ARGS("s", image), SD_BUS_RESULT("a(sutas)", bitmaps),
                                bus_method_list_bitmaps, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END
};

int bus_manager_register(Manager *m) {
        int r;

        r = sd_bus_add_object_vtable(m->bus, NULL, BUS_MANAGER_PATH, BUS_MANAGER_INTERFACE, manager_vtable, m);
        if (r < 0)
                return log_error_errno(r, "Failed to add the manager vtable: %m");
        r = sd_bus_add_object_manager(m->bus, NULL, BUS_MANAGER_PATH);
        if (r < 0)
                return log_error_errno(r, "Failed to add the object manager: %m");
        return 0;
}
