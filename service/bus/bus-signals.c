/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bus-signals.h"
#include "log.h"
#include "macro.h"

/* More than any interface of ours has properties that change. */
#define PROPERTIES_MAX 16U

struct BusSignal {
        BusSignal *next;
        Job *job;                       /* a reference; NULL: the manager */
        BusSignal **last;               /* the object's pointer to us while we are its last */
        sd_bus_message *message;        /* built already; NULL: PropertiesChanged of the below */
        char *path;
        const char *interface;          /* static */
        const char *names[PROPERTIES_MAX + 1];
        size_t n_names;
};

struct BusSignals {
        sd_event *event;
        sd_bus *bus;
        sd_event_source *defer;
        sd_event_source *exit;
        BusSignal *head, *tail;
        BusSignal *manager_last;        /* the manager object's last queued signal */
};

static BusSignal *bus_signal_free(BusSignal *s) {
        if (!s)
                return NULL;
        if (s->last && *s->last == s)
                *s->last = NULL;
        sd_bus_message_unref(s->message);
        job_unref(s->job);
        free(s->path);
        free(s);
        return NULL;
}

static int on_defer(sd_event_source *source, void *userdata) {
        bus_signals_flush(userdata);
        return 0;
}

/* The loop ends (shutdown, idle exit) right after the last job went: its "null" and
 * InterfacesRemoved still go out, before the bus is flushed and closed. */
static int on_loop_exit(sd_event_source *source, void *userdata) {
        bus_signals_flush(userdata);
        return 0;
}

int bus_signals_new(sd_event *event, sd_bus *bus, BusSignals **ret) {
        BusSignals *q;
        int r;

        q = calloc(1, sizeof(*q));
        if (!q)
                return -ENOMEM;
        q->event = sd_event_ref(event);
        q->bus = bus;
        r = sd_event_add_defer(event, &q->defer, on_defer, q);
        if (r < 0) {
                bus_signals_free(q);
                return r;
        }
        (void) sd_event_source_set_description(q->defer, "bus-signals");
        /* Ahead of the bus and of everything else: the signals of one dispatch are out before
         * the next call is read, so a reply that reads state (GetAll) still follows every signal
         * of the changes it shows, as clients that match signals by serial expect. */
        r = sd_event_source_set_priority(q->defer, SD_EVENT_PRIORITY_IMPORTANT);
        if (r < 0) {
                bus_signals_free(q);
                return r;
        }
        r = sd_event_add_exit(event, &q->exit, on_loop_exit, q);
        if (r < 0) {
                bus_signals_free(q);
                return r;
        }
        /* Enabled (one shot) when the queue stops being empty. */
        (void) sd_event_source_set_enabled(q->defer, SD_EVENT_OFF);
        *ret = q;
        return 0;
}

BusSignals *bus_signals_free(BusSignals *q) {
        if (!q)
                return NULL;
        while (q->head) {
                BusSignal *s = q->head;
                q->head = s->next;
                bus_signal_free(s);
        }
        sd_event_source_disable_unref(q->defer);
        sd_event_source_disable_unref(q->exit);
        sd_event_unref(q->event);
        free(q);
        return NULL;
}

BusSignal **bus_signals_manager_last(BusSignals *q) {
        return &q->manager_last;
}

bool bus_signals_pending(const BusSignals *q) {
        return q && q->head;
}

static void bus_signals_append(BusSignals *q, BusSignal *s) {
        if (!q->head) {
                q->head = s;
                (void) sd_event_source_set_enabled(q->defer, SD_EVENT_ONESHOT);
        } else
                q->tail->next = s;
        q->tail = s;
        if (s->last) {
                /* The object's previous last signal is no longer the last. */
                if (*s->last && (*s->last)->last == s->last)
                        (*s->last)->last = NULL;
                *s->last = s;
        }
}

static BusSignal *bus_signal_new(Job *j, BusSignal **last, const char *path) {
        BusSignal *s;

        s = calloc(1, sizeof(*s));
        if (!s)
                return NULL;
        if (path) {
                s->path = strdup(path);
                if (!s->path) {
                        free(s);
                        return NULL;
                }
        }
        s->job = j ? job_ref(j) : NULL;
        s->last = last;
        return s;
}

int bus_signals_push_message(BusSignals *q, Job *j, BusSignal **last, sd_bus_message *m) {
        BusSignal *s;

        s = bus_signal_new(j, last, NULL);
        if (!s) {
                sd_bus_message_unref(m);
                return -ENOMEM;
        }
        s->message = m;
        bus_signals_append(q, s);
        return 0;
}

static void bus_signal_add_names(BusSignal *s, char *const *names) {
        for (; *names; names++) {
                size_t i;

                for (i = 0; i < s->n_names; i++)
                        if (strcmp(s->names[i], *names) == 0)
                                break;
                if (i < s->n_names)
                        continue;
                assert(s->n_names < PROPERTIES_MAX);
                s->names[s->n_names++] = *names;
        }
}

int bus_signals_push_properties(BusSignals *q, Job *j, BusSignal **last, const char *path, const char *interface,
                                char *const *names) {
        BusSignal *s;

        if (!names[0])
                return 0;

        /* Nothing else of this object between: one PropertiesChanged says it all, read later. */
        if (last && *last && !(*last)->message && strcmp((*last)->interface, interface) == 0) {
                bus_signal_add_names(*last, names);
                return 0;
        }

        s = bus_signal_new(j, last, path);
        if (!s)
                return -ENOMEM;
        s->interface = interface;
        bus_signal_add_names(s, names);
        bus_signals_append(q, s);
        return 0;
}

void bus_signals_forget(BusSignal **last) {
        if (*last && (*last)->last == last)
                (*last)->last = NULL;
        *last = NULL;
}

static void bus_signal_send(BusSignals *q, BusSignal *s) {
        int r;

        if (s->message) {
                r = sd_bus_send(q->bus, s->message, NULL);
                if (r < 0 && r != -ENOTCONN)
                        log_warning_errno(r, "Failed to send %s on %s: %m", sd_bus_message_get_member(s->message) ?: "?",
                                          sd_bus_message_get_path(s->message) ?: "?");
                return;
        }

        /* A job's object that went away has nothing left to change; the values are read now. */
        if (s->job && !job_get_userdata(s->job))
                return;
        s->names[s->n_names] = NULL;
        r = sd_bus_emit_properties_changed_strv(q->bus, s->path, s->interface, (char **) s->names);
        if (r < 0 && r != -ENOTCONN)
                log_warning_errno(r, "Failed to send PropertiesChanged on %s: %m", s->path);
}

void bus_signals_flush(BusSignals *q) {
        if (!q)
                return;
        (void) sd_event_source_set_enabled(q->defer, SD_EVENT_OFF);
        /* Signals queued while sending (none today) go out in this round too, behind the rest. */
        while (q->head) {
                BusSignal *s = q->head;

                bus_signal_send(q, s);
                q->head = s->next;
                if (!q->head)
                        q->tail = NULL;
                bus_signal_free(s);
        }
}
