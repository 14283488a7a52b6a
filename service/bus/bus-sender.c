/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus-sender.h"
#include "hashmap.h"
#include "list.h"
#include "log.h"
#include "macro.h"

#define SENDER_CREDS_MASK (SD_BUS_CREDS_EUID | SD_BUS_CREDS_SUPPLEMENTARY_GIDS)

typedef struct BusSender BusSender;
struct BusSender {
        Manager *manager;
        char *name;                     /* the unique name, the key */
        sd_bus_creds *creds;
        sd_bus_slot *gone;              /* NameOwnerChanged for the name: the connection went */
        sd_bus_slot *check;             /* NameHasOwner, until answered */
        LIST_FIELDS(BusSender, senders);
};

static BusSender *bus_sender_free(BusSender *s) {
        if (!s)
                return NULL;
        if (s->manager) {
                LIST_REMOVE(senders, s->manager->senders, s);
                assert_se(hashmap_remove(s->manager->senders_by_name, s->name) == s);
        }
        sd_bus_slot_unref(s->gone);
        sd_bus_slot_unref(s->check);
        sd_bus_creds_unref(s->creds);
        free(s->name);
        free(s);
        return NULL;
}

static int on_name_owner_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        const char *name, *old_owner, *new_owner;

        /* The match is for this name alone; a unique name never gets an owner again. */
        if (sd_bus_message_read(m, "sss", &name, &old_owner, &new_owner) >= 0 && !*new_owner)
                bus_sender_free(userdata);
        return 0;
}

/* A match that could not be installed tells nothing: the entry goes (the next call asks the bus
 * again). */
static int on_match_installed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        if (sd_bus_message_is_method_error(m, NULL))
                bus_sender_free(userdata);
        return 0;
}

static int on_name_checked(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        BusSender *s = userdata;
        int has = 0;

        s->check = sd_bus_slot_unref(s->check);
        if (sd_bus_message_is_method_error(m, NULL) || sd_bus_message_read(m, "b", &has) < 0 || !has)
                bus_sender_free(s);
        return 0;
}

/* Remembers 'creds' for 'name', until the connection goes; on failure the call goes on with its
 * answer, unremembered. Nothing here waits for the bus: the match on the name's NameOwnerChanged
 * and the question whether the name still exists go out together, and the bus answers the
 * question after it installed the match, so a connection gone before the match was in place is
 * told by the answer, and one gone after it by the signal. Either way the entry goes. */
static int bus_sender_add(Manager *mgr, const char *name, sd_bus_creds *creds) {
        char match[256];
        BusSender *s;
        int r;

        if (!mgr->senders_by_name) {
                r = hashmap_new(&string_hash_ops, &mgr->senders_by_name);
                if (r < 0)
                        return r;
        }
        if (snprintf(match, sizeof(match),
                     "type='signal',sender='org.freedesktop.DBus',path='/org/freedesktop/DBus',"
                     "interface='org.freedesktop.DBus',member='NameOwnerChanged',arg0='%s'",
                     name) >= (int) sizeof(match))
                return -ENAMETOOLONG;

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        *s = (BusSender) { .creds = sd_bus_creds_ref(creds) };
        s->name = strdup(name);
        if (!s->name) {
                bus_sender_free(s);
                return -ENOMEM;
        }
        r = hashmap_put(mgr->senders_by_name, s->name, s);
        if (r < 0) {
                bus_sender_free(s);
                return r;
        }
        s->manager = mgr;
        LIST_PREPEND(senders, mgr->senders, s);

        r = sd_bus_add_match_async(mgr->bus, &s->gone, match, on_name_owner_changed, on_match_installed, s);
        if (r >= 0)
                r = sd_bus_call_method_async(mgr->bus, &s->check, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                             "org.freedesktop.DBus", "NameHasOwner", on_name_checked, s, "s", name);
        if (r < 0) {
                bus_sender_free(s);
                return r;
        }
        return 0;
}

int bus_sender_creds(Manager *mgr, sd_bus_message *m, sd_bus_creds **ret) {
        _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *creds = NULL;
        const char *sender = sd_bus_message_get_sender(m);
        BusSender *s;
        int r;

        /* Only a unique name is a connection; a direct connection (no sender) asks its peer. */
        if (sender && sender[0] == ':' && mgr->senders_by_name) {
                s = hashmap_get(mgr->senders_by_name, sender);
                if (s) {
                        *ret = sd_bus_creds_ref(s->creds);
                        return 0;
                }
        }

        r = sd_bus_query_sender_creds(m, SENDER_CREDS_MASK, &creds);
        if (r < 0)
                return r;
        if (sender && sender[0] == ':') {
                r = bus_sender_add(mgr, sender, creds);
                if (r < 0)
                        log_debug_errno(r, "Not remembering the credentials of %s: %m", sender);
        }

        *ret = TAKE_PTR(creds);
        return 0;
}

int bus_sender_uid(Manager *mgr, sd_bus_message *m, uid_t *ret, sd_bus_error *error) {
        _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *creds = NULL;
        int r;

        r = bus_sender_creds(mgr, m, &creds);
        if (r >= 0)
                r = sd_bus_creds_get_euid(creds, ret);
        if (r < 0)
                return sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED, "Could not tell who is calling: %s",
                                         strerror(-r));
        return 0;
}

void bus_senders_free(Manager *mgr) {
        while (mgr->senders)
                bus_sender_free(mgr->senders);
        mgr->senders_by_name = hashmap_free(mgr->senders_by_name);
}

int bus_sender_groups(Manager *mgr, sd_bus_message *m, gid_t **ret_groups, size_t *ret_n, bool *ret_unknown,
                      sd_bus_error *error) {
        _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *creds = NULL;
        const gid_t *groups;
        int r, n = 0;

        *ret_groups = NULL;
        *ret_n = 0;
        *ret_unknown = false;

        r = bus_sender_creds(mgr, m, &creds);
        if (r >= 0)
                r = n = sd_bus_creds_get_supplementary_gids(creds, &groups);
        if (r == -ENODATA) {
                *ret_unknown = true;
                return 0;
        }
        if (r < 0)
                return sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED, "Could not tell the caller's groups: %s",
                                         strerror(-r));
        if (n > 0) {
                *ret_groups = malloc(sizeof(gid_t) * n);
                if (!*ret_groups)
                        return -ENOMEM;
                memcpy(*ret_groups, groups, sizeof(gid_t) * n);
        }
        *ret_n = n;
        return 0;
}
