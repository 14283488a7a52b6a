/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bus-job.h"
#include "bus-polkit.h"
#include "bus-read-access.h"
#include "bus-sender.h"
#include "list.h"
#include "log.h"
#include "macro.h"
#include "manager.h"

#define MANAGE_OTHER_USERS "org.blockjobd.job.manage-other-users"
/* How long polkit's answer (and the caller's uid) is trusted for a connection. */
#define READER_KEEP_USEC (5 * UINT64_C(1000000))
/* Messages held back for one connection while polkit thinks; more are answered as they come. */
#define READER_WAITING_MAX 64U

/* What is known about one caller connection. */
struct Reader {
        Manager *manager;
        char *sender;
        uid_t uid;
        bool answered;                  /* polkit was asked and answered */
        bool may_read_others;           /* ... yes */
        uint64_t expires_usec;

        sd_bus_slot *slot;              /* the question on its way */
        sd_bus_message *waiting[READER_WAITING_MAX];
        size_t n_waiting;

        LIST_FIELDS(struct Reader, readers);
};

typedef struct Reader Reader;

static uint64_t now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}

static Reader *reader_free(Reader *r) {
        if (!r)
                return NULL;
        LIST_REMOVE(readers, r->manager->readers, r);
        sd_bus_slot_unref(r->slot);
        for (size_t i = 0; i < r->n_waiting; i++)
                sd_bus_message_unref(r->waiting[i]);
        free(r->sender);
        free(r);
        return NULL;
}

static Reader *reader_find(Manager *m, const char *sender) {
        Reader *r;

        LIST_FOREACH(readers, r, m->readers)
                if (strcmp(r->sender, sender) == 0)
                        return r;
        return NULL;
}

static void readers_prune(Manager *m, uint64_t now) {
        Reader *r = m->readers;

        while (r) {
                Reader *next = r->readers_next;
                if (!r->slot && r->expires_usec <= now)
                        reader_free(r);
                r = next;
        }
}

static int reader_new(Manager *m, sd_bus_message *message, uint64_t now, Reader **ret) {
        Reader *r;
        uid_t uid;
        int k;

        k = bus_sender_uid(m, message, &uid, NULL);
        if (k < 0)
                return k;

        r = calloc(1, sizeof(*r));
        if (!r)
                return -ENOMEM;
        r->sender = strdup(sd_bus_message_get_sender(message));
        if (!r->sender) {
                free(r);
                return -ENOMEM;
        }
        r->manager = m;
        r->uid = uid;
        r->expires_usec = now + READER_KEEP_USEC;
        LIST_PREPEND(readers, m->readers, r);
        *ret = r;
        return 0;
}

/* Is any job not 'uid's? */
static bool has_other_users_jobs(Manager *m, uid_t uid) {
        for (Job *j = job_registry_first(m->registry); j; j = job_registry_next(j)) {
                BusJob *bj = job_get_userdata(j);
                if (bj && bus_job_owner(bj) != uid)
                        return true;
        }
        return false;
}

/* The properties that only the owner (and whoever may manage others' jobs) reads in full. */
static bool is_private_property(const char *property) {
        return property && (strcmp(property, "Source") == 0 || strcmp(property, "Target") == 0 ||
                            strcmp(property, "Error") == 0 || strcmp(property, "IoErrorMessage") == 0);
}

/* Does this call read what is private to a job that is not 'uid's? */
static bool reads_other_users_details(Manager *m, sd_bus_message *message, uid_t uid) {
        const char *path = sd_bus_message_get_path(message);

        if (sd_bus_message_is_method_call(message, "org.freedesktop.DBus.ObjectManager", "GetManagedObjects") ||
            sd_bus_message_is_method_call(message, BUS_MANAGER_INTERFACE, "ListJobs"))
                return has_other_users_jobs(m, uid);

        if (sd_bus_message_is_method_call(message, "org.freedesktop.DBus.Properties", "Get")) {
                const char *interface = NULL, *property = NULL;

                (void) sd_bus_message_read(message, "ss", &interface, &property);
                (void) sd_bus_message_rewind(message, true);
                if (!is_private_property(property))
                        return false;
        } else if (!sd_bus_message_is_method_call(message, "org.freedesktop.DBus.Properties", "GetAll"))
                return false;

        BusJob *bj = path ? bus_job_find_by_path(m, path) : NULL;
        return bj && bus_job_owner(bj) != uid;
}

