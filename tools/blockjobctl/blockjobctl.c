/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* blockjobctl: the command-line client of blockjobd, in the spirit of systemctl, importctl and
 * busctl. The parts: args.c (the command line, as tables), create.c, job-verbs.c, show.c and
 * monitor.c (the commands), bitmap.c (bitmap ...), watch.c (following jobs to their result), progress.c (the display),
 * polkit-agent.c, paths.c, units.c. */

#include "args.h"
#include "bus.h"
#include "polkit-agent.h"
#include "util.h"
#include "verbs.h"

typedef int (*VerbFunction)(sd_bus *bus);

static const VerbFunction verb_functions[_CMD_MAX] = {
        [CMD_LIST] = verb_list,
        [CMD_STATUS] = verb_status,
        [CMD_WAIT] = verb_wait,
        [CMD_BACKUP] = verb_create,
        [CMD_MIRROR] = verb_create,
        [CMD_COMMIT] = verb_create,
        [CMD_STREAM] = verb_create,
        [CMD_PAUSE] = verb_job,
        [CMD_RESUME] = verb_job,
        [CMD_CANCEL] = verb_job,
        [CMD_COMPLETE] = verb_job,
        [CMD_FINALIZE] = verb_job,
        [CMD_DISMISS] = verb_job,
        [CMD_SET_SPEED] = verb_job,
        [CMD_MONITOR] = verb_monitor,
        [CMD_BITMAP_ADD] = verb_bitmap,
        [CMD_BITMAP_REMOVE] = verb_bitmap,
        [CMD_BITMAP_CLEAR] = verb_bitmap,
        [CMD_BITMAP_ENABLE] = verb_bitmap,
        [CMD_BITMAP_DISABLE] = verb_bitmap,
        [CMD_BITMAP_MERGE] = verb_bitmap,
        [CMD_BITMAP_LIST] = verb_bitmap,
};

int main(int argc, char *argv[]) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        int r;

        r = parse_argv(argc, argv);
        if (r <= 0) {
                arguments_done();
                return r < 0 ? (exit_status ?: EXIT_USAGE) : exit_status;
        }

        r = connect_bus(&bus);
        if (r >= 0)
                r = verb_functions[arg.command](bus);

        polkit_agent_close();
        arguments_done();
        fflush(stdout);
        if (r < 0)
                return exit_status ?: EXIT_LOST;
        return r;
}
