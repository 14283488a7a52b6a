/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
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
        sd_bus_track *track;            /* empties when the connection goes */
        LIST_FIELDS(BusSender, senders);
};

static BusSender *bus_sender_free(BusSender *s) {
        if (!s)
                return NULL;
        if (s->manager) {
                LIST_REMOVE(senders, s->manager->senders, s);
                assert_se(hashmap_remove(s->manager->senders_by_name, s->name) == s);
        }
        sd_bus_track_unref(s->track);
        sd_bus_creds_unref(s->creds);
        free(s->name);
        free(s);
        return NULL;
}

static int on_sender_gone(sd_bus_track *track, void *userdata) {
        bus_sender_free(userdata);
        return 0;
}

/* Remembers 'creds' for 'name'; on failure the call goes on with its answer, unremembered. */
static int bus_sender_add(Manager *mgr, const char *name, sd_bus_creds *creds) {
        BusSender *s;
        int r;

        if (!mgr->senders_by_name) {
                r = hashmap_new(&string_hash_ops, &mgr->senders_by_name);
                if (r < 0)
                        return r;
        }

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        *s = (BusSender) { .creds = sd_bus_creds_ref(creds) };
        s->name = strdup(name);
        if (!s->name) {
                bus_sender_free(s);
                return -ENOMEM;
        }
        /* Asks the bus whether the name still exists: one more round trip, once per connection.
         * A name gone already fails here, and is not kept. */
        r = sd_bus_track_new(mgr->bus, &s->track, on_sender_gone, s);
        if (r >= 0)
                r = sd_bus_track_add_name(s->track, name);
        if (r >= 0)
                r = hashmap_put(mgr->senders_by_name, s->name, s);
        if (r < 0) {
                bus_sender_free(s);
                return r;
        }
        s->manager = mgr;
        LIST_PREPEND(senders, mgr->senders, s);
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
