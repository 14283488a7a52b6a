/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "args.h"
#include "bus.h"
#include "polkit-agent.h"
#include "util.h"

int connect_bus(sd_bus **ret) {
        sd_bus *bus = NULL;
        int r;

        if (arg.address) {
                r = sd_bus_new(&bus);
                if (r >= 0)
                        r = sd_bus_set_address(bus, arg.address);
                if (r >= 0)
                        r = sd_bus_set_bus_client(bus, true);
                if (r >= 0)
                        r = sd_bus_start(bus);
        } else
                r = sd_bus_open_system(&bus);
        if (r >= 0)
                r = sd_bus_set_allow_interactive_authorization(bus, arg.ask_password);
        if (r < 0) {
                sd_bus_unref(bus);
                set_exit_status(EXIT_LOST);
                return log_error("Failed to connect to the bus: %s", strerror(-r)), r;
        }
        *ret = bus;
        return 0;
}

void prepare_authorized_call(void) {
        polkit_agent_open_if_enabled(arg.ask_password);
}

int job_id_from_path(const char *path, char **ret) {
        _cleanup_free_ char *copy = strdup(path);
        char *suffix;

        if (!copy)
                return -ENOMEM;
        suffix = strrchr(copy, '/');
        suffix = suffix ? strstr(suffix, "_u") : NULL;
        if (suffix)
                *suffix = 0;
        return sd_bus_path_decode(copy, JOB_PREFIX, ret);
}

int no_job(const char *id) {
        _cleanup_free_ char *e = esc(id);
        log_error("No job '%s'.", e);
        set_exit_status(EXIT_REFUSED);
        return -ENXIO;
}

int list_jobs(sd_bus *bus, sd_bus_message **ret) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        r = sd_bus_call_method(bus, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "ListJobs", &error, &reply, NULL);
        if (r < 0)
                return bus_fail(&error, r, "Failed to list jobs");
        r = sd_bus_message_enter_container(reply, 'a', "(ossstts)");
        if (r < 0)
                return r;
        *ret = TAKE_PTR(reply);
        return 0;
}

/* Another user's job with this id, if exactly one user has one. */
static int find_any_job(sd_bus *bus, const char *id, char **ret) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ char *found = NULL;
        const char *path, *job_id;
        unsigned n = 0;
        int r;

        r = list_jobs(bus, &reply);
        if (r < 0)
                return r;
        while ((r = sd_bus_message_read(reply, "(ossstts)", &path, &job_id, NULL, NULL, NULL, NULL, NULL)) > 0)
                if (streq(job_id, id) && n++ == 0 && !(found = strdup(path)))
                        return -ENOMEM;
        if (r < 0)
                return r;
        if (n == 0)
                return no_job(id);
        if (n > 1) {
                _cleanup_free_ char *e = esc(id);
                set_exit_status(EXIT_REFUSED);
                return log_error("%u users have a job '%s': give the object path of the one you mean "
                                 "('blockjobctl list --json' shows them).", n, e);
        }
        *ret = TAKE_PTR(found);
        return 0;
}

int job_path(sd_bus *bus, const char *id, char **ret) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *path;
        int r;

        if (id[0] == '/') {
                if (!sd_bus_object_path_is_valid(id)) {
                        _cleanup_free_ char *e = esc(id);
                        return log_usage("'%s' is not an object path.", e);
                }
                *ret = strdup(id);
                return *ret ? 0 : -ENOMEM;
        }
        r = sd_bus_call_method(bus, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "GetJob", &error, &reply, "s", id);
        if (r < 0) {
                if (sd_bus_error_has_name(&error, "org.blockjobd.Jobs1.Error.NoSuchJob"))
                        return find_any_job(bus, id, ret);
                return bus_fail(&error, r, "Failed to find the job");
        }
        r = sd_bus_message_read(reply, "o", &path);
        if (r < 0)
                return r;
        *ret = strdup(path);
        return *ret ? 0 : -ENOMEM;
}
