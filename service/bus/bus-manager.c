/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backup.h"
#include "bus-errors.h"
#include "bus-job.h"
#include "bus-manager.h"
#include "bus-polkit.h"
#include "commit.h"
#include "bus-options.h"
#include "log.h"
#include "macro.h"
#include "mirror.h"
#include "opener.h"
#include "stream.h"

#define TRANSACTION_ACTIONS_MAX 256U

/* One job to create. Its images are opened on a worker, since that is blocking I/O. */
typedef struct CreateAction {
        JobType type;
        char *source;
        char *target;
        JobOptions options;
        CallerFiles files;              /* descriptors instead of names: passed, or the opener's */

        /* Filled in on the worker. */
        int r;
        char *error;
        const JobDriver *driver;
        void *driver_data;
        uint64_t size;
} CreateAction;

/* A method call that creates jobs: Backup() and friends create one, Transaction() several, all
 * or none. The call is answered once the jobs exist (or could not be created). */
typedef struct CreateRequest {
        Manager *manager;
        sd_bus_message *message;
        uid_t owner;
        gid_t *groups;                  /* the owner's groups, for opening files as the owner */
        size_t n_groups;
        bool groups_from_user_database;
        bool transaction;               /* reply "ao" rather than "o" */
        bool grouped;
        CreateAction *actions;
        size_t n_actions;
} CreateRequest;

static void create_action_done(CreateAction *a) {
        free(a->source);
        free(a->target);
        job_options_done(&a->options);
        caller_files_done(&a->files);
        free(a->error);
        if (a->driver_data)
                a->driver->free(a->driver_data);
}

