/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <unistd.h>

#include "args.h"
#include "paths.h"
#include "units.h"
#include "util.h"

Arguments arg = {
        .ask_password = true,
        .auto_finalize = -1,
        .auto_dismiss = -1,
        .overwrite = -1,
        .source_fd = -1,
        .target_fd = -1,
        .image_fd = -1,
};

#define M(c) CMD_MASK(CMD_##c)
#define ALL_COMMANDS ((1U << _CMD_MAX) - 1)
#define COPY (M(BACKUP) | M(MIRROR))
#define CHAIN (M(COMMIT) | M(STREAM))
/* The verbs after which the job can be followed to its end. */
#define FOLLOW_VERBS (M(RESUME) | M(CANCEL) | M(COMPLETE) | M(FINALIZE) | M(SET_SPEED))
#define FOLLOWABLE (CMDS_CREATE | M(STATUS) | M(WAIT) | FOLLOW_VERBS)
/* Those that may stop following in ready: mirror and active commit, or a job that is named. */
#define READY_ABLE (M(MIRROR) | M(COMMIT) | M(STATUS) | M(WAIT) | M(RESUME) | M(SET_SPEED))

const CommandInfo commands[_CMD_MAX] = {
        [CMD_LIST] = { "list", "", 0, 0, "List jobs, newest first, with their files",
                       "Lists every job, newest first: its id, type, status, how much is done, its source and\n"
                       "target, and its error. Sizes are shown in units (--bytes for exact bytes); --json prints\n"
                       "the same objects as `status --json`. Other users' files and errors show only as far as\n"
                       "the caller may read them." },
        [CMD_STATUS] = { "status", "ID", 1, 1, "Show a job's properties",
                         "Shows a job's properties, sizes in units (--bytes: exact bytes; --json: an object with\n"
                         "the keys of `list --json`). With --follow, then follows the job as `wait --follow`." },
        [CMD_WAIT] = { "wait", "ID", 1, 0, "Wait for jobs (one or more IDs), show their results",
                       "Waits until each job given has ended and prints its result; the exit status is 0 if all\n"
                       "succeeded, else that of the first job that did not. A job that waits for someone stops\n"
                       "the wait, with what to run: ready (a mirror, an active commit: `complete`, or --complete),\n"
                       "pending (--no-auto-finalize: `finalize`), paused by an I/O error (`resume`, exit status\n"
                       "6). --follow shows progress; --json prints one result object per job." },
        [CMD_BACKUP] = { "backup", "SOURCE TARGET", 2, 0, "Copy SOURCE to a new TARGET, point in time",
                         "Copies SOURCE (a raw file, a block device or a qcow2 image with its backing chain) to\n"
                         "a new TARGET, as it is at this point in time; TARGET appears under its name only when\n"
                         "the job succeeds. TARGET takes SOURCE's format unless --format= is given (QEMU's rule);\n"
                         "a warning says so when TARGET's name suggests the other format. More SOURCE TARGET\n"
                         "pairs make one transaction, all created or none (--completion-mode=grouped: they also\n"
                         "succeed or fail together)." },
        [CMD_MIRROR] = { "mirror", "SOURCE TARGET", 2, 2, "Copy SOURCE to TARGET, keep it in sync until completed",
                         "Copies SOURCE to TARGET, reaches ready, and keeps TARGET in sync with SOURCE until the\n"
                         "job is completed (`blockjobctl complete ID`, or --complete); TARGET then appears under\n"
                         "its name. Cancelling a mirror, ready or not, discards the copy. TARGET takes SOURCE's\n"
                         "format unless --format= is given. --follow and --wait stop at ready, saying so, unless\n"
                         "--complete is given." },
        [CMD_COMMIT] = { "commit", "IMAGE", 1, 1, "Commit IMAGE (or --top=) into --base= of its chain",
                         "Folds the layers of IMAGE's backing chain from --top= (default: IMAGE itself, an active\n"
                         "commit) down into --base= (default: the bottom of the chain). An active commit waits in\n"
                         "ready until completed (`blockjobctl complete ID`, or --complete); a commit of a lower\n"
                         "layer completes by itself." },
        [CMD_STREAM] = { "stream", "IMAGE", 1, 1, "Pull the backing chain (down to --base=) into IMAGE",
                         "Copies into IMAGE what its backing chain holds down to --base= (default: the whole\n"
                         "chain, and IMAGE then stands alone); IMAGE then rests on --base=." },
        [CMD_PAUSE] = { "pause", "ID", 1, 1, "Pause a job",
                        "Pauses a job at its next pause point; --wait waits until it is paused." },
        [CMD_RESUME] = { "resume", "ID", 1, 1, "Resume a paused job",
                         "Resumes a paused job, or one that an I/O error stopped (retrying the I/O); --wait or\n"
                         "--follow then waits for its result." },
        [CMD_CANCEL] = { "cancel", "ID", 1, 1, "Cancel a job (its unfinished target is removed)",
                         "Cancels a job: what it was building is removed, and a new target never appears. A ready\n"
                         "mirror's copy is discarded too (`complete` keeps it). --wait waits until it has ended." },
        [CMD_COMPLETE] = { "complete", "ID", 1, 1, "Complete a ready job (mirror, active commit)",
                           "Tells a ready job (a mirror, an active commit) to finish: a mirror's TARGET appears\n"
                           "under its name, an active commit's IMAGE rests on its base. --wait or --follow waits\n"
                           "for the result." },
        [CMD_FINALIZE] = { "finalize", "ID", 1, 1, "Finalize a pending job (and its transaction)",
                           "Publishes the result of a job waiting in pending (created with --no-auto-finalize),\n"
                           "and of its whole transaction. --wait or --follow waits for the result." },
        [CMD_DISMISS] = { "dismiss", "ID", 1, 1, "Dismiss a concluded job",
                          "Removes a concluded job (created with --no-auto-dismiss); its id can be used again." },
        [CMD_SET_SPEED] = { "set-speed", "ID BYTES", 2, 2, "Limit a job to BYTES per second (0: no limit)",
                            "Limits a job to BYTES per second (K, M, G, T suffixes; 0: no limit). --wait or --follow\n"
                            "then waits for its result." },
        [CMD_MONITOR] = { "monitor", "", 0, 0, "Print status changes as they happen",
                          "Prints every job's status changes and I/O errors as they happen, one line each, until\n"
                          "interrupted (Ctrl-C)." },
        [CMD_BITMAP_ADD] = { "bitmap add", "IMAGE NAME", 2, 2, "Add a persistent dirty bitmap to a qcow2 IMAGE",
                             "Adds the persistent dirty bitmap NAME to the qcow2 image IMAGE, empty; from now on it\n"
                             "records every write to IMAGE (by QEMU, qemu-img, or blockjobd's jobs), unless --disabled.\n"
                             "--granularity= is the size each bit stands for (a power of 2, 512 to 2G; default, as\n"
                             "QEMU picks it, the cluster size within 4K to 64K). IMAGE is opened with the caller's\n"
                             "rights and must not be in use (a running QEMU, or a job that writes it)." },
        [CMD_BITMAP_REMOVE] = { "bitmap remove", "IMAGE NAME", 2, 2, "Remove a bitmap from IMAGE",
                                "Removes the bitmap NAME from IMAGE (an inconsistent one too)." },
        [CMD_BITMAP_CLEAR] = { "bitmap clear", "IMAGE NAME", 2, 2, "Clear a bitmap: nothing marked any more",
                               "Clears the bitmap NAME of IMAGE: no range is marked any more." },
        [CMD_BITMAP_ENABLE] = { "bitmap enable", "IMAGE NAME", 2, 2, "Let a bitmap record writes again",
                                "Enables the bitmap NAME of IMAGE: it records writes again." },
        [CMD_BITMAP_DISABLE] = { "bitmap disable", "IMAGE NAME", 2, 2, "Stop a bitmap from recording writes",
                                 "Disables the bitmap NAME of IMAGE: it keeps what it marks and records nothing\n"
                                 "more." },
        [CMD_BITMAP_MERGE] = { "bitmap merge", "IMAGE TARGET SOURCE...", 3, 0, "Mark in TARGET what the SOURCE bitmaps mark",
                               "Marks in the bitmap TARGET of IMAGE every range that one of the SOURCE bitmaps marks\n"
                               "(QEMU's block-dirty-bitmap-merge)." },
        [CMD_BITMAP_LIST] = { "bitmap list", "IMAGE", 1, 1, "List IMAGE's bitmaps: granularity, dirty bytes, flags",
                              "Lists the persistent bitmaps of IMAGE, as qemu-img info orders them: the name, the\n"
                              "granularity, how much of the disk is marked (dirty), and the flags: auto (records\n"
                              "writes) or disabled, in-use, inconsistent (cannot be used; remove it). Sizes in units\n"
                              "(--bytes: exact bytes); --json prints a list of objects with the keys name,\n"
                              "granularity, dirty and flags." },
        [CMD_HELP] = { "help", "COMMAND", 0, 1, "Show a command's help",
                       "Shows a command's help: what it does and the options it takes." },
};

