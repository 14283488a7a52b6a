/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* A driver on the real executor, in a temporary directory holding source.img and target.img:
 * every status of the job called f->job is written as "<status> " (and a concluded job's error
 * in parentheses), every progress change is sampled with its time. */

#include <glib.h>

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
