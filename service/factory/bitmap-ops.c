/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "bitmap-ops.h"
#include "error-message.h"
#include "fd-util.h"
#include "file-identity.h"
#include "job-files.h"
#include "log.h"
#include "macro.h"
#include "opener.h"
#include "reservations.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(Image *, image_close);

static const char *const op_names[_BITMAP_OP_MAX] = {
        [BITMAP_OP_LIST] = "ListBitmaps",
        [BITMAP_OP_ADD] = "AddBitmap",
        [BITMAP_OP_REMOVE] = "RemoveBitmap",
        [BITMAP_OP_CLEAR] = "ClearBitmap",
        [BITMAP_OP_ENABLE] = "EnableBitmap",
        [BITMAP_OP_DISABLE] = "DisableBitmap",
        [BITMAP_OP_MERGE] = "MergeBitmaps",
};

const char *bitmap_op_type_to_string(BitmapOpType t) {
        return t >= 0 && t < _BITMAP_OP_MAX ? op_names[t] : NULL;
}

int bitmap_check_name(const char *name, char **ret_error) {
        if (!name || !*name)
                return error_message(ret_error, -EINVAL, "Bitmap name cannot be empty");
        /* QEMU's text names the bitmap; a name of any length is not sent back, only its size. */
        if (strlen(name) > BITMAP_NAME_MAX)
                return error_message(ret_error, -EINVAL, "Bitmap name too long: %zu bytes, at most %u",
                                     strlen(name), BITMAP_NAME_MAX);
        return 0;
}

int bitmap_check_granularity(uint32_t granularity, char **ret_error) {
        /* A power of 2 in a u32 is at most 2 GiB, QEMU's bound too. */
        if (granularity != 0 && (granularity < 512 || (granularity & (granularity - 1))))
                return error_message(ret_error, -EINVAL, "Granularity must be power of 2 and at least 512");
        return 0;
}

void bitmap_request_done(BitmapRequest *q) {
        free(q->image);
        free(q->name);
        for (size_t i = 0; i < q->n_sources; i++)
                free(q->sources[i]);
        free(q->sources);
        *q = (BitmapRequest) {};
}

struct BitmapOp {
        JobFactory *factory;
        uid_t uid;
        gid_t *groups;
        size_t n_groups;
        bool groups_unknown;
        bool counted;                   /* admitted: in the user's calls */
        uint64_t memory_max;            /* what the image may take (0: no bound) */
        /* What is in the user's memory for a change: memory_max while the image is opened, then
         * what the open image may take (image_memory_estimate()) while the change is made. */
        uint64_t memory_counted;
        BitmapRequest request;

        OpenerCall *opener;
        sd_event_source *deadline;
        JobFiles files;
        ReservationSet *reservation;    /* the image, while the work runs */

        /* On a worker: the op is the worker's until it returns; one given up meanwhile goes then.
         * The image is opened on one worker call and changed (or listed) and closed on another,
         * so that the memory counted in between is what the open image may take. */
        bool working;
        bool abandoned;
        Image *image;
        uint64_t need;                  /* image_memory_estimate() of the open image */
        bool skip_work;                 /* given up once the image was open: only close it */
        int r;
        BitmapOpError kind;
        char *error;
        BitmapListEntry *list;
        size_t n_list;

        BitmapOpDone done;
        void *userdata;
};

static bool op_changes(const BitmapOp *op) {
        return op->request.type != BITMAP_OP_LIST;
}

static void list_free(BitmapListEntry *list, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(list[i].name);
        free(list);
}

static void op_stop_opening(BitmapOp *op) {
        op->opener = opener_call_free(op->opener);
        op->deadline = sd_event_source_disable_unref(op->deadline);
}

static void op_release_memory(BitmapOp *op) {
        if (op->memory_counted == 0)
                return;
        job_factory_release_call_memory(op->factory, op->uid, op->memory_counted);
        op->memory_counted = 0;
}

static void op_free_now(BitmapOp *op) {
        op_stop_opening(op);
        /* Only where no worker could take it (the pool out of memory): closed here. */
        op->image = image_close(op->image);
        op->reservation = reservation_set_free(op->reservation);
        op_release_memory(op);
        job_files_done(&op->files);
        if (op->counted)
                job_factory_release_call(op->factory, op->uid);
        bitmap_request_done(&op->request);
        list_free(op->list, op->n_list);
        free(op->groups);
        free(op->error);
        free(op);
}

