/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The commands. Each returns the exit status (>= 0), or a negative errno once it said why. */

#include <systemd/sd-bus.h>

int verb_list(sd_bus *bus);             /* show.c */
int verb_status(sd_bus *bus);
int verb_create(sd_bus *bus);           /* create.c */
int verb_job(sd_bus *bus);              /* job-verbs.c: pause ... set-speed */
int verb_wait(sd_bus *bus);
int verb_monitor(sd_bus *bus);          /* monitor.c */
int verb_bitmap(sd_bus *bus);           /* bitmap.c: bitmap add ... list */