enum {
        OPT_HELP = 'h',
        OPT_FOLLOW = 'f',
        OPT_VERSION = 0x100,
        OPT_SYSTEM,
        OPT_ADDRESS,
        OPT_NO_ASK_PASSWORD,
        OPT_JSON,
        OPT_BYTES,
        OPT_WAIT,
        OPT_COMPLETE,
        OPT_UNTIL_READY,
        OPT_CANCEL_ON_INTERRUPT,
        OPT_JOB_ID,
        OPT_SPEED,
        OPT_NO_AUTO_FINALIZE,
        OPT_NO_AUTO_DISMISS,
        OPT_ON_SOURCE_ERROR,
        OPT_ON_TARGET_ERROR,
        OPT_OVERWRITE,
        OPT_SYNC,
        OPT_FORMAT,
        OPT_SOURCE_FORMAT,
        OPT_COMPLETION_MODE,
        OPT_GRANULARITY,
        OPT_BUF_SIZE,
        OPT_IMAGE_FORMAT,
        OPT_BASE_FORMAT,
        OPT_TOP,
        OPT_BASE,
        OPT_BACKING_FILE,
        OPT_SOURCE_FD,
        OPT_TARGET_FD,
        OPT_IMAGE_FD,
        OPT_CHAIN_FD,
        OPT_BITMAP,
        OPT_BITMAP_MODE,
        OPT_TARGET_BACKING,
        OPT_TARGET_BACKING_FORMAT,
        OPT_DISABLED,
};

