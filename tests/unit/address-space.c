/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <glib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "address-space.h"

bool address_space_limit_works(void) {
#if defined(__SANITIZE_ADDRESS__)
        return false;
#else
        return true;
#endif
}

static uint64_t address_space(void) {
        g_autofree char *statm = NULL;
        g_assert_true(g_file_get_contents("/proc/self/statm", &statm, NULL, NULL));
        return g_ascii_strtoull(statm, NULL, 10) * (uint64_t) sysconf(_SC_PAGESIZE);
}

int run_with_address_space(uint64_t growth, int (*fn)(const char *arg), const char *arg) {
        int status = -1;
        pid_t pid;

        pid = fork();
        g_assert_cmpint(pid, >=, 0);
        if (pid == 0) {
                struct rlimit rl;

                rl.rlim_cur = rl.rlim_max = address_space() + growth;
                _exit(setrlimit(RLIMIT_AS, &rl) < 0 ? 10 : fn(arg));
        }
        g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
        g_assert_true(WIFEXITED(status));
        return WEXITSTATUS(status);
}
