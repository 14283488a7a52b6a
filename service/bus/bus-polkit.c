/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bus-errors.h"
#include "bus-polkit.h"
#include "list.h"
#include "log.h"
#include "macro.h"
#include "manager.h"

#define POLKIT_NAME "org.freedesktop.PolicyKit1"
#define POLKIT_PATH "/org/freedesktop/PolicyKit1/Authority"
#define POLKIT_INTERFACE "org.freedesktop.PolicyKit1.Authority"

/* CheckAuthorization's flags. */
#define POLKIT_ALLOW_USER_INTERACTION 1U

/* An authentication agent may wait for a person to type a password. */
#define POLKIT_INTERACTIVE_TIMEOUT_USEC (10 * 60 * UINT64_C(1000000))

struct PendingAuth {
        Manager *manager;
        sd_bus_message *message;
        sd_bus_slot *slot;
        BusAuthCheck *checks;           /* strings duplicated */
        size_t n_checks;
        size_t next;

        BusAuthorizedFunc func;
        void *userdata;
        void (*free_userdata)(void *);

        LIST_FIELDS(struct PendingAuth, pending);
};

typedef struct PendingAuth PendingAuth;

static void checks_free(BusAuthCheck *checks, size_t n) {
        for (size_t i = 0; checks && i < n; i++) {
                free((char *) checks[i].action);
                for (size_t k = 0; k < ELEMENTSOF(checks[i].details); k++)
                        free((char *) checks[i].details[k]);
        }
        free(checks);
}

static BusAuthCheck *checks_copy(const BusAuthCheck *checks, size_t n) {
        BusAuthCheck *c = calloc(MAX(n, (size_t) 1), sizeof(BusAuthCheck));

        if (!c)
                return NULL;
        for (size_t i = 0; i < n; i++) {
                c[i].action = strdup(checks[i].action);
                if (!c[i].action)
                        goto fail;
                for (size_t k = 0; k < ELEMENTSOF(checks[i].details); k++)
                        if (checks[i].details[k] && !(c[i].details[k] = strdup(checks[i].details[k])))
                                goto fail;
        }
        return c;
fail:
        checks_free(c, n);
        return NULL;
}

static void pending_auth_free(PendingAuth *p) {
        if (!p)
                return;
        if (p->manager)
                LIST_REMOVE(pending, p->manager->pending_auths, p);
        sd_bus_slot_unref(p->slot);
        sd_bus_message_unref(p->message);
        checks_free(p->checks, p->n_checks);
        if (p->userdata && p->free_userdata)
                p->free_userdata(p->userdata);
        free(p);
}

static int call_check(PendingAuth *p);

/* Sends the reply (or error) for the call; the pending check is done either way. */
static void pending_auth_finish(PendingAuth *p, const sd_bus_error *error, int r) {
        Manager *mgr = p->manager;

        bus_reply_error(p->message, error, r);
        pending_auth_free(p);
        /* The last thing that kept the daemon busy may have been this call. */
        manager_changed(mgr);
}

int bus_polkit_reply(sd_bus_message *reply, const char *action, bool *ret_challenge, sd_bus_error *error) {
        int authorized, challenge, r;

        if (sd_bus_message_is_method_error(reply, NULL)) {
                const sd_bus_error *e = sd_bus_message_get_error(reply);
                log_warning("Could not check authorization for %s with polkit: %s", action,
                            e && e->message ? e->message : "unknown error");
                return sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
                                         "Authorization could not be checked: polkit is not available (%s)",
                                         e && e->message ? e->message : "no answer");
        }

        r = sd_bus_message_enter_container(reply, 'r', "bba{ss}");
        if (r >= 0)
                r = sd_bus_message_read(reply, "bb", &authorized, &challenge);
        if (r < 0)
                return sd_bus_error_set(error, SD_BUS_ERROR_ACCESS_DENIED,
                                        "Authorization could not be checked: polkit gave a malformed answer");
        *ret_challenge = challenge;
        return !!authorized;
}

