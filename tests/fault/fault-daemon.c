/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Linked into blockjobd-faulty, the daemon the fault tests run: before main() it installs the
 * rules named by $BLOCKJOBD_FAULT_RULES (see fault-rules.h). The daemon that gets installed has
 * none of this. */

#include <stdlib.h>

#include "fault-rules.h"

__attribute__((constructor)) static void install_fault_rules(void) {
        const char *path = getenv("BLOCKJOBD_FAULT_RULES");

        if (path && *path)
                fault_rules_install(path);
}
