/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The daemon's change signals, queued and sent after the method reply that caused them, as
 * systemd does with its units' D-Bus queue (bus_unit_send_change_signal()): a verb answers with
 * one message to its caller, and the StatusChanged, PropertiesChanged, InterfacesAdded and
 * InterfacesRemoved it caused follow from a one-shot defer source, in the order the changes
 * happened. Otherwise dbus-daemon routes every signal before the reply reaches the caller.
 *
 *   - one FIFO per daemon; nothing is reordered;
 *   - signals whose content is the event itself (StatusChanged, IoError, InterfacesAdded,
 *     InterfacesRemoved) are built when queued, so that a job that goes away meanwhile is still
 *     announced with the right data;
 *   - PropertiesChanged names the properties only: their values are read when it is sent (the
 *     current values, as D-Bus allows), and only if the object is still there (the queue holds a
 *     reference to the job). Properties of one object that are queued with no other signal of
 *     that object between them go out as one PropertiesChanged. */

#include <stdbool.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "job.h"

typedef struct BusSignals BusSignals;
typedef struct BusSignal BusSignal;

int bus_signals_new(sd_event *event, sd_bus *bus, BusSignals **ret);
/* Drops whatever is still queued (see bus_signals_flush()). */
BusSignals *bus_signals_free(BusSignals *q);

/* Whether anything waits: then a signal that could go at once is queued too, behind it. */
bool bus_signals_pending(const BusSignals *q);

/* Queues a signal built already (takes 'm'). 'j' is the job whose object sends it, NULL for the
 * manager; 'last' (may be NULL) is where that object remembers its last queued signal. */
int bus_signals_push_message(BusSignals *q, Job *j, BusSignal **last, sd_bus_message *m);

/* Queues PropertiesChanged of 'names' (static strings, NULL-terminated) on 'interface' at 'path',
 * for the object of job 'j' (NULL: an object that lives as long as the daemon), merged into the
 * object's last queued signal ('*last') if that is PropertiesChanged of the same interface. */
int bus_signals_push_properties(BusSignals *q, Job *j, BusSignal **last, const char *path, const char *interface,
                                char *const *names);

/* The manager object's 'last', for its PropertiesChanged. */
BusSignal **bus_signals_manager_last(BusSignals *q);

/* The object goes away: its '*last' is no longer to be updated. Its queued signals stay. */
void bus_signals_forget(BusSignal **last);

/* Sends everything queued, now (the defer source does; so does the loop's exit). */
void bus_signals_flush(BusSignals *q);