static int on_check_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        PendingAuth *p = userdata;
        const BusAuthCheck *check = &p->checks[p->next];
        bool challenge = false;
        int authorized, r;

        p->slot = sd_bus_slot_unref(p->slot);

        authorized = bus_polkit_reply(reply, check->action, &challenge, &error);
        if (authorized < 0) {
                pending_auth_finish(p, &error, authorized);
                return 0;
        }

        if (!authorized) {
                if (challenge && !sd_bus_message_get_allow_interactive_authorization(p->message))
                        r = sd_bus_error_setf(&error, SD_BUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED,
                                              "Interactive authentication is required for %s", check->action);
                else
                        r = sd_bus_error_setf(&error, SD_BUS_ERROR_ACCESS_DENIED, "Not authorized for %s",
                                              check->action);
                pending_auth_finish(p, &error, r);
                return 0;
        }

        /* This one passed; on to the next, or to the work. */
        p->next++;
        if (p->next < p->n_checks) {
                r = call_check(p);
                if (r < 0)
                        pending_auth_finish(p, NULL, r);
                return 0;
        }

        void *data = TAKE_PTR(p->userdata);
        r = p->func(p->message, data, &error);
        pending_auth_finish(p, &error, r);
        return 0;
}

static int call_check(PendingAuth *p) {
        return bus_polkit_call(p->manager->bus, sd_bus_message_get_sender(p->message), &p->checks[p->next],
                               sd_bus_message_get_allow_interactive_authorization(p->message), on_check_reply, p,
                               &p->slot);
}

int bus_polkit_call(sd_bus *bus, const char *sender, const BusAuthCheck *check, bool interactive,
                    sd_bus_message_handler_t callback, void *userdata, sd_bus_slot **ret_slot) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL;
        int r;

        r = sd_bus_message_new_method_call(bus, &call, POLKIT_NAME, POLKIT_PATH, POLKIT_INTERFACE,
                                           "CheckAuthorization");
        if (r < 0)
                return r;
        /* The subject: the caller's connection, which polkit resolves itself. */
        r = sd_bus_message_append(call, "(sa{sv})s", "system-bus-name", 1, "name", "s", sender, check->action);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(call, 'a', "{ss}");
        if (r < 0)
                return r;
        for (size_t k = 0; k + 1 < ELEMENTSOF(check->details) && check->details[k]; k += 2) {
                r = sd_bus_message_append(call, "{ss}", check->details[k], strempty(check->details[k + 1]));
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(call);
        if (r < 0)
                return r;
        r = sd_bus_message_append(call, "us", interactive ? POLKIT_ALLOW_USER_INTERACTION : 0, "");
        if (r < 0)
                return r;

        return sd_bus_call_async(bus, ret_slot, call, callback, userdata,
                                 interactive ? POLKIT_INTERACTIVE_TIMEOUT_USEC : 0);
}

int bus_authorize(Manager *mgr, sd_bus_message *m, uid_t uid, const BusAuthCheck *checks, size_t n_checks,
                  BusAuthorizedFunc func, void *userdata, void (*free_userdata)(void *), sd_bus_error *error) {
        PendingAuth *p;
        int r;

        assert(n_checks <= BUS_AUTH_CHECKS_MAX);

        /* Root may do anything, without a word to polkit. */
        if (uid == 0 || n_checks == 0)
                return func(m, userdata, error);

        p = calloc(1, sizeof(*p));
        if (!p) {
                if (free_userdata)
                        free_userdata(userdata);
                return -ENOMEM;
        }
        *p = (PendingAuth) {
                .message = sd_bus_message_ref(m),
                .checks = checks_copy(checks, n_checks),
                .n_checks = n_checks,
                .func = func,
                .userdata = userdata,
                .free_userdata = free_userdata,
        };
        if (!p->checks) {
                pending_auth_free(p);
                return -ENOMEM;
        }
        p->manager = mgr;
        LIST_PREPEND(pending, mgr->pending_auths, p);

        r = call_check(p);
        if (r < 0) {
                pending_auth_free(p);
                return sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
                                         "Authorization could not be checked: %s", strerror(-r));
        }
        return 1;
}

void bus_authorize_cancel_all(Manager *mgr) {
        while (mgr->pending_auths)
                pending_auth_free(mgr->pending_auths);
}
