/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Authorization: the one way every method that creates or acts on a job is checked.
 *
 * A method handler describes the checks its call needs (polkit actions, each with its details)
 * and what to do once they all pass; bus_authorize() decides. Root (the sender's effective uid,
 * read from the bus, never from an argument) passes without asking polkit. Anyone else is asked
 * about, one action after the other, with CheckAuthorization for the sender's bus name (the
 * "system-bus-name" subject, so that polkit itself looks up who is calling). The checks are
 * asynchronous: the daemon goes on serving while polkit, or an authentication agent, thinks;
 * the method is answered when the last check is in.
 *
 * Answers: a denial is org.freedesktop.DBus.Error.AccessDenied; a check that would need the
 * caller to authenticate, on a call without the ALLOW_INTERACTIVE_AUTHORIZATION flag, is
 * org.freedesktop.DBus.Error.InteractiveAuthorizationRequired (with the flag, polkit asks the
 * caller's authentication agent). When polkit cannot be reached, callers other than root are
 * denied, with a message saying so. */

#include <stdbool.h>
#include <sys/types.h>
#include <systemd/sd-bus.h>

typedef struct Manager Manager;

/* A transaction's 256 creations, each with bitmap.modify as well when it writes a bitmap; or a
 * verb and other-users. */
#define BUS_AUTH_CHECKS_MAX 512U
#define BUS_AUTH_DETAILS_MAX 9U

typedef struct BusAuthCheck {
        const char *action;
        /* key, value pairs; unused ones NULL */
        const char *details[BUS_AUTH_DETAILS_MAX * 2];
} BusAuthCheck;

/* What to do once authorized: like a method handler, it returns a negative errno (with 'error'
 * set or not) for an error reply, or >= 0 once it has replied or will. It owns 'userdata'. */
typedef int (*BusAuthorizedFunc)(sd_bus_message *m, void *userdata, sd_bus_error *error);

/* Checks 'checks' for the sender of 'm' (whose uid, from bus_sender_uid() of bus-sender.h, is 'uid'), then calls
 * 'func'. Returns like a method handler. If 'func' is never called (an error, a denial),
 * 'free_userdata' gets 'userdata'. The checks are copied. */
int bus_authorize(Manager *mgr, sd_bus_message *m, uid_t uid, const BusAuthCheck *checks, size_t n_checks,
                  BusAuthorizedFunc func, void *userdata, void (*free_userdata)(void *), sd_bus_error *error);

/* The parts, for a check that answers no method call (bus-read-access.c): one CheckAuthorization
 * of 'check' for 'sender', asynchronously; and its answer: 1 authorized, 0 not (*ret_challenge:
 * the caller could authenticate), or a negative errno with 'error' set when polkit could not
 * answer. */
int bus_polkit_call(sd_bus *bus, const char *sender, const BusAuthCheck *check, bool interactive,
                    sd_bus_message_handler_t callback, void *userdata, sd_bus_slot **ret_slot);
int bus_polkit_reply(sd_bus_message *reply, const char *action, bool *ret_challenge, sd_bus_error *error);

/* Drops every check still waiting for polkit (at exit): their callers get no answer. */
void bus_authorize_cancel_all(Manager *mgr);
