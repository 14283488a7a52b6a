/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The daemon's state: event loop, bus connection, worker pool and the job registry, and the rules
 * for when it may exit (idle, or SIGTERM once every job is cancelled). */

#include <stdbool.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "job-factory.h"
#include "job.h"
#include "worker-pool.h"

#define BUS_NAME "org.blockjobd.Jobs1"
#define BUS_MANAGER_PATH "/org/blockjobd/Jobs1"
#define BUS_JOB_PREFIX "/org/blockjobd/Jobs1/job"
#define BUS_MANAGER_INTERFACE "org.blockjobd.Jobs1.Manager"
#define BUS_JOB_INTERFACE "org.blockjobd.Jobs1.Job"

#define IDLE_TIMEOUT_DEFAULT_USEC (30 * UINT64_C(1000000))

struct BusSender;
struct BusSignals;
struct Hashmap;
struct Inhibitor;
struct PendingAuth;
struct Persist;
struct Reader;

typedef struct Manager {
        sd_event *event;
        sd_bus *bus;
        WorkerPool *pool;
        JobRegistry *registry;
        JobFactory *factory;
        struct Inhibitor *inhibitor;    /* logind's lock on sleep and shutdown while jobs run */
        struct BusSignals *signals;     /* change signals waiting for the replies that caused them */
        struct Persist *persist;        /* the job records (persist.h); NULL: no state directory */

        uint64_t idle_timeout_usec;     /* 0: never exit on idle */
        unsigned n_bus_jobs;            /* job objects on the bus */
        unsigned n_bus_jobs_by_status[_JOB_STATUS_MAX];   /* the same, by the status last announced */
        unsigned n_requests;            /* job creations under way (files being opened) */
        unsigned next_txn;              /* for naming grouped transactions */
        struct PendingAuth *pending_auths;      /* calls waiting for polkit */
        struct Reader *readers;                 /* who may read other users' paths */
        struct BusSender *senders;              /* callers' credentials, per connection */
        struct Hashmap *senders_by_name;

        bool shutting_down;             /* SIGTERM: cancel everything (or, with a state directory,
                                         * stop every job where it is), then exit */
        unsigned n_stopped;             /* jobs job_stop() has stopped */
        sd_event_source *release_source;/* shutting down: letting go of the stopped jobs, whose
                                         * records stay (persist.h) */
        bool name_released;             /* idle exit: the name is being given back */
        bool name_waits_for_restore;    /* recorded jobs are being built again (persist.h) */
} Manager;

/* 'state_dir' NULL: no persistence (jobs live as long as the process). */
int manager_new(unsigned n_threads, uint64_t idle_timeout_usec, const char *state_dir, Manager **ret);
Manager *manager_free(Manager *m);

/* Connects to the system bus (DBUS_SYSTEM_BUS_ADDRESS if set), exports the objects, brings back
 * the recorded jobs, takes the name. */
int manager_connect(Manager *m);
/* Runs until an idle exit or a shutdown completes. */
int manager_run(Manager *m);

/* The recorded jobs that continue are back (or failed): the name is taken now. */
void manager_jobs_restored(Manager *m);

/* No job, no creation in flight, no call waiting for polkit, no record being written. */
bool manager_is_idle(const Manager *m);
/* After anything that may end a shutdown or change the job counts: exit if due, tell systemd. */
void manager_changed(Manager *m);
