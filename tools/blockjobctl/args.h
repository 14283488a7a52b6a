/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The command line: the commands, the options, which options each command takes (as data, in
 * args.c), their parsing, and the help texts made from the same tables. */

#include <stdbool.h>
#include <stdint.h>

typedef enum Command {
        CMD_LIST,
        CMD_STATUS,
        CMD_WAIT,
        CMD_BACKUP,
        CMD_MIRROR,
        CMD_COMMIT,
        CMD_STREAM,
        CMD_PAUSE,
        CMD_RESUME,
        CMD_CANCEL,
        CMD_COMPLETE,
        CMD_FINALIZE,
        CMD_DISMISS,
        CMD_SET_SPEED,
        CMD_MONITOR,
        CMD_BITMAP_ADD,
        CMD_BITMAP_REMOVE,
        CMD_BITMAP_CLEAR,
        CMD_BITMAP_ENABLE,
        CMD_BITMAP_DISABLE,
        CMD_BITMAP_MERGE,
        CMD_BITMAP_LIST,
        CMD_HELP,
        _CMD_MAX,
} Command;

#define CMD_MASK(c) (1U << (c))
#define CMDS_CREATE (CMD_MASK(CMD_BACKUP) | CMD_MASK(CMD_MIRROR) | CMD_MASK(CMD_COMMIT) | CMD_MASK(CMD_STREAM))
#define CMDS_BITMAP                                                                                      \
        (CMD_MASK(CMD_BITMAP_ADD) | CMD_MASK(CMD_BITMAP_REMOVE) | CMD_MASK(CMD_BITMAP_CLEAR) |           \
         CMD_MASK(CMD_BITMAP_ENABLE) | CMD_MASK(CMD_BITMAP_DISABLE) | CMD_MASK(CMD_BITMAP_MERGE) |       \
         CMD_MASK(CMD_BITMAP_LIST))

typedef struct CommandInfo {
        const char *name;               /* "bitmap add": a command and its subcommand, two words */
        const char *synopsis;           /* its arguments, as --help shows them */
        unsigned min_args, max_args;    /* not counting the command; max 0 for no limit */
        const char *summary;            /* the line of --help */
        const char *description;        /* `blockjobctl help COMMAND` */
} CommandInfo;

extern const CommandInfo commands[_CMD_MAX];

#define JOB_IDS_MAX 256

typedef struct Arguments {
        Command command;
        char **args;                    /* the command's arguments */
        unsigned n_args;

        const char *address;
        bool json, bytes;
        bool follow, wait, complete, until_ready, cancel_on_interrupt;
        bool ask_password;

        const char *job_ids[JOB_IDS_MAX];       /* --job-id=, once per job */
        unsigned n_job_ids;
        uint64_t speed;
        bool speed_set;
        int auto_finalize, auto_dismiss, overwrite;     /* -1: not given */
        const char *sync, *format, *source_format, *image_format, *base_format;
        const char *bitmap, *bitmap_mode, *target_backing, *target_backing_format;
        const char *on_source_error, *on_target_error;
        const char *completion_mode;
        char *top, *base;               /* made absolute */
        const char *backing_file;
        uint32_t granularity;
        bool disabled;
        uint64_t buf_size;
        bool buf_size_set;
        int source_fd, target_fd, image_fd;     /* -1: not given */
        int chain_fds[64];
        unsigned n_chain_fds;
} Arguments;

extern Arguments arg;

/* 1: go on with arg.command; 0: done (--help, --version); negative: a usage error, said. */
int parse_argv(int argc, char *argv[]);
void arguments_done(void);

void help(void);
/* The help of one command: its synopsis, what it does, and the options it takes. */
int help_command(const char *name);
