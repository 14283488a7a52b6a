/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The Manager object, /org/blockjobd/Jobs1, interface org.blockjobd.Jobs1.Manager: creating jobs
 * (their images are opened on the worker pool, the method replies once the job exists), listing
 * and finding them. */

#include "manager.h"

int bus_manager_register(Manager *m);