typedef struct OptionInfo {
        int id;
        const char *name;
        char short_name;
        const char *value;              /* NULL: a flag; "a|b": one of these words */
        unsigned commands;              /* which commands take it */
        const char *help;               /* "\n" continues the text on the next line */
} OptionInfo;

static const OptionInfo options[] = {
        { OPT_HELP, "help", 'h', NULL, ALL_COMMANDS, "Show this help (after a command: the command's)" },
        { OPT_VERSION, "version", 0, NULL, ALL_COMMANDS, "Show the version" },
        { OPT_SYSTEM, "system", 0, NULL, ALL_COMMANDS, "Talk to the system bus (the default)" },
        { OPT_ADDRESS, "address", 0, "ADDRESS", ALL_COMMANDS, "Talk to the bus at ADDRESS" },
        { OPT_NO_ASK_PASSWORD, "no-ask-password", 0, NULL, ALL_COMMANDS,
          "Do not let polkit ask for a password (no agent, no\ninteractive authorization)" },
        { OPT_JSON, "json", 0, NULL,
          M(LIST) | M(STATUS) | M(MONITOR) | M(WAIT) | CMDS_CREATE | FOLLOW_VERBS | M(BITMAP_LIST),
          "Print JSON (list, status, monitor, a new job's id, the\nresult of --wait and wait, bitmap list); not with\n--follow" },
        { OPT_BYTES, "bytes", 0, NULL, M(LIST) | M(STATUS) | M(BITMAP_LIST),
          "Show sizes and speeds in exact bytes (list, status,\nbitmap list)" },
        { OPT_FOLLOW, "follow", 'f', NULL, FOLLOWABLE,
          "Show the job's progress until it ends; the exit status\ntells whether it succeeded" },
        { OPT_WAIT, "wait", 0, NULL, CMDS_CREATE | FOLLOW_VERBS | M(PAUSE),
          "Wait until the job has ended (pause: is paused), quietly;\nthe exit status tells whether it succeeded" },
        { OPT_COMPLETE, "complete", 0, NULL, READY_ABLE, "Follow, and complete the job once it is ready" },
        { OPT_UNTIL_READY, "until-ready", 0, NULL, READY_ABLE,
          "Follow until the job is ready (or ends), and stop there" },
        { OPT_CANCEL_ON_INTERRUPT, "cancel-on-interrupt", 0, NULL, FOLLOWABLE & ~M(CANCEL),
          "Ctrl-C while following or waiting cancels the job\n(else it goes on, and blockjobctl says how to cancel it)" },
        { OPT_JOB_ID, "job-id", 0, "ID", CMDS_CREATE, "The new job's id (backup: once per SOURCE TARGET pair)" },
        { OPT_SPEED, "speed", 0, "BYTES", CMDS_CREATE, "The new job's speed limit per second" },
        { OPT_NO_AUTO_FINALIZE, "no-auto-finalize", 0, NULL, CMDS_CREATE, "Wait in pending for 'finalize'" },
        { OPT_NO_AUTO_DISMISS, "no-auto-dismiss", 0, NULL, CMDS_CREATE, "Stay concluded until 'dismiss'" },
        { OPT_ON_SOURCE_ERROR, "on-source-error", 0, "report|ignore|stop|enospc", CMDS_CREATE,
          "What a read error does (default: report, the job fails)" },
        { OPT_ON_TARGET_ERROR, "on-target-error", 0, "report|ignore|stop|enospc", CMDS_CREATE,
          "What a write error does (default: report)" },
        { OPT_OVERWRITE, "overwrite", 0, NULL, COPY, "Replace an existing TARGET (backup, mirror)" },
        { OPT_SYNC, "sync", 0, "full|top|bitmap|incremental", COPY,
          "What to copy (backup, mirror; default: full); bitmap,\nincremental: what the bitmap marks (backup)" },
        { OPT_FORMAT, "format", 0, "raw|qcow2", COPY,
          "The TARGET's format (backup, mirror); default: the\nSOURCE's, as in QEMU" },
        { OPT_SOURCE_FORMAT, "source-format", 0, "raw|qcow2", COPY,
          "The SOURCE's format, instead of guessing it from its\ncontent; needed to follow a qcow2 SOURCE's backing files\n(backup, mirror)" },
        { OPT_COMPLETION_MODE, "completion-mode", 0, "individual|grouped", M(BACKUP),
          "Several SOURCE TARGET pairs: each job on its own, or\nall succeed or fail together (backup)" },
        { OPT_GRANULARITY, "granularity", 0, "BYTES", M(MIRROR) | M(BITMAP_ADD),
          "Change tracking unit (mirror, bitmap add)" },
        { OPT_BUF_SIZE, "buf-size", 0, "BYTES", M(MIRROR), "Bytes read per step at most (mirror; default 4M)" },
        { OPT_IMAGE_FORMAT, "image-format", 0, "qcow2", CHAIN, "The IMAGE's format (commit, stream)" },
        { OPT_BASE_FORMAT, "base-format", 0, "raw|qcow2", CHAIN,
          "The format of the chain's base (--base=): checked against\nthe one the image above it records, needed where that\nrecords none (commit, stream)" },
        { OPT_TOP, "top", 0, "FILE", M(COMMIT), "Top of what to commit (commit; default: IMAGE)" },
        { OPT_BASE, "base", 0, "FILE", CHAIN, "Where the chain ends (commit, stream)" },
        { OPT_BACKING_FILE, "backing-file", 0, "NAME", CHAIN,
          "The backing file name to record, as given (commit, stream)" },
        { OPT_SOURCE_FD, "source-fd", 0, "FD", COPY,
          "Read SOURCE from descriptor FD, open in blockjobctl\n(SOURCE is then its label; backup, mirror)" },
        { OPT_TARGET_FD, "target-fd", 0, "FD", COPY,
          "Write TARGET in place through descriptor FD, open for\nreading and writing (backup, mirror)" },
        { OPT_IMAGE_FD, "image-fd", 0, "FD", CHAIN, "IMAGE from descriptor FD (commit, stream)" },
        { OPT_CHAIN_FD, "chain-fd", 0, "FD", CMDS_CREATE,
          "A backing file below the SOURCE or IMAGE given as a\ndescriptor, nearest first; once per file" },
        { OPT_BITMAP, "bitmap", 0, "NAME", M(BACKUP),
          "A persistent dirty bitmap of the SOURCE: what sync\nbitmap or incremental copies (backup)" },
        { OPT_BITMAP_MODE, "bitmap-mode", 0, "on-success|never|always", M(BACKUP),
          "What becomes of the bitmap at the end: cleared if the\njob succeeded, never, or always (backup)" },
        { OPT_TARGET_BACKING, "target-backing", 0, "NAME", M(BACKUP),
          "Make the qcow2 TARGET an overlay of an earlier backup,\nrecorded as given (relative: to TARGET's directory)\n(backup)" },
        { OPT_TARGET_BACKING_FORMAT, "target-backing-format", 0, "raw|qcow2", M(BACKUP),
          "The format of the target's backing file (backup)" },
        { OPT_DISABLED, "disabled", 0, NULL, M(BITMAP_ADD), "The new bitmap records nothing until enabled (bitmap add)" },
};

