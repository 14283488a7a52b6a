/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* monitor: every job's status changes and I/O errors, one line each, until Ctrl-C. */

#include <signal.h>
#include <systemd/sd-event.h>

#include "args.h"
#include "bus.h"
#include "util.h"
#include "verbs.h"

static int on_monitor_status(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        const char *id, *status;

        if (sd_bus_message_read(m, "ss", &id, &status) < 0)
                return 0;
        if (arg.json) {
                fputs("{\"id\":", stdout);
                json_string(stdout, id);
                fputs(",\"status\":", stdout);
                json_string(stdout, status);
                puts("}");
        } else {
                _cleanup_free_ char *e_id = esc(id), *e_status = esc(status);
                printf("%s %s\n", e_id, e_status);
        }
        fflush(stdout);
        return 0;
}

static int on_monitor_io_error(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_free_ char *id = NULL;
        const char *operation, *action, *message;

        if (sd_bus_message_read(m, "sss", &operation, &action, &message) < 0)
                return 0;
        if (job_id_from_path(sd_bus_message_get_path(m), &id) <= 0)
                return 0;
        if (arg.json) {
                fputs("{\"id\":", stdout);
                json_string(stdout, id);
                fputs(",\"io-error\":{\"operation\":", stdout);
                json_string(stdout, operation);
                fputs(",\"action\":", stdout);
                json_string(stdout, action);
                fputs(",\"message\":", stdout);
                json_string(stdout, message);
                puts("}}");
        } else {
                _cleanup_free_ char *e_id = esc(id), *e_operation = esc(operation), *e_action = esc(action),
                                    *e_message = esc(message);
                printf("%s io-error %s %s: %s\n", e_id, e_operation, e_action, e_message);
        }
        fflush(stdout);
        return 0;
}

static int on_monitor_owner(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        const char *name, *old_owner, *new_owner;

        if (sd_bus_message_read(m, "sss", &name, &old_owner, &new_owner) < 0 || !streq(name, BUS_NAME))
                return 0;
        if (!arg.json)
                fprintf(stderr, "%s\n", *new_owner ? "blockjobd started." : "blockjobd stopped.");
        return 0;
}

int verb_monitor(sd_bus *bus) {
        _cleanup_(sd_event_unrefp) sd_event *event = NULL;
        sigset_t mask;
        int r;

        r = sd_bus_match_signal(bus, NULL, BUS_NAME, NULL, JOB_IFACE, "StatusChanged", on_monitor_status, NULL);
        if (r >= 0)
                r = sd_bus_match_signal(bus, NULL, BUS_NAME, NULL, JOB_IFACE, "IoError", on_monitor_io_error, NULL);
        if (r >= 0)
                r = sd_bus_add_match(bus, NULL,
                                     "type='signal',sender='org.freedesktop.DBus',path='/org/freedesktop/DBus',"
                                     "interface='org.freedesktop.DBus',member='NameOwnerChanged',arg0='" BUS_NAME "'",
                                     on_monitor_owner, NULL);
        if (r < 0) {
                set_exit_status(EXIT_LOST);
                return log_error("Failed to watch jobs: %s", strerror(-r)), r;
        }

        sigemptyset(&mask);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGTERM);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        r = sd_event_default(&event);
        if (r < 0)
                return r;
        (void) sd_event_add_signal(event, NULL, SIGINT, NULL, NULL);
        (void) sd_event_add_signal(event, NULL, SIGTERM, NULL, NULL);
        r = sd_bus_attach_event(bus, event, 0);
        if (r < 0)
                return r;
        r = sd_bus_set_exit_on_disconnect(bus, true);
        if (r < 0)
                return r;
        if (!arg.json)
                fprintf(stderr, "Monitoring job status changes, press Ctrl-C to stop.\n");
        r = sd_event_loop(event);
        (void) sd_bus_detach_event(bus);
        if (r < 0) {
                set_exit_status(EXIT_LOST);
                return log_error("Lost the bus: %s", strerror(-r)), r;
        }
        return 0;
}
