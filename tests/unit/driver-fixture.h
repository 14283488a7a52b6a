/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* A driver on the real executor, in a temporary directory holding source.img and target.img:
 * every status of the job called f->job is written as "<status> " (and a concluded job's error
 * in parentheses), every progress change is sampled with its time. */

#include <glib.h>

#include "driver-open.h"
#include "event-loop.h"

typedef struct Fixture {
        TestLoop loop;
        char *dir;
        char *source;
        char *target;
        GString *events;
        GArray *samples;                /* ProgressSample */
        Job *job;
} Fixture;

typedef struct ProgressSample {
        int64_t usec;
        uint64_t bytes;
} ProgressSample;

void driver_fixture_setup(Fixture *f, gconstpointer data);
void driver_fixture_teardown(Fixture *f, gconstpointer data);

/* A mirror opened as driver-open.h opens it, started as job "m". */
/* Opens a backup ("b") and starts it. */
Job *driver_fixture_start_backup(Fixture *f, const TestBackupParams *bp, uint64_t speed, bool auto_finalize);
Job *driver_fixture_start_mirror(Fixture *f, const TestMirrorParams *mp, bool auto_dismiss);
/* Iterates the loop until the mirror has made 'n' passes in all. */
void driver_fixture_wait_for_passes(Fixture *f, Mirror *m, uint64_t n);
