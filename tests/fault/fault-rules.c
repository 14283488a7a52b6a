/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fault-rules.h"
#include "image-fault.h"

typedef struct Rule {
        char *path;
        ImageIo io;
        uint64_t offset;
        int error;
        long remaining;         /* -1: for ever */
} Rule;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char *rules_path;
static Rule *rules;
static size_t n_rules;
static struct stat loaded;      /* of the file the rules came from; st_ino 0 when none */

static void rules_clear(void) {
        for (size_t i = 0; i < n_rules; i++)
                free(rules[i].path);
        free(rules);
        rules = NULL;
        n_rules = 0;
}

static int parse_error(const char *s) {
        static const struct { const char *name; int value; } names[] = {
                { "EIO", EIO }, { "ENOSPC", ENOSPC }, { "EINVAL", EINVAL }, { "EROFS", EROFS },
        };
        char *end;
        long v;

        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
                if (strcmp(s, names[i].name) == 0)
                        return names[i].value;
        v = strtol(s, &end, 10);
        return *end == 0 && v > 0 && v < 4096 ? (int) v : 0;
}

static int parse_io(const char *s) {
        return strcmp(s, "read") == 0 ? IMAGE_IO_READ :
               strcmp(s, "write") == 0 ? IMAGE_IO_WRITE :
               strcmp(s, "flush") == 0 ? IMAGE_IO_FLUSH : -1;
}

/* A line that does not parse is a broken test: say so loudly and stop. */
static void parse_line(const char *line, unsigned number) {
        char path[4096], io[16], error[32];
        uint64_t offset;
        long count = -1;
        int n, kind, e;
        Rule *grown;

        n = sscanf(line, "%4095s %15s %" SCNu64 " %31s %ld", path, io, &offset, error, &count);
        kind = n >= 4 ? parse_io(io) : -1;
        e = n >= 4 ? parse_error(error) : 0;
        if (n < 4 || kind < 0 || e == 0 || (n == 5 && count < 1)) {
                fprintf(stderr, "%s:%u: bad fault rule: %s", rules_path, number, line);
                abort();
        }
        grown = realloc(rules, (n_rules + 1) * sizeof(Rule));
        if (!grown)
                abort();
        rules = grown;
        rules[n_rules++] = (Rule) {
                .path = strdup(path),
                .io = (ImageIo) kind,
                .offset = offset,
                .error = e,
                .remaining = count,
        };
}

static bool same_version(const struct stat *a, const struct stat *b) {
        return a->st_ino == b->st_ino && a->st_dev == b->st_dev && a->st_size == b->st_size &&
               a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/* Called with the lock held. */
static void rules_refresh(void) {
        struct stat st;
        char line[4200];
        unsigned number = 0;
        FILE *f;

        if (stat(rules_path, &st) < 0) {
                rules_clear();
                loaded = (struct stat) {};
                return;
        }
        if (loaded.st_ino != 0 && same_version(&st, &loaded))
                return;

        rules_clear();
        loaded = st;
        f = fopen(rules_path, "re");
        if (!f)
                return;
        while (fgets(line, sizeof(line), f)) {
                const char *p = line + strspn(line, " \t");
                number++;
                if (*p == '#' || *p == '\n' || *p == 0)
                        continue;
                parse_line(p, number);
        }
        fclose(f);
}

static int fault_hook(const char *path, ImageIo io, uint64_t offset, uint64_t length) {
        int r = 0;

        pthread_mutex_lock(&lock);
        rules_refresh();
        for (size_t i = 0; i < n_rules; i++) {
                Rule *rule = &rules[i];

                if (rule->io != io || rule->remaining == 0 || strcmp(rule->path, path) != 0)
                        continue;
                if (io != IMAGE_IO_FLUSH && (rule->offset < offset || rule->offset - offset >= length))
                        continue;
                if (rule->remaining > 0)
                        rule->remaining--;
                r = -rule->error;
                break;
        }
        pthread_mutex_unlock(&lock);
        return r;
}

void fault_rules_install(const char *path) {
        free(rules_path);
        rules_path = strdup(path);
        if (!rules_path)
                abort();
        image_set_fault_hook(fault_hook);
}