static const OptionInfo *option_by_id(int id) {
        for (size_t i = 0; i < ELEMENTSOF(options); i++)
                if (options[i].id == id)
                        return &options[i];
        return NULL;
}

static const char *const exit_statuses =
        "Exit status:\n"
        "  0  success (with --follow, --wait and wait: the job succeeded, or waits in\n"
        "     ready or pending as it was told to)\n"
        "  1  the job failed or was cancelled\n"
        "  2  a wrong command line\n"
        "  3  blockjobd refused the call (no such job, a verb the job's status does not\n"
        "     allow, a file it cannot use)\n"
        "  4  not authorized (polkit, or the permissions of a file)\n"
        "  5  no bus or no blockjobd, or it went away, or the job vanished before its\n"
        "     result could be read\n"
        "  6  the job is paused by an I/O error and waits for resume or cancel\n"
        "  130  interrupted (Ctrl-C) while following or waiting; the job goes on\n";

/* Text filled to end before column 'width', continuation lines indented by 'indent' (the first
 * line starts where the cursor is, at 'indent'); the line breaks of the text count as spaces. */
static void print_filled(const char *text, size_t indent, size_t width) {
        _cleanup_free_ char *copy = strdup(text);
        size_t column = indent;
        bool first = true;
        char *save = NULL;

        if (!copy)
                oom();
        for (char *w = strtok_r(copy, " \n", &save); w; w = strtok_r(NULL, " \n", &save)) {
                size_t n = strlen(w);
                if (!first && column + 1 + n > width) {
                        printf("\n%*s", (int) indent, "");
                        column = indent;
                } else if (!first) {
                        fputc(' ', stdout);
                        column++;
                }
                fputs(w, stdout);
                column += n;
                first = false;
        }
        fputc('\n', stdout);
}