static int on_polkit_answer(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        Reader *r = userdata;
        bool challenge;
        int k;

        r->slot = sd_bus_slot_unref(r->slot);
        k = bus_polkit_reply(reply, MANAGE_OTHER_USERS, &challenge, &error);
        r->answered = true;
        r->may_read_others = k > 0;
        r->expires_usec = now_usec() + READER_KEEP_USEC;

        /* Back into the queue: dispatched now, with the answer at hand. */
        for (size_t i = 0; i < r->n_waiting; i++) {
                k = sd_bus_enqueue_for_read(r->manager->bus, r->waiting[i]);
                if (k < 0)
                        log_warning_errno(k, "Failed to requeue a call from %s: %m", r->sender);
                r->waiting[i] = sd_bus_message_unref(r->waiting[i]);
        }
        r->n_waiting = 0;
        return 0;
}

static int read_filter(sd_bus_message *message, void *userdata, sd_bus_error *ret_error) {
        Manager *m = userdata;
        const char *sender = sd_bus_message_get_sender(message);
        uint64_t now;
        Reader *r;
        int k;

        if (!sender || !sd_bus_message_is_method_call(message, NULL, NULL))
                return 0;
        if (!sd_bus_message_is_method_call(message, "org.freedesktop.DBus.Properties", NULL) &&
            !sd_bus_message_is_method_call(message, "org.freedesktop.DBus.ObjectManager", "GetManagedObjects") &&
            !sd_bus_message_is_method_call(message, BUS_MANAGER_INTERFACE, "ListJobs"))
                return 0;

        now = now_usec();
        readers_prune(m, now);
        r = reader_find(m, sender);
        if (!r && reader_new(m, message, now, &r) < 0)
                return 0;               /* unknown: the getter shows nothing */

        if (r->uid == 0 || (r->answered && !r->slot) || !reads_other_users_details(m, message, r->uid))
                return 0;

        /* Hold the call until polkit answers; too many held, and it goes on as it is. */
        if (r->n_waiting >= READER_WAITING_MAX)
                return 0;
        if (!r->slot) {
                BusAuthCheck check = { .action = MANAGE_OTHER_USERS };
                k = bus_polkit_call(m->bus, sender, &check, false, on_polkit_answer, r, &r->slot);
                if (k < 0) {
                        log_warning_errno(k, "Could not ask polkit about %s: %m", sender);
                        r->answered = true;
                        return 0;
                }
        }
        r->waiting[r->n_waiting++] = sd_bus_message_ref(message);
        return 1;
}

int bus_read_access_install(Manager *m) {
        return sd_bus_add_filter(m->bus, NULL, read_filter, m);
}

void bus_read_access_free(Manager *m) {
        while (m->readers)
                reader_free(m->readers);
}

bool bus_read_access_private(Manager *m, uid_t owner, sd_bus_message *reply) {
        sd_bus_message *message = sd_bus_get_current_message(m->bus);
        const char *sender = message ? sd_bus_message_get_sender(message) : NULL;
        uint8_t type;
        Reader *r;

        /* A signal (PropertiesChanged, InterfacesAdded) is for everyone, even when it is sent
         * while someone's call is being dispatched: it gets what everyone may read. */
        if (!reply || sd_bus_message_get_type(reply, &type) < 0 || type != SD_BUS_MESSAGE_METHOD_RETURN)
                return false;
        r = sender ? reader_find(m, sender) : NULL;
        if (!r)
                return false;
        return r->uid == 0 || r->uid == owner || (r->answered && r->may_read_others);
}
