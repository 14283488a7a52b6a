/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitmap-ops.h"
#include "bus-bitmap.h"
#include "bus-errors.h"
#include "bus-options.h"
#include "bus-polkit.h"
#include "bus-sender.h"
#include "escape.h"
#include "log.h"
#include "macro.h"
#include "manager.h"

/* An image holds at most QEMU's 65535 bitmaps: more sources than that cannot all exist. */
#define MERGE_SOURCES_MAX 65535U

/* One call, from reading it to its reply. */
typedef struct BitmapCall {
        Manager *manager;
        sd_bus_message *message;
        uid_t uid;
        BitmapOp *op;
        bool counted;                   /* in the manager's requests: it keeps the daemon busy */
} BitmapCall;

static BitmapCall *bitmap_call_free(BitmapCall *c) {
        if (!c)
                return NULL;
        bitmap_op_free(c->op);
        if (c->counted) {
                assert(c->manager->n_requests > 0);
                c->manager->n_requests--;
                manager_changed(c->manager);
        }
        sd_bus_message_unref(c->message);
        free(c);
        return NULL;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(BitmapCall *, bitmap_call_free);

static void bitmap_call_free_void(void *c) {
        bitmap_call_free(c);
}

/* ---- the reply ------------------------------------------------------------------------------- */

static int append_flags(sd_bus_message *reply, unsigned flags) {
        int r;

        r = sd_bus_message_open_container(reply, 'a', "s");
        if (r < 0)
                return r;
        /* The on-disk flags as qemu-img info names them, then what follows from them. */
        if ((flags & IMAGE_BITMAP_IN_USE) && (r = sd_bus_message_append(reply, "s", "in-use")) < 0)
                return r;
        if ((flags & IMAGE_BITMAP_AUTO) && (r = sd_bus_message_append(reply, "s", "auto")) < 0)
                return r;
        if (!(flags & IMAGE_BITMAP_AUTO) && (r = sd_bus_message_append(reply, "s", "disabled")) < 0)
                return r;
        if ((flags & IMAGE_BITMAP_INCONSISTENT) && (r = sd_bus_message_append(reply, "s", "inconsistent")) < 0)
                return r;
        return sd_bus_message_close_container(reply);
}

static int reply_list(BitmapCall *c) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const BitmapListEntry *list;
        size_t n;
        int r;

        list = bitmap_op_list(c->op, &n);
        r = sd_bus_message_new_method_return(c->message, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "(sutas)");
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                /* A name is any bytes but NUL, as QEMU allows: one that is not valid UTF-8 cannot
                 * be a D-Bus string, and one with control characters must not reach a terminal.
                 * Those are listed escaped (\xNN); every other name as it is. */
                _cleanup_free_ char *name = escape_untrusted(list[i].name);
                if (!name)
                        return -ENOMEM;
                r = sd_bus_message_open_container(reply, 'r', "sutas");
                if (r >= 0)
                        r = sd_bus_message_append(reply, "sut", name, list[i].granularity, list[i].dirty);
                if (r >= 0)
                        r = append_flags(reply, list[i].flags);
                if (r >= 0)
                        r = sd_bus_message_close_container(reply);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

/* A change of an image, made for someone: said in the journal, as job status changes are. */
static void log_change(const BitmapCall *c, const BitmapRequest *q) {
        _cleanup_free_ char *name = escape_untrusted(q->name), *image = escape_untrusted(q->image);

        log_info("%s() of bitmap '%s' of '%s' for user %u done.", bitmap_op_type_to_string(q->type), name ?: "?",
                 image ?: "?", (unsigned) c->uid);
}

static void on_done(BitmapOp *op, int r, BitmapOpError kind, const char *message, void *userdata) {
        _cleanup_(bitmap_call_freep) BitmapCall *c = userdata;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;

        if (r >= 0 && bitmap_op_request(op)->type != BITMAP_OP_LIST)
                log_change(c, bitmap_op_request(op));

        if (r >= 0)
                r = bitmap_op_request(op)->type == BITMAP_OP_LIST ? reply_list(c)
                                                                  : sd_bus_reply_method_return(c->message, NULL);
        else
                r = bus_error_from_bitmap(&error, kind, r, message);
        bus_reply_error(c->message, &error, bus_error_from_resources(&error, r));
}

/* ---- authorized: on to the factory ----------------------------------------------------------- */

static int bitmap_call_authorized(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        _cleanup_(bitmap_call_freep) BitmapCall *c = userdata;
        Manager *m = c->manager;
        int r;

        if (m->shutting_down)
                return sd_bus_error_set(error, BUS_ERROR_SHUTTING_DOWN, "blockjobd is shutting down");

        /* From here on, the call is the operation's to answer (on_done() frees it), and the
         * daemon does not exit before it is answered. */
        m->n_requests++;
        c->counted = true;
        r = bitmap_op_start(c->op, on_done, c);
        if (r < 0)
                return bus_error_from_resources(error, r);
        TAKE_PTR(c);
        return 1;
}

/* Reads who calls, admits the operation, and asks polkit if it changes the image. Takes 'q'. */
static int bitmap_call_start(Manager *m, sd_bus_message *message, BitmapRequest *q, sd_bus_error *error) {
        _cleanup_(bitmap_call_freep) BitmapCall *c = NULL;
        _cleanup_free_ gid_t *groups = NULL;
        _cleanup_free_ char *message_text = NULL;
        BitmapOpType type = q->type;
        size_t n_groups = 0;
        bool groups_unknown = false;
        uid_t uid;
        int r;

        r = bus_sender_uid(m, message, &uid, error);
        if (r < 0)
                goto fail;
        r = bus_sender_groups(m, message, &groups, &n_groups, &groups_unknown, error);
        if (r < 0)
                goto fail;

        c = calloc(1, sizeof(*c));
        if (!c) {
                r = -ENOMEM;
                goto fail;
        }
        c->manager = m;
        c->message = sd_bus_message_ref(message);
        c->uid = uid;

        JobCaller caller = { .uid = uid, .groups = groups, .n_groups = n_groups, .groups_unknown = groups_unknown };
        r = bitmap_op_new(m->factory, &caller, q, &c->op, &message_text);
        if (r < 0)
                return bus_error_from_bitmap(error, BITMAP_OP_ERROR_LIMIT, r, message_text);

        /* Listing needs only the right to read the image, which the opener checks. */
        if (type == BITMAP_OP_LIST)
                return bitmap_call_authorized(message, TAKE_PTR(c), error);

        const BitmapRequest *req = bitmap_op_request(c->op);
        char owner[16];
        snprintf(owner, sizeof(owner), "%u", (unsigned) uid);
        BusAuthCheck check = {
                .action = BITMAP_MODIFY_ACTION,
                .details = { "image", req->image, "bitmap", req->name, "operation", bitmap_op_type_to_string(type),
                             "owner-uid", owner },
        };
        return bus_authorize(m, message, uid, &check, 1, bitmap_call_authorized, TAKE_PTR(c), bitmap_call_free_void,
                             error);
fail:
        bitmap_request_done(q);
        return r;
}

/* ---- method handlers ------------------------------------------------------------------------- */

static int check_name(const char *name, sd_bus_error *error) {
        _cleanup_free_ char *message = NULL;
        int r;

        r = bitmap_check_name(name, &message);
        if (r < 0)
                return sd_bus_error_set(error, SD_BUS_ERROR_INVALID_ARGS, message ?: "Bad bitmap name");
        return 0;
}

/* The image and bitmap arguments every method starts with (ListBitmaps: the image only). */
static int read_image_and_name(sd_bus_message *message, BitmapRequest *q, bool with_name, sd_bus_error *error) {
        const char *image, *name = NULL;
        int r;

        r = sd_bus_message_read(message, "s", &image);
        if (r < 0)
                return r;
        if (with_name) {
                r = sd_bus_message_read(message, "s", &name);
                if (r < 0)
                        return r;
        }
        r = bus_check_path("Image", image, error);
        if (r < 0)
                return r;
        if (with_name && (r = check_name(name, error)) < 0)
                return r;
        q->image = strdup(image);
        q->name = name ? strdup(name) : NULL;
        if (!q->image || (name && !q->name))
                return -ENOMEM;
        return 0;
}

/* AddBitmap's options, read as the job options are (bus-options.h). */
static int parse_granularity(sd_bus_message *m, BitmapRequest *q, sd_bus_error *error) {
        int r;

        r = sd_bus_message_read(m, "u", &q->granularity);
        if (r < 0)
                return r;
        /* 0 would mean the default: given, it must be a granularity. */
        if (q->granularity == 0 || bitmap_check_granularity(q->granularity, NULL) < 0)
                return sd_bus_error_set(error, SD_BUS_ERROR_INVALID_ARGS, "Granularity must be power of 2 and at least 512");
        return 0;
}

static int parse_disabled(sd_bus_message *m, BitmapRequest *q, sd_bus_error *error) {
        int b, r;

        r = sd_bus_message_read(m, "b", &b);
        if (r < 0)
                return r;
        q->disabled = b;
        return 0;
}

static const struct {
        const char *key;
        const char *signature;
        int (*parse)(sd_bus_message *m, BitmapRequest *q, sd_bus_error *error);
} add_options[] = {
        { "granularity", "u", parse_granularity },
        { "disabled",    "b", parse_disabled },
};

static int find_add_option(const char *key, void *userdata, const char **ret_signature) {
        for (size_t i = 0; i < ELEMENTSOF(add_options); i++)
                if (strcmp(add_options[i].key, key) == 0) {
                        *ret_signature = add_options[i].signature;
                        return (int) i;
                }
        return -ENOENT;
}

static int read_add_option(sd_bus_message *m, const char *key, size_t i, void *userdata, sd_bus_error *error) {
        return add_options[i].parse(m, userdata, error);
}

static const BusOptionsReader add_options_reader = {
        .n_keys = ELEMENTSOF(add_options),
        .find = find_add_option,
        .read = read_add_option,
};

static int read_add_options(sd_bus_message *message, BitmapRequest *q, sd_bus_error *error) {
        return bus_read_options(message, "AddBitmap()", &add_options_reader, q, error);
}

/* MergeBitmaps' sources: names as the bitmap's, checked as they are read, and at most
 * MERGE_SOURCES_MAX: a message of millions of short strings is refused as it is read, not
 * copied whole first. */
static int read_sources(sd_bus_message *message, BitmapRequest *q, sd_bus_error *error) {
        const char *source;
        int r;

        r = sd_bus_message_enter_container(message, 'a', "s");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_read(message, "s", &source)) > 0) {
                if (q->n_sources >= MERGE_SOURCES_MAX)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "MergeBitmaps() takes at most %u sources",
                                                 MERGE_SOURCES_MAX);
                r = check_name(source, error);
                if (r < 0)
                        return r;
                char **a = reallocarray(q->sources, q->n_sources + 1, sizeof(char *));
                if (!a)
                        return -ENOMEM;
                q->sources = a;
                q->sources[q->n_sources] = strdup(source);
                if (!q->sources[q->n_sources])
                        return -ENOMEM;
                q->n_sources++;
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(message);
}