static CreateRequest *create_request_free(CreateRequest *req) {
        if (!req)
                return NULL;
        for (size_t i = 0; i < req->n_actions; i++)
                create_action_done(&req->actions[i]);
        free(req->actions);
        free(req->groups);
        sd_bus_message_unref(req->message);
        free(req);
        return NULL;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(CreateRequest *, create_request_free);

/* ---- opening images (worker thread) ---------------------------------------------------------- */

/* A driver's open went this way ('r'); on success the action holds its data, and the size that
 * progress counts in. */
static int action_opened(CreateAction *a, int r, const JobDriver *driver, void *data, uint64_t size) {
        if (r < 0)
                return r;
        a->driver = driver;
        a->driver_data = data;
        a->size = size;
        return 0;
}

static int open_backup(CreateAction *a) {
        ImageChainFds chain;
        TargetGiven target;
        BackupParams p = {
                .source = a->source,
                .target = a->target,
                .source_fds = caller_files_chain(&a->files, &chain),
                .target_given = caller_files_target(&a->files, &target),
                .overwrite = a->options.overwrite,
                .sync_top = a->options.sync == SYNC_TOP,
                .target_format = a->options.format,
        };
        Backup *b = NULL;
        int r;

        r = backup_open(&p, &b, &a->error);
        return action_opened(a, r, &backup_driver, b, r >= 0 ? backup_size(b) : 0);
}

static int open_commit(CreateAction *a) {
        ImageChainFds chain;
        CommitParams p = {
                .image = a->source,
                .fds = caller_files_chain(&a->files, &chain),
                .top = a->options.top,
                .base = a->options.base,
                .backing_file = a->options.backing_file,
        };
        Commit *c = NULL;
        int r;

        r = commit_open(&p, &c, &a->error);
        return action_opened(a, r, &commit_driver, c, r >= 0 ? commit_size(c) : 0);
}

static int open_stream(CreateAction *a) {
        ImageChainFds chain;
        StreamParams p = {
                .image = a->source,
                .fds = caller_files_chain(&a->files, &chain),
                .base = a->options.base,
                .backing_file = a->options.backing_file,
        };
        Stream *s = NULL;
        int r;

        r = stream_open(&p, &s, &a->error);
        return action_opened(a, r, &stream_driver, s, r >= 0 ? stream_size(s) : 0);
}

static int open_mirror(CreateAction *a) {
        ImageChainFds chain;
        TargetGiven target;
        MirrorParams p = {
                .source = a->source,
                .target = a->target,
                .source_fds = caller_files_chain(&a->files, &chain),
                .target_given = caller_files_target(&a->files, &target),
                .overwrite = a->options.overwrite,
                .sync_top = a->options.sync == SYNC_TOP,
                .target_format = a->options.format,
                .granularity = a->options.granularity,
                .buf_size = a->options.buf_size,
        };
        Mirror *m = NULL;
        int r;

        r = mirror_open(&p, &m, &a->error);
        return action_opened(a, r, &mirror_driver, m, r >= 0 ? mirror_size(m) : 0);
}

/* Anyone but root: whatever the caller did not pass as a descriptor is opened by the opener, as
 * the caller. */
static int open_as_caller(const CreateRequest *req, CreateAction *a) {
        bool need_chain = a->files.n_chain == 0, need_target = a->target && a->files.target_fd < 0;
        OpenerRequest o = {
                .uid = req->owner,
                .groups = req->groups,
                .n_groups = req->n_groups,
                .groups_from_user_database = req->groups_from_user_database,
                .chain_path = need_chain ? a->source : NULL,
                .chain_write = IN_SET(a->type, JOB_TYPE_COMMIT, JOB_TYPE_STREAM),
                .target_path = need_target ? a->target : NULL,
                .target_overwrite = a->options.overwrite,
        };

        if (req->owner == 0 || (!need_chain && !need_target))
                return 0;
        return opener_open(&o, &a->files, &a->error);
}

static void create_request_open(void *userdata) {
        CreateRequest *req = userdata;

        for (size_t i = 0; i < req->n_actions; i++) {
                CreateAction *a = &req->actions[i];

                a->r = open_as_caller(req, a);
                if (a->r < 0)
                        return;

                switch (a->type) {
                case JOB_TYPE_BACKUP:
                        a->r = open_backup(a);
                        break;
                case JOB_TYPE_MIRROR:
                        a->r = open_mirror(a);
                        break;
                case JOB_TYPE_COMMIT:
                        a->r = open_commit(a);
                        break;
                case JOB_TYPE_STREAM:
                default:
                        a->r = open_stream(a);
                        break;
                }
                /* All or nothing: no point opening the rest. */
                if (a->r < 0)
                        return;
                caller_files_hand_over(&a->files);
        }
}

/* ---- creating the jobs (event loop) -------------------------------------------------------- */

static int create_jobs(CreateRequest *req, Job **jobs, sd_bus_error *error) {
        Manager *m = req->manager;
        _cleanup_free_ char *txn_name = NULL;
        JobTxn *txn = NULL;
        size_t n = 0;
        int r = 0;

        if (req->grouped) {
                r = job_txn_new(m->registry, &txn);
                if (r < 0)
                        return r;
                if (asprintf(&txn_name, "transaction%u", m->next_txn++) < 0) {
                        job_txn_unref(txn);
                        return -ENOMEM;
                }
        }

        for (; n < req->n_actions; n++) {
                CreateAction *a = &req->actions[n];
                _cleanup_free_ char *message = NULL;
                JobCreateParams p = {
                        .id = a->options.job_id,
                        .driver = a->driver,
                        .driver_data = a->driver_data,
                        .auto_finalize = a->options.auto_finalize,
                        .auto_dismiss = a->options.auto_dismiss,
                        .speed = a->options.speed,
                        .on_source_error = a->options.on_source_error,
                        .on_target_error = a->options.on_target_error,
                        .txn = txn,
                };

                r = job_create(m->registry, &p, &jobs[n], &message);
                if (r < 0) {
                        r = bus_error_from_core(error, r, message);
                        break;
                }
                a->driver_data = NULL;          /* the job owns it now */
                job_progress_set_remaining(jobs[n], a->size);

                r = bus_job_attach(m, jobs[n], a->source, a->target, req->owner, txn_name, NULL);
                if (r < 0) {
                        job_early_fail(jobs[n]);
                        break;
                }
        }
        job_txn_unref(txn);

        if (r < 0) {
                /* As in QEMU: jobs that already existed go away again, created → null. */
                for (size_t i = 0; i < n; i++)
                        job_early_fail(jobs[i]);
                return r;
        }
        return 0;
}

static int create_request_reply(CreateRequest *req, sd_bus_error *error) {
        Manager *m = req->manager;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ Job **jobs = NULL;
        int r;

        if (m->shutting_down)
                return sd_bus_error_set(error, BUS_ERROR_SHUTTING_DOWN, "blockjobd is shutting down");

        for (size_t i = 0; i < req->n_actions; i++)
                if (req->actions[i].r < 0)
                        return bus_error_from_image(error, req->actions[i].r, req->actions[i].error);

        jobs = calloc(req->n_actions, sizeof(Job *));
        if (!jobs)
                return -ENOMEM;
        r = create_jobs(req, jobs, error);
        if (r < 0)
                return r;

        for (size_t i = 0; i < req->n_actions; i++)
                job_start(jobs[i]);

        r = sd_bus_message_new_method_return(req->message, &reply);
        if (r < 0)
                return r;
        if (req->transaction) {
                r = sd_bus_message_open_container(reply, 'a', "o");
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i < req->n_actions; i++) {
                /* Started jobs run on; none of them can have ended yet, their steps are queued. */
                BusJob *bj = job_get_userdata(jobs[i]);
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

static void create_request_opened(void *userdata) {
        _cleanup_(create_request_freep) CreateRequest *req = userdata;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        Manager *m = req->manager;
        int r;

        assert(m->n_requests > 0);
        m->n_requests--;

        r = create_request_reply(req, &error);
        if (r < 0) {
                if (!sd_bus_error_is_set(&error))
                        sd_bus_error_set_errno(&error, r);
                r = sd_bus_reply_method_error(req->message, &error);
                if (r < 0)
                        log_warning_errno(r, "Failed to send an error reply: %m");
        }
        manager_changed(m);
}

static int create_request_submit(Manager *m, CreateRequest *req) {
        int r;

        r = worker_pool_call(m->pool, req->owner, create_request_open, create_request_opened, req);
        if (r < 0)
                return r;
        m->n_requests++;
        return 0;
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

static void create_request_free_void(void *req) {
        create_request_free(req);
}

/* Authorized: open the images (on a worker), then create the jobs and reply. */
static int create_request_authorized(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        _cleanup_(create_request_freep) CreateRequest *req = userdata;
        Manager *m = req->manager;
        int r;

        if (m->shutting_down)
                return sd_bus_error_set(error, BUS_ERROR_SHUTTING_DOWN, "blockjobd is shutting down");
        r = create_request_submit(m, req);
        if (r < 0)
                return r;
        TAKE_PTR(req);
        return 1;
}

/* Live jobs of a user: created, and not yet gone. */
static unsigned jobs_of(Manager *m, uid_t uid) {
        unsigned n = 0;

        for (Job *j = job_registry_first(m->registry); j; j = job_registry_next(j)) {
                BusJob *bj = job_get_userdata(j);
                if (bj && bus_job_owner(bj) == uid)
                        n++;
        }
        return n;
}

/* The limit on jobs per user, then polkit: one check per job to create, with what rules need
 * to know about it. Takes 'req'. */
static int create_request_authorize(CreateRequest *req, sd_bus_error *error) {
        _cleanup_(create_request_freep) CreateRequest *owned = req;
        _cleanup_free_ BusAuthCheck *checks = NULL;
        Manager *m = req->manager;
        char owner[16];

        if (req->owner != 0 && m->max_jobs_per_user > 0) {
                unsigned have = jobs_of(m, req->owner);
                if (have + req->n_actions > m->max_jobs_per_user)
                        return sd_bus_error_setf(error, BUS_ERROR_LIMIT_EXCEEDED,
                                                 "User %u has %u jobs, and may have at most %u", (unsigned) req->owner,
                                                 have, m->max_jobs_per_user);
        }

        checks = calloc(req->n_actions, sizeof(BusAuthCheck));
        if (!checks)
                return -ENOMEM;
        snprintf(owner, sizeof(owner), "%u", (unsigned) req->owner);
        for (size_t i = 0; i < req->n_actions; i++) {
                const CreateAction *a = &req->actions[i];
                /* With descriptors, source and target are the caller's labels: rules can tell. */
                checks[i] = (BusAuthCheck) {
                        .action = create_action_id(a->type),
                        .details = { "job-type", job_type_to_string(a->type), "owner-uid", owner,
                                     "source", a->source, "target", strempty(a->target),
                                     "source-fd", a->files.n_chain > 0 ? "yes" : "no",
                                     "target-fd", a->files.target_fd >= 0 ? "yes" : "no",
                                     a->options.job_id ? "job-id" : NULL, a->options.job_id },
                };
        }
        return bus_authorize(m, req->message, req->owner, checks, req->n_actions, create_request_authorized,
                             TAKE_PTR(owned), create_request_free_void, error);
}

/* ---- method handlers ----------------------------------------------------------------------- */

/* The caller's groups, as the bus knows them (dbus-daemon 1.15.2 or later, dbus-broker: every
 * group of the process); the opener becomes the caller with exactly these, the user's primary
 * group its gid. A bus that cannot tell (dbus-daemon 1.14, Debian 12's) leaves the opener to take
 * the user's groups from the user database, as a login would. */
static int read_sender_groups(CreateRequest *req, sd_bus_error *error) {
        _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *creds = NULL;
        const gid_t *groups;
        int r, n = 0;

        r = sd_bus_query_sender_creds(req->message, SD_BUS_CREDS_SUPPLEMENTARY_GIDS, &creds);
        if (r >= 0)
                r = n = sd_bus_creds_get_supplementary_gids(creds, &groups);
        if (r == -ENODATA) {
                req->groups_from_user_database = true;
                return 0;
        }
        if (r < 0)
                return sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED, "Could not tell the caller's groups: %s",
                                         strerror(-r));
        if (n > 0) {
                req->groups = malloc(sizeof(gid_t) * n);
                if (!req->groups)
                        return -ENOMEM;
                memcpy(req->groups, groups, sizeof(gid_t) * n);
        }
        req->n_groups = n;
        return 0;
}

static int create_request_new(Manager *m, sd_bus_message *message, size_t n_actions, CreateRequest **ret,
                              sd_bus_error *error) {
        _cleanup_(create_request_freep) CreateRequest *req = NULL;
        uid_t uid;
        int r;

        r = bus_sender_uid(message, &uid, error);
        if (r < 0)
                return r;

        req = calloc(1, sizeof(*req));
        if (!req)
                return -ENOMEM;
        req->manager = m;
        req->message = sd_bus_message_ref(message);
        req->owner = uid;
        req->actions = calloc(MAX(n_actions, 1U), sizeof(CreateAction));
        if (!req->actions)
                return -ENOMEM;
        for (size_t i = 0; i < n_actions; i++) {
                req->actions[i].options = (JobOptions) JOB_OPTIONS_DEFAULT;
                req->actions[i].files = (CallerFiles) CALLER_FILES_NULL;
        }
        if (uid != 0) {
                r = read_sender_groups(req, error);
                if (r < 0)
                        return r;
        }
        req->n_actions = n_actions;

        *ret = TAKE_PTR(req);
        return 0;
}

static const char *path_role(JobType type, bool target) {
        if (target)
                return "Target";
        return IN_SET(type, JOB_TYPE_BACKUP, JOB_TYPE_MIRROR) ? "Source" : "Image";
}

/* Reads an action's options and checks everything that needs no I/O. 'target' is NULL for the
 * types that have none. */
static int read_action(sd_bus_message *message, CreateAction *a, const char *source, const char *target, Manager *m,
                       sd_bus_error *error) {
        _cleanup_free_ char *id_error = NULL;
        int r;

        r = bus_read_job_options(message, a->type, &a->options, error);
        if (r < 0)
                return r;

        r = bus_check_path(path_role(a->type, false), source, error);
        if (r < 0)
                return r;
        if (target) {
                r = bus_check_path(path_role(a->type, true), target, error);
                if (r < 0)
                        return r;
        }
        if (a->options.top && (r = bus_check_path("Top", a->options.top, error)) < 0)
                return r;
        if (a->options.base && (r = bus_check_path("Base", a->options.base, error)) < 0)
                return r;

        r = job_registry_check_id(m->registry, /* owner */ 0, a->options.job_id, &id_error);
        if (r < 0)
                return bus_error_from_core(error, r, id_error);

        /* Descriptors: the chain starts with source-fd (image-fd), chain-fds go below it. */
        const char *fd_option = IN_SET(a->type, JOB_TYPE_BACKUP, JOB_TYPE_MIRROR) ? "source-fd" : "image-fd";
        if (a->options.n_chain_fds > 0 && a->options.source_fd < 0)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Option 'chain-fds' needs '%s'", fd_option);
        if (a->options.source_fd >= 0) {
                a->files.chain[a->files.n_chain++] = TAKE_FD(a->options.source_fd);
                for (size_t i = 0; i < a->options.n_chain_fds; i++)
                        a->files.chain[a->files.n_chain++] = TAKE_FD(a->options.chain_fds[i]);
                a->options.n_chain_fds = 0;
        }
        a->files.target_fd = TAKE_FD(a->options.target_fd);

        a->source = strdup(source);
        a->target = target ? strdup(target) : NULL;
        if (!a->source || (target && !a->target))
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
        req->actions[0].type = type;
        r = read_action(message, &req->actions[0], source, target, m, error);
        if (r < 0)
                return r;

        return create_request_authorize(TAKE_PTR(req), error);
}

static int method_backup(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        return create_single(message, userdata, JOB_TYPE_BACKUP, true, error);
}

static int method_mirror(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        return create_single(message, userdata, JOB_TYPE_MIRROR, true, error);
}

static int method_commit(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        return create_single(message, userdata, JOB_TYPE_COMMIT, false, error);
}

static int method_stream(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        return create_single(message, userdata, JOB_TYPE_STREAM, false, error);
}

static int method_transaction(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        _cleanup_(create_request_freep) CreateRequest *req = NULL;
        Manager *m = userdata;
        int r;

        if (m->shutting_down)
                return sd_bus_error_set(error, BUS_ERROR_SHUTTING_DOWN, "blockjobd is shutting down");

        r = create_request_new(m, message, TRANSACTION_ACTIONS_MAX, &req, error);
        if (r < 0)
                return r;
        req->transaction = true;
        req->n_actions = 0;

        r = sd_bus_message_enter_container(message, 'a', "(sssa{sv})");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(message, 'r', "sssa{sv}")) > 0) {
                const char *type_name, *source, *target;
                CreateAction *a;

                if (req->n_actions >= TRANSACTION_ACTIONS_MAX)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "A transaction holds at most %u actions", TRANSACTION_ACTIONS_MAX);
                a = &req->actions[req->n_actions++];

                r = sd_bus_message_read(message, "sss", &type_name, &source, &target);
                if (r < 0)
                        return r;
                a->type = job_type_from_string(type_name);
                if (a->type != JOB_TYPE_BACKUP)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "Action type '%s' cannot be part of a transaction: only 'backup' can",
                                                 type_name);
                r = read_action(message, a, source, target, m, error);
                if (r < 0)
                        return r;

                r = sd_bus_message_exit_container(message);
                if (r < 0)
                        return r;

                /* Two actions may not ask for the same id. */
                for (size_t i = 0; a->options.job_id && i + 1 < req->n_actions; i++)
                        if (req->actions[i].options.job_id && strcmp(req->actions[i].options.job_id, a->options.job_id) == 0)
                                return sd_bus_error_setf(error, BUS_ERROR_JOB_EXISTS, "Job ID '%s' already in use",
                                                         a->options.job_id);
        }
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(message);
        if (r < 0)
                return r;

        r = bus_read_transaction_properties(message, &req->grouped, error);
        if (r < 0)
                return r;

        if (req->n_actions == 0)
                return sd_bus_reply_method_return(message, "ao", 0);

        return create_request_authorize(TAKE_PTR(req), error);
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
                                          job_current_progress(j), job_total_progress(j), strempty(job_error(j)));
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
        Job *j;
        int r;

        r = sd_bus_message_read(message, "s", &id);
        if (r < 0)
                return r;
        j = job_registry_find(m->registry, /* owner */ 0, id);
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
