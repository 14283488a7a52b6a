/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Who is calling: the credentials the bus holds for a caller's connection, asked once per
 * connection rather than once per call.
 *
 * Asking costs a synchronous round trip to the bus (GetConnectionCredentials), more than the call
 * itself; but the answer cannot change for a given unique name: the bus takes a connection's uid
 * and groups from the socket when it connects (SO_PEERCRED, SO_PEERGROUPS), and never hands the
 * same unique name out twice. So the answer is kept until the connection goes (a match on the
 * name's NameOwnerChanged says when, set up without waiting for the bus), and at most one entry
 * exists per connected client. */

#include <stdbool.h>
#include <systemd/sd-bus.h>

#include "manager.h"

/* The credentials of the sender of 'm' (a new reference), with at least its effective uid and,
 * where the bus can tell, its supplementary groups. Negative errno if the bus cannot tell. */
int bus_sender_creds(Manager *mgr, sd_bus_message *m, sd_bus_creds **ret);

/* The sender's effective uid; -EACCES with 'error' set if it cannot be told. */
int bus_sender_uid(Manager *mgr, sd_bus_message *m, uid_t *ret, sd_bus_error *error);

/* The sender's supplementary groups, as the bus knows them (dbus-daemon 1.15.2 or later,
 * dbus-broker: every group of the process), a copy in *ret_groups (NULL for none). A bus that
 * cannot tell (dbus-daemon 1.14, Debian 12's) sets *ret_unknown: whoever acts as the caller then
 * takes the user's groups from the user database, as a login would. AccessDenied with 'error' set
 * if the bus fails to answer. */
int bus_sender_groups(Manager *mgr, sd_bus_message *m, gid_t **ret_groups, size_t *ret_n, bool *ret_unknown,
                      sd_bus_error *error);

/* Forgets every sender (at exit, before the bus goes). */
void bus_senders_free(Manager *mgr);