static void print_option(const OptionInfo *o) {
        char left[80];

        snprintf(left, sizeof(left), "  %c%c %s%s%s%s", o->short_name ? '-' : ' ', o->short_name ?: ' ',
                 o->name ? "--" : "", o->name, o->value ? "=" : "", o->value ?: "");
        if (strlen(left) < 25)
                printf("%-25s ", left);
        else
                printf("%s\n%26s", left, "");
        print_filled(o->help, 26, 79);
}

static void print_command(const CommandInfo *c) {
        char left[80];

        snprintf(left, sizeof(left), "  %s%s%s", c->name, *c->synopsis ? " " : "", c->synopsis);
        if (strlen(left) < 25)
                printf("%-25s %s\n", left, c->summary);
        else
                printf("%s\n%26s%s\n", left, "", c->summary);
}

void help(void) {
        printf("%s [OPTIONS...] COMMAND ...\n\n"
               "Run and control disk-image jobs of blockjobd.\n\n"
               "Commands:\n", program_invocation_short_name);
        for (size_t i = 0; i < _CMD_MAX; i++)
                print_command(&commands[i]);
        printf("\n%s\n", exit_statuses);
        printf("See '%s help COMMAND' for the options each command takes. A TARGET\n"
               "takes the SOURCE's format unless --format= is given, as in QEMU.\n\n"
               "Options:\n", program_invocation_short_name);
        for (size_t i = 0; i < ELEMENTSOF(options); i++)
                print_option(&options[i]);
}

static const CommandInfo *command_by_name(const char *name) {
        for (size_t i = 0; i < _CMD_MAX; i++)
                if (streq(commands[i].name, name))
                        return &commands[i];
        return NULL;
}

#define BITMAP_SUBCOMMANDS "add, remove, clear, enable, disable, merge, list"

/* The command that argv[*i] starts: one word, or "bitmap" and its subcommand (*i is moved past
 * it). NULL, said, for none. */
static const CommandInfo *command_from_argv(char *argv[], int argc, int *i) {
        const CommandInfo *c;

        if (!streq(argv[*i], "bitmap")) {
                c = command_by_name(argv[*i]);
                if (!c) {
                        _cleanup_free_ char *e = esc(argv[*i]);
                        log_usage("Unknown command '%s'; see --help.", e);
                }
                return c;
        }
        if (*i + 1 >= argc) {
                log_usage("'bitmap' takes a subcommand: " BITMAP_SUBCOMMANDS "; see --help.");
                return NULL;
        }
        _cleanup_free_ char *name = NULL;
        if (asprintf(&name, "bitmap %s", argv[*i + 1]) < 0)
                oom();
        c = command_by_name(name);
        if (!c) {
                _cleanup_free_ char *e = esc(argv[*i + 1]);
                log_usage("Unknown bitmap command '%s': one of " BITMAP_SUBCOMMANDS "; see --help.", e);
                return NULL;
        }
        (*i)++;
        return c;
}