/* What each method reads after the image: the bitmap's name (all but ListBitmaps()), then
 * AddBitmap()'s options or MergeBitmaps()' sources. */
static const struct {
        bool with_name;
        int (*read_more)(sd_bus_message *message, BitmapRequest *q, sd_bus_error *error);
} bitmap_methods[_BITMAP_OP_MAX] = {
        [BITMAP_OP_LIST]    = { false, NULL },
        [BITMAP_OP_ADD]     = { true,  read_add_options },
        [BITMAP_OP_REMOVE]  = { true,  NULL },
        [BITMAP_OP_CLEAR]   = { true,  NULL },
        [BITMAP_OP_ENABLE]  = { true,  NULL },
        [BITMAP_OP_DISABLE] = { true,  NULL },
        [BITMAP_OP_MERGE]   = { true,  read_sources },
};

static int bitmap_method(sd_bus_message *message, Manager *m, BitmapOpType type, sd_bus_error *error) {
        BitmapRequest q = { .type = type };
        int r;

        if (m->shutting_down)
                return sd_bus_error_set(error, BUS_ERROR_SHUTTING_DOWN, "blockjobd is shutting down");

        r = read_image_and_name(message, &q, bitmap_methods[type].with_name, error);
        if (r >= 0 && bitmap_methods[type].read_more)
                r = bitmap_methods[type].read_more(message, &q, error);
        if (r < 0) {
                bitmap_request_done(&q);
                return r;
        }
        return bitmap_call_start(m, message, &q, error);
}

/* Running out of descriptors or memory anywhere is LimitExceeded, as for job creations. */
#define BITMAP_METHOD(fn, type)                                                                        \
        int fn(sd_bus_message *message, void *userdata, sd_bus_error *error) {                         \
                return bus_error_from_resources(error, bitmap_method(message, userdata, type, error)); \
        }

BITMAP_METHOD(bus_method_add_bitmap, BITMAP_OP_ADD)
BITMAP_METHOD(bus_method_remove_bitmap, BITMAP_OP_REMOVE)
BITMAP_METHOD(bus_method_clear_bitmap, BITMAP_OP_CLEAR)
BITMAP_METHOD(bus_method_enable_bitmap, BITMAP_OP_ENABLE)
BITMAP_METHOD(bus_method_disable_bitmap, BITMAP_OP_DISABLE)
BITMAP_METHOD(bus_method_merge_bitmaps, BITMAP_OP_MERGE)
BITMAP_METHOD(bus_method_list_bitmaps, BITMAP_OP_LIST)
