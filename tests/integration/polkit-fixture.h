/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The real polkitd on the test's private system bus, with the project's actions and the test's
 * rules installed system-wide (/usr/share/polkit-1/actions, /etc/polkit-1/rules.d: polkitd reads
 * nothing else) for the duration of one test, and removed afterwards, also when the test fails or
 * the run is stopped (signal handlers do it then).
 *
 * Since those files are shared by every polkit test on the machine, each test holds an exclusive
 * flock on /run/lock/blockjobd-polkit-tests.lock (/tmp when /run/lock is missing) from its setup
 * to its teardown: runs from different checkouts take turns instead of reading each other's
 * rules. Needs root; polkit_fixture_usable() skips the test elsewhere. */

#include <stdbool.h>
#include <sys/types.h>

#include "bus-fixture.h"

#define POLKITD "/usr/lib/polkit-1/polkitd"

typedef struct PolkitFixture {
        BusFixture bus;
        GSubprocess *polkitd;
        char *nobody_dir;               /* a directory nobody owns (0755), for nobody's files */

        GDBusConnection *monitor;       /* polkit_fixture_watch_checks() */
        guint monitor_filter;
} PolkitFixture;

/* Root, and polkitd installed: what the fixture needs. Says nothing, skips nothing. */
bool polkit_fixture_available(void);

/* Call once in main(), before g_test_run(): removes what the test installed, and kills polkitd,
 * on SIGABRT, SIGTRAP, SIGALRM, SIGTERM, SIGINT and SIGSEGV; 'extra' (may be NULL) runs first,
 * in the signal handler (only async-signal-safe calls). */
void polkit_fixture_install_handlers(void (*extra)(void));

/* Removes, in its turn, what a test killed before its teardown left installed (every test's
 * setup does that too). */
void polkit_fixture_remove_leftovers(void);

/* Takes the lock, installs the actions, starts the bus and the daemon with these arguments
 * (NULL: --idle-timeout=0), makes nobody's directory. Does nothing where the fixture is not
 * available (pf->bus.dir stays NULL). */
void polkit_fixture_setup(PolkitFixture *pf, const char *daemon_args);
/* The bus fixture's teardown, polkitd stopped, the installed files removed, the lock released. */
void polkit_fixture_teardown(PolkitFixture *pf);
/* Skips the test (and returns false) where root, polkitd or setpriv are missing. */
bool polkit_fixture_usable(PolkitFixture *pf);

/* Starts polkitd with these rules (NULL: none) in place, and waits until it owns its name. */
void polkit_fixture_start(PolkitFixture *pf, const char *rules);
void polkit_fixture_stop(PolkitFixture *pf);
bool polkit_fixture_running(BusFixture *f);
pid_t polkit_fixture_pid(PolkitFixture *pf);

/* Counts the CheckAuthorization calls that go to polkitd from now on (a monitor connection on
 * the test's bus), by action id, so that a test can wait until a check is pending. */
void polkit_fixture_watch_checks(PolkitFixture *pf);
unsigned polkit_fixture_checks_seen(PolkitFixture *pf, const char *action_id);