int help_command(const char *name) {
        const CommandInfo *c = command_by_name(name);
        Command cmd;

        if (streq(name, "bitmap")) {
                printf("%s bitmap SUBCOMMAND ... [OPTIONS...]\n\n"
                       "Manage the persistent dirty bitmaps of a qcow2 image, as QEMU's\n"
                       "block-dirty-bitmap-* commands do, while no QEMU has it open:\n\n",
                       program_invocation_short_name);
                for (size_t i = 0; i < _CMD_MAX; i++)
                        if (CMDS_BITMAP & CMD_MASK(i))
                                print_command(&commands[i]);
                printf("\nSee '%s help bitmap SUBCOMMAND' for its options.\n", program_invocation_short_name);
                return 0;
        }

        if (!c) {
                _cleanup_free_ char *e = esc(name);
                return log_usage("Unknown command '%s'; see --help.", e);
        }
        cmd = (Command) (c - commands);
        bool any = false;

        printf("%s %s%s%s [OPTIONS...]\n\n", program_invocation_short_name, c->name, *c->synopsis ? " " : "",
               c->synopsis);
        print_filled(c->description, 0, 79);
        printf("\nOptions:\n");
        for (size_t i = 0; i < ELEMENTSOF(options); i++)
                if ((options[i].commands & CMD_MASK(cmd)) && options[i].commands != ALL_COMMANDS) {
                        print_option(&options[i]);
                        any = true;
                }
        if (!any)
                printf("  (only the common ones)\n");
        printf("\nCommon options: -h --help, --version, --system, --address=ADDRESS,\n"
               "--no-ask-password. Exit statuses: see '%s --help'.\n", program_invocation_short_name);
        return 0;
}

/* The commands an option is for, "backup, mirror". */
static char *commands_for(unsigned mask) {
        char *s = NULL;
        size_t n = 0;
        FILE *f = open_memstream(&s, &n);

        if (!f)
                oom();
        for (size_t i = 0, k = 0; i < _CMD_MAX; i++)
                if (mask & CMD_MASK(i))
                        fprintf(f, "%s%s", k++ > 0 ? ", " : "", commands[i].name);
        if (fclose(f) != 0)
                oom();
        return s;
}

static int parse_choice(const OptionInfo *o, const char *value) {
        _cleanup_free_ char *choices = strdup(o->value);
        char *save = NULL;

        if (!choices)
                oom();
        for (char *w = strtok_r(choices, "|", &save); w; w = strtok_r(NULL, "|", &save))
                if (streq(w, value))
                        return 0;
        _cleanup_free_ char *e = esc(value);
        return log_usage("Invalid --%s=%s: one of %s.", o->name, e, o->value);
}

static int parse_size_option(const char *name, const char *value, uint64_t *ret) {
        const char *why = NULL;
        int r;

        r = parse_size(value, ret, &why);
        if (r == -ERANGE)
                return log_usage("Invalid --%s=%s: too large.", name, value);
        if (r < 0)
                return log_usage("Invalid --%s=%s: %s.", name, value, why);
        return 0;
}

static int parse_fd(const char *name, const char *value, int *ret) {
        char *end;
        long v;

        errno = 0;
        v = strtol(value, &end, 10);
        if (errno != 0 || end == value || *end || v < 0 || v > INT_MAX)
                return log_usage("Invalid --%s=%s: give the number of an open descriptor.", name, value);
        if (fcntl((int) v, F_GETFD) < 0)
                return log_usage("--%s=%ld: no such open descriptor (open it in the shell, e.g. 3<FILE).", name, v);
        *ret = (int) v;
        return 0;
}

static int set_path(const char *name, const char *value, char **target) {
        int r;

        free(*target);
        r = path_make_absolute(value, target);
        if (r < 0) {
                _cleanup_free_ char *e = esc(value);
                return log_usage("Invalid --%s=%s: %s.", name, e, strerror(-r));
        }
        return 0;
}

/* Options given that the command does not take, and combinations that make no sense. */
static int check_options(const bool given[static ELEMENTSOF(options)]) {
        Command c = arg.command;

        for (size_t i = 0; i < ELEMENTSOF(options); i++) {
                if (!given[i] || (options[i].commands & CMD_MASK(c)))
                        continue;
                _cleanup_free_ char *for_commands = commands_for(options[i].commands);
                return log_usage("--%s%s does not apply to '%s' (it is for %s); see '%s help %s'.", options[i].name,
                                 options[i].value ? "=" : "", commands[c].name, for_commands,
                                 program_invocation_short_name, commands[c].name);
        }
        if (arg.json && arg.follow)
                return log_usage("--json and --follow do not go together: --follow draws progress for people; "
                                 "--wait --json prints the result as JSON.");
        if (arg.complete && arg.until_ready)
                return log_usage("--complete and --until-ready do not go together.");
        if (arg.cancel_on_interrupt && !arg.wait && c != CMD_WAIT)
                return log_usage("--cancel-on-interrupt applies with --follow or --wait.");
        if (arg.n_job_ids > 1 && c != CMD_BACKUP)
                return log_usage("--job-id= is given more than once.");
        if (arg.n_chain_fds > 0 && arg.source_fd < 0 && arg.image_fd < 0)
                return log_usage("--chain-fd= needs --%s-fd=.", c == CMD_COMMIT || c == CMD_STREAM ? "image" : "source");
        return 0;
}