BitmapOp *bitmap_op_free(BitmapOp *op) {
        if (!op)
                return NULL;
        if (op->working) {
                /* The worker still uses it: it goes when the work returns. */
                op_stop_opening(op);
                op->abandoned = true;
                return NULL;
        }
        op_free_now(op);
        return NULL;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(BitmapOp *, bitmap_op_free);

int bitmap_op_new(JobFactory *f, const JobCaller *caller, BitmapRequest *q, BitmapOp **ret, char **ret_error) {
        _cleanup_(bitmap_op_freep) BitmapOp *op = NULL;
        int r;

        op = calloc(1, sizeof(*op));
        if (!op) {
                bitmap_request_done(q);
                return error_message(ret_error, -ENOMEM, "Out of memory");
        }
        *op = (BitmapOp) {
                .factory = f,
                .uid = caller->uid,
                .groups_unknown = caller->groups_unknown,
                .request = *q,
                .files = JOB_FILES_INIT,
        };
        *q = (BitmapRequest) {};
        if (caller->n_groups > 0) {
                op->groups = calloc(caller->n_groups, sizeof(gid_t));
                if (!op->groups)
                        return error_message(ret_error, -ENOMEM, "Out of memory");
                memcpy(op->groups, caller->groups, caller->n_groups * sizeof(gid_t));
                op->n_groups = caller->n_groups;
        }

        r = job_factory_admit_call(f, op->uid, "bitmap operations", ret_error);
        if (r < 0)
                return r;
        op->counted = true;

        *ret = TAKE_PTR(op);
        return 0;
}

const BitmapRequest *bitmap_op_request(const BitmapOp *op) {
        return &op->request;
}

const BitmapListEntry *bitmap_op_list(const BitmapOp *op, size_t *ret_n) {
        *ret_n = op->n_list;
        return op->list;
}

static void op_finish(BitmapOp *op, int r, BitmapOpError kind, const char *message) {
        op_stop_opening(op);
        if (r < 0)
                log_debug("%s() of user %u failed: %s", bitmap_op_type_to_string(op->request.type), (unsigned) op->uid,
                          strempty(message));
        op->done(op, r, kind, message, op->userdata);
}

/* ---- the work (worker) ----------------------------------------------------------------------- */

static int op_fail(BitmapOp *op, int r, BitmapOpError kind, const char *message) {
        op->r = r;
        op->kind = r == -ENOMEM ? BITMAP_OP_ERROR_LIMIT : kind;
        free(op->error);
        op->error = strdup(r == -ENOMEM ? "blockjobd has run out of memory" : strempty(message));
        return r;
}

/* What an image call's failure is: the image layer says it with QEMU's texts. */
static BitmapOpError classify_bitmap_error(int r) {
        switch (r) {
        case -ENOENT:           /* no such bitmap */
        case -EEXIST:           /* a bitmap of that name exists */
        case -EBUSY:            /* inconsistent */
        case -EOPNOTSUPP:       /* qcow2 v2 */
        case -E2BIG:            /* more bitmap than QEMU allows */
                return BITMAP_OP_ERROR_BITMAP;
        case -EINVAL:           /* a name or granularity QEMU refuses */
                return BITMAP_OP_ERROR_INVALID;
        default:
                return BITMAP_OP_ERROR_IMAGE;
        }
}

/* More memory than the call may take: a limit, as for a creation. */
static int fail_memory(BitmapOp *op, const char *why) {
        const BitmapRequest *q = &op->request;
        _cleanup_free_ char *error = NULL;

        if (op->memory_max > 0)
                (void) error_message(&error, -E2BIG,
                                     "%s() on '%s' refused (a call of user %u may take up to %" PRIu64 " MiB of memory, as a job may): %s",
                                     bitmap_op_type_to_string(q->type), q->image, (unsigned) op->uid, op->memory_max >> 20,
                                     strempty(why));
        else
                (void) error_message(&error, -E2BIG, "%s() on '%s' refused: %s", bitmap_op_type_to_string(q->type), q->image,
                                     strempty(why));
        return op_fail(op, -E2BIG, BITMAP_OP_ERROR_LIMIT, error);
}

static int list_bitmaps(BitmapOp *op, Image *img) {
        ImageBitmapInfo *infos = NULL;
        size_t n = 0;
        int r;

        /* What the open counted (the directory as read and parsed, which also bounds the names
         * listed), and the two clusters each bitmap is counted through: never a bitmap's map. */
        uint64_t need = image_memory_estimate(img) + 2 * (uint64_t) image_cluster_size(img);
        if (op->memory_max > 0 && need > op->memory_max) {
                _cleanup_free_ char *why = NULL;
                (void) error_message(&why, -E2BIG, "listing the bitmaps of '%s' would need %" PRIu64 " MiB of memory",
                                     op->request.image, need >> 20);
                return fail_memory(op, why);
        }

        r = image_bitmap_list(img, &infos, &n);
        if (r < 0)
                return op_fail(op, r, BITMAP_OP_ERROR_IMAGE, image_error(img));
        op->list = calloc(MAX(n, (size_t) 1), sizeof(BitmapListEntry));
        if (!op->list) {
                image_bitmap_list_free(infos, n);
                return op_fail(op, -ENOMEM, BITMAP_OP_ERROR_LIMIT, NULL);
        }
        for (size_t i = 0; i < n; i++) {
                BitmapListEntry *e = &op->list[op->n_list++];
                *e = (BitmapListEntry) {
                        .name = TAKE_PTR(infos[i].name),
                        .granularity = infos[i].granularity,
                        .flags = infos[i].flags,
                };
                /* An inconsistent bitmap cannot be read: QEMU shows it, with nothing counted. */
                if (e->flags & IMAGE_BITMAP_INCONSISTENT)
                        continue;
                r = image_bitmap_dirty_bytes(img, i, &e->dirty);
                if (r < 0)
                        break;
        }
        image_bitmap_list_free(infos, n);
        if (r < 0)
                return op_fail(op, r, BITMAP_OP_ERROR_IMAGE, image_error(img));
        return 0;
}

static int change_bitmaps(BitmapOp *op, Image *img) {
        const BitmapRequest *q = &op->request;
        int r;

        switch (q->type) {
        case BITMAP_OP_ADD:
                r = image_bitmap_add(img, q->name, q->granularity, q->disabled);
                break;
        case BITMAP_OP_REMOVE:
                r = image_bitmap_remove(img, q->name);
                break;
        case BITMAP_OP_CLEAR:
                r = image_bitmap_clear(img, q->name);
                break;
        case BITMAP_OP_ENABLE:
        case BITMAP_OP_DISABLE:
                r = image_bitmap_enable(img, q->name, q->type == BITMAP_OP_ENABLE);
                break;
        case BITMAP_OP_MERGE:
                r = image_bitmap_merge(img, q->name, (const char *const *) q->sources, q->n_sources);
                break;
        default:
                r = -EINVAL;
        }
        if (r >= 0)
                r = image_flush(img);
        if (r < 0)
                return op_fail(op, r, classify_bitmap_error(r), image_error(img));
        return 0;
}

static uint64_t div_round_up(uint64_t a, uint64_t b) {
        return a / b + (a % b != 0);
}

/* What AddBitmap() makes that the image's estimate cannot know of, since the bitmap is not there
 * yet: its map (empty, stored as such), its table twice (as built and as written) and a cluster of
 * data. */
static uint64_t add_need(Image *img, uint32_t granularity) {
        uint64_t g = granularity ?: image_bitmap_default_granularity(img), cluster = image_cluster_size(img);
        uint64_t bits = div_round_up(image_size(img), g);

        return div_round_up(bits, 64) * 8 + 2 * div_round_up(div_round_up(bits, 8), cluster) * 8 + cluster;
}

/* The maps a change other than AddBitmap() reads and writes, which an image opened to change
 * bitmaps only does not count: a cleared bitmap's empty map, a merge's target and sources. The
 * other changes read no map (only the directory and, removing, a table, which it counts). */
static uint64_t change_need(Image *img, const BitmapRequest *q) {
        if (q->type != BITMAP_OP_CLEAR && q->type != BITMAP_OP_MERGE)
                return 0;
        return MAX(image_bitmap_change_memory(img, (const char *const *) &q->name, 1),
                   image_bitmap_change_memory(img, (const char *const *) q->sources, q->n_sources));
}

static void op_open(void *userdata) {
        BitmapOp *op = userdata;
        const BitmapRequest *q = &op->request;
        _cleanup_free_ char *error = NULL;
        int r;

        /* Opened as qcow2, never probed, and this layer alone: its bitmaps are its own, and no name
         * it records is followed. A change takes QEMU's write permission, as a job's image does,
         * but writes no data: the enabled bitmaps, which a job loads to record its writes, are
         * not loaded (IMAGE_OPEN_BITMAPS_ONLY), only the maps the change names (counted below).
         * Bounded as a job's images are, so that no call takes more than a creation could. */
        ImageChainFds top = { .fds = op->files.chain, .n = 1 };
        ImageOpenOptions options = { .fds = &top, .memory_max = op->memory_max };
        r = image_open_full(q->image, IMAGE_FORMAT_QCOW2,
                            (op_changes(op) ? IMAGE_OPEN_WRITE | IMAGE_OPEN_BITMAPS_ONLY : 0) | IMAGE_OPEN_NO_BACKING,
                            &options, &op->image, &error);
        /* The image has its own descriptor (and the locks) now, or failed. */
        job_files_done(&op->files);
        if (r == -EMEDIUMTYPE) {
                if (op_changes(op))
                        (void) error_message(&error, r, "Can't store persistent bitmaps to '%s': it is not a qcow2 image",
                                             q->image);
                else
                        (void) error_message(&error, r, "Image '%s' is not a qcow2 image: only qcow2 images have persistent bitmaps",
                                             q->image);
                (void) op_fail(op, r, BITMAP_OP_ERROR_BITMAP, error);
                return;
        }
        if (r == -E2BIG) {
                (void) fail_memory(op, error);
                return;
        }
        if (r < 0) {
                /* -EBUSY: QEMU's locks, held by another process (ours are reserved: checked before). */
                (void) op_fail(op, r, r == -EBUSY ? BITMAP_OP_ERROR_IN_USE : BITMAP_OP_ERROR_IMAGE, error);
                return;
        }
        /* Within memory_max, the open checked: the image's tables, its directory, and room for a
         * table and a cluster of the bitmaps a change reads and writes. Then the maps the change
         * reads (a new bitmap's, or those it names) are counted here, which the image cannot know. */
        op->need = image_memory_estimate(op->image);
        if (op_changes(op)) {
                uint64_t more = q->type == BITMAP_OP_ADD ? add_need(op->image, q->granularity) : change_need(op->image, q);
                op->need += more;
                if (op->memory_max > 0 && op->need > op->memory_max) {
                        _cleanup_free_ char *why = NULL;
                        (void) error_message(&why, -E2BIG, "%s '%s' would need %" PRIu64 " MiB of memory, and the image's tables %" PRIu64 " MiB",
                                             q->type == BITMAP_OP_ADD ? "bitmap" : "changing bitmap", q->name, more >> 20,
                                             (op->need - more) >> 20);
                        (void) fail_memory(op, why);
                        op->image = image_close(op->image);
                }
        }
}

static void op_work(void *userdata) {
        BitmapOp *op = userdata;

        if (!op->skip_work) {
                if (op_changes(op))
                        (void) change_bitmaps(op, op->image);
                else
                        (void) list_bitmaps(op, op->image);
        }
        op->image = image_close(op->image);
}

static void op_worked(void *userdata) {
        BitmapOp *op = userdata;

        op->working = false;
        /* The image is closed, its locks gone, its memory freed: the file is free for jobs again,
         * and the memory is the user's again. */
        op->reservation = reservation_set_free(op->reservation);
        op_release_memory(op);
        if (op->abandoned) {
                op_free_now(op);
                return;
        }
        op_finish(op, op->r, op->kind, op->error);
}

static void op_opened(void *userdata) {
        BitmapOp *op = userdata;

        if (!op->image) {
                op_worked(op);
                return;
        }
        /* From the bound to what the open image may take: what a change holds while it works. */
        if (op->memory_counted > op->need) {
                job_factory_release_call_memory(op->factory, op->uid, op->memory_counted - op->need);
                op->memory_counted = op->need;
        }
        /* Given up meanwhile: nothing is changed, the image is only closed (on a worker, as
         * closing it may write). */
        op->skip_work = op->abandoned;
        if (worker_pool_call(job_factory_pool(op->factory), op->uid, op_work, op_worked, op) < 0) {
                op->image = image_close(op->image);
                (void) op_fail(op, -ENOMEM, BITMAP_OP_ERROR_LIMIT, NULL);
                op_worked(op);
        }
}

/* ---- the file (loop) ------------------------------------------------------------------------- */

/* The image is ours while the work runs: a job of ours that has it (writes it; or, for a change,
 * reads it) refuses the operation, and a job that would have it meanwhile is refused. */
static int reserve(BitmapOp *op, char **ret_error) {
        _cleanup_free_ char *kind = NULL;
        FileClaim claim = { .write = op_changes(op) };
        ReservationSet *set;
        int r;

        r = file_identity(op->files.chain[0], &claim.id);
        if (r < 0)
                return error_message(ret_error, r, "Could not tell which file '%s' is: %m", op->request.image);
        claim.label = strdup(op->request.image);
        if (asprintf(&kind, "%s() call", bitmap_op_type_to_string(op->request.type)) < 0)
                kind = NULL;
        set = reservation_set_new(job_factory_reservations(op->factory));
        if (!claim.label || !kind || !set || reservation_set_add(set, &claim, 1) < 0) {
                file_claim_done(&claim);
                reservation_set_free(set);
                return error_message(ret_error, -ENOMEM, "blockjobd has run out of memory");
        }
        r = reservation_set_check(set, NULL, 0, ret_error);
        if (r >= 0 && reservation_set_commit(set, NULL, kind) < 0)
                r = error_message(ret_error, -ENOMEM, "blockjobd has run out of memory");
        if (r < 0) {
                reservation_set_free(set);
                return r;
        }
        op->reservation = set;
        return 0;
}

static int on_deadline(sd_event_source *s, uint64_t usec, void *userdata) {
        BitmapOp *op = userdata;
        _cleanup_free_ char *error = NULL;

        (void) error_message(&error, -ETIMEDOUT, "Opening '%s' as user %u took too long", op->request.image,
                             (unsigned) op->uid);
        op_finish(op, -ETIMEDOUT, BITMAP_OP_ERROR_IMAGE, error);
        return 0;
}

static void on_opened(OpenerCall *call, int r, bool ours, const char *error, void *userdata) {
        BitmapOp *op = userdata;
        _cleanup_free_ char *message = NULL;

        op->opener = opener_call_free(call);
        if (r < 0) {
                /* The opener's failure is about the caller's file; only what we could not take
                 * of its answer is ours. */
                if (ours && IN_SET(r, -EMFILE, -ENFILE))
                        op_finish(op, r, BITMAP_OP_ERROR_LIMIT, "blockjobd has run out of file descriptors");
                else if (ours)
                        op_finish(op, r, BITMAP_OP_ERROR_LIMIT, "blockjobd has run out of memory");
                else
                        op_finish(op, r, BITMAP_OP_ERROR_IMAGE, error);
                return;
        }
        if (op->files.n_chain < 1) {
                op_finish(op, -EPROTO, BITMAP_OP_ERROR_IMAGE, "blockjobd-opener sent no image");
                return;
        }

        r = reserve(op, &message);
        if (r < 0) {
                op_finish(op, r, r == -ETXTBSY ? BITMAP_OP_ERROR_IN_USE : BITMAP_OP_ERROR_LIMIT, message);
                return;
        }

        /* A change opens the image for writing, which loads its enabled bitmaps (and a merge makes
         * more maps): counted in the user's memory while it works. A listing opens it read-only,
         * which loads none: bounded, not counted, so that listings do not crowd out jobs. */
        r = job_factory_claim_call_memory(op->factory, op->uid, op_changes(op), &op->memory_max, &message);
        if (r < 0) {
                op->reservation = reservation_set_free(op->reservation);
                op_finish(op, r, BITMAP_OP_ERROR_LIMIT, message);
                return;
        }
        op->memory_counted = op_changes(op) ? op->memory_max : 0;

        op->deadline = sd_event_source_disable_unref(op->deadline);
        r = worker_pool_call(job_factory_pool(op->factory), op->uid, op_open, op_opened, op);
        if (r < 0) {
                op->reservation = reservation_set_free(op->reservation);
                op_release_memory(op);
                op_finish(op, r, BITMAP_OP_ERROR_LIMIT, "blockjobd has run out of memory");
                return;
        }
        op->working = true;
}

int bitmap_op_start(BitmapOp *op, BitmapOpDone done, void *userdata) {
        sd_event *event = job_factory_event(op->factory);
        uint64_t now;
        int r;

        op->done = done;
        op->userdata = userdata;

        /* Asked for as a raw image: the opener opens that one file with the caller's rights (for
         * writing if it is to be changed) and follows no name in it; it is read as qcow2 here. */
        OpenerRequest o = {
                .uid = op->uid,
                .groups = op->groups,
                .n_groups = op->n_groups,
                .groups_from_user_database = op->groups_unknown,
                .chain_path = op->request.image,
                .chain_format = IMAGE_FORMAT_RAW,
                .chain_write = op_changes(op),
        };

        r = sd_event_now(event, CLOCK_MONOTONIC, &now);
        if (r < 0)
                return r;
        r = sd_event_add_time(event, &op->deadline, CLOCK_MONOTONIC, now + JOB_FACTORY_OPEN_TIMEOUT_USEC, 0,
                              on_deadline, op);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(op->deadline, "bitmap-op-deadline");

        r = opener_call_start(event, &o, &op->files, on_opened, op, &op->opener);
        if (r < 0) {
                op->deadline = sd_event_source_disable_unref(op->deadline);
                return r;
        }
        return 0;
}