int parse_argv(int argc, char *argv[]) {
        struct option long_options[ELEMENTSOF(options) + 1] = {};
        bool given[ELEMENTSOF(options)] = {};
        char short_options[16] = "";
        const char *command_help = NULL;
        bool want_help = false;
        int c, r;

        for (size_t i = 0; i < ELEMENTSOF(options); i++) {
                long_options[i] = (struct option) {
                        .name = options[i].name,
                        .has_arg = options[i].value ? required_argument : no_argument,
                        .val = options[i].id,
                };
                if (options[i].short_name) {
                        size_t l = strlen(short_options);
                        short_options[l] = options[i].short_name;
                        short_options[l + 1] = 0;
                }
        }

        opterr = 0;
        while ((c = getopt_long(argc, argv, short_options, long_options, NULL)) >= 0) {
                const OptionInfo *o = option_by_id(c);
                uint64_t v;

                if (c == '?') {
                        if (optopt && optopt < 0x100)
                                return log_usage("Unknown option '-%c'; see --help.", optopt);
                        if (optopt)
                                return log_usage("Option '%s' needs a value; see --help.", argv[optind - 1]);
                        return log_usage("Unknown option '%s'; see --help.", argv[optind - 1]);
                }
                if (!o)
                        abort();
                given[o - options] = true;
                if (o->value && strchr(o->value, '|')) {
                        r = parse_choice(o, optarg);
                        if (r < 0)
                                return r;
                }

                switch (c) {
                case OPT_HELP:
                        want_help = true;
                        break;
                case OPT_VERSION:
                        puts(PROJECT_VERSION);
                        return 0;
                case OPT_SYSTEM:
                        arg.address = NULL;
                        break;
                case OPT_ADDRESS:
                        arg.address = optarg;
                        break;
                case OPT_NO_ASK_PASSWORD:
                        arg.ask_password = false;
                        break;
                case OPT_JSON:
                        arg.json = true;
                        break;
                case OPT_BYTES:
                        arg.bytes = true;
                        break;
                case OPT_FOLLOW:
                        arg.follow = arg.wait = true;
                        break;
                case OPT_WAIT:
                        arg.wait = true;
                        break;
                case OPT_COMPLETE:
                        arg.complete = arg.follow = arg.wait = true;
                        break;
                case OPT_UNTIL_READY:
                        arg.until_ready = arg.follow = arg.wait = true;
                        break;
                case OPT_CANCEL_ON_INTERRUPT:
                        arg.cancel_on_interrupt = true;
                        break;
                case OPT_JOB_ID:
                        if (arg.n_job_ids >= JOB_IDS_MAX)
                                return log_usage("Too many --job-id=.");
                        arg.job_ids[arg.n_job_ids++] = optarg;
                        break;
                case OPT_SPEED:
                        r = parse_size_option(o->name, optarg, &arg.speed);
                        if (r < 0)
                                return r;
                        arg.speed_set = true;
                        break;
                case OPT_NO_AUTO_FINALIZE:
                        arg.auto_finalize = false;
                        break;
                case OPT_NO_AUTO_DISMISS:
                        arg.auto_dismiss = false;
                        break;
                case OPT_ON_SOURCE_ERROR:
                        arg.on_source_error = optarg;
                        break;
                case OPT_ON_TARGET_ERROR:
                        arg.on_target_error = optarg;
                        break;
                case OPT_OVERWRITE:
                        arg.overwrite = true;
                        break;
                case OPT_SYNC:
                        arg.sync = optarg;
                        break;
                case OPT_FORMAT:
                        arg.format = optarg;
                        break;
                case OPT_SOURCE_FORMAT:
                        arg.source_format = optarg;
                        break;
                case OPT_BITMAP:
                        arg.bitmap = optarg;
                        break;
                case OPT_BITMAP_MODE:
                        arg.bitmap_mode = optarg;
                        break;
                case OPT_TARGET_BACKING:
                        arg.target_backing = optarg;
                        break;
                case OPT_TARGET_BACKING_FORMAT:
                        arg.target_backing_format = optarg;
                        break;
                case OPT_COMPLETION_MODE:
                        arg.completion_mode = optarg;
                        break;
                case OPT_GRANULARITY:
                        r = parse_size_option(o->name, optarg, &v);
                        if (r < 0)
                                return r;
                        if (v > UINT32_MAX)
                                return log_usage("Invalid --granularity=%s: too large.", optarg);
                        arg.granularity = (uint32_t) v;
                        break;
                case OPT_BUF_SIZE:
                        r = parse_size_option(o->name, optarg, &arg.buf_size);
                        if (r < 0)
                                return r;
                        arg.buf_size_set = true;
                        break;
                case OPT_IMAGE_FORMAT:
                        arg.image_format = optarg;
                        break;
                case OPT_BASE_FORMAT:
                        arg.base_format = optarg;
                        break;
                case OPT_TOP:
                        r = set_path(o->name, optarg, &arg.top);
                        if (r < 0)
                                return r;
                        break;
                case OPT_BASE:
                        r = set_path(o->name, optarg, &arg.base);
                        if (r < 0)
                                return r;
                        break;
                case OPT_BACKING_FILE:
                        arg.backing_file = optarg;
                        break;
                case OPT_SOURCE_FD:
                        r = parse_fd(o->name, optarg, &arg.source_fd);
                        if (r < 0)
                                return r;
                        break;
                case OPT_TARGET_FD:
                        r = parse_fd(o->name, optarg, &arg.target_fd);
                        if (r < 0)
                                return r;
                        break;
                case OPT_IMAGE_FD:
                        r = parse_fd(o->name, optarg, &arg.image_fd);
                        if (r < 0)
                                return r;
                        break;
                case OPT_DISABLED:
                        arg.disabled = true;
                        break;
                case OPT_CHAIN_FD:
                        if (arg.n_chain_fds >= ELEMENTSOF(arg.chain_fds))
                                return log_usage("Too many --chain-fd=.");
                        r = parse_fd(o->name, optarg, &arg.chain_fds[arg.n_chain_fds]);
                        if (r < 0)
                                return r;
                        arg.n_chain_fds++;
                        break;
                default:
                        abort();
                }
        }

        if (optind >= argc) {
                if (want_help) {
                        help();
                        return 0;
                }
                return log_usage("Give a command; see --help.");
        }
        if (want_help && streq(argv[optind], "bitmap") && optind + 1 >= argc)
                return help_command("bitmap") < 0 ? -EINVAL : 0;
        int first = optind;
        const CommandInfo *cmd = command_from_argv(argv, argc, &first);
        if (!cmd)
                return -EINVAL;
        arg.command = (Command) (cmd - commands);
        arg.args = argv + first + 1;
        arg.n_args = (unsigned) (argc - first - 1);

        if (want_help || arg.command == CMD_HELP) {
                if (arg.command != CMD_HELP || want_help)
                        command_help = cmd->name;
                else if (arg.n_args == 1)
                        command_help = arg.args[0];
                else if (arg.n_args == 2 && streq(arg.args[0], "bitmap")) {
                        /* "help bitmap add" */
                        static char name[32];
                        snprintf(name, sizeof(name), "bitmap %.20s", arg.args[1]);
                        command_help = name;
                } else if (arg.n_args > 1)
                        return log_usage("'help' takes one command.");
                if (!command_help) {
                        help();
                        return 0;
                }
                r = help_command(command_help);
                return r < 0 ? r : 0;
        }

        if (arg.n_args < cmd->min_args || (cmd->max_args > 0 && arg.n_args > cmd->max_args) ||
            (cmd->max_args == 0 && cmd->min_args == 0 && arg.n_args > 0)) {
                if (cmd->max_args == cmd->min_args)
                        return log_usage("'%s' takes %u argument%s (%s); see '%s help %s'.", cmd->name, cmd->min_args,
                                         cmd->min_args == 1 ? "" : "s", *cmd->synopsis ? cmd->synopsis : "none",
                                         program_invocation_short_name, cmd->name);
                return log_usage("'%s' takes %s%s; see '%s help %s'.", cmd->name, cmd->synopsis,
                                 arg.command == CMD_BACKUP         ? " (and more SOURCE TARGET pairs)"
                                 : arg.command == CMD_BITMAP_MERGE ? ""
                                                                   : " (one or more)",
                                 program_invocation_short_name, cmd->name);
        }
        if (arg.command == CMD_BACKUP && arg.n_args % 2 != 0)
                return log_usage("'backup' takes SOURCE TARGET pairs; the last SOURCE has no TARGET.");

        return check_options(given) < 0 ? -EINVAL : 1;
}

void arguments_done(void) {
        free(arg.top);
        free(arg.base);
}
