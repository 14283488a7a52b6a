/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* backup, mirror, commit, stream: the creation call with every option of the API, and what the
 * user should know about it before the job runs far (the target's format). */

#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "args.h"
#include "bus.h"
#include "paths.h"
#include "util.h"
#include "verbs.h"
#include "watch.h"

typedef struct Pair {
        char *source;                   /* SOURCE, or IMAGE */
        char *target;                   /* NULL for commit and stream */
} Pair;

static bool is_copy(void) {
        return arg.command == CMD_BACKUP || arg.command == CMD_MIRROR;
}

static int append_options(sd_bus_message *m, const char *job_id, bool no_auto_dismiss) {
        bool copy = is_copy();
        int r;

        r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
#define ADD(key, sig, ...)                                                                 \
        do {                                                                                \
                r = sd_bus_message_append(m, "{sv}", key, sig, __VA_ARGS__);                \
                if (r < 0)                                                                  \
                        return r;                                                           \
        } while (0)
        if (job_id)
                ADD("job-id", "s", job_id);
        if (arg.speed_set)
                ADD("speed", "t", arg.speed);
        if (arg.auto_finalize >= 0)
                ADD("auto-finalize", "b", arg.auto_finalize);
        if (no_auto_dismiss || arg.auto_dismiss == 0)
                ADD("auto-dismiss", "b", 0);
        if (arg.on_source_error)
                ADD("on-source-error", "s", arg.on_source_error);
        if (arg.on_target_error)
                ADD("on-target-error", "s", arg.on_target_error);
        if (arg.sync)
                ADD("sync", "s", arg.sync);
        if (arg.format)
                ADD("format", "s", arg.format);
        if (arg.source_format)
                ADD("source-format", "s", arg.source_format);
        if (arg.bitmap)
                ADD("bitmap", "s", arg.bitmap);
        if (arg.bitmap_mode)
                ADD("bitmap-mode", "s", arg.bitmap_mode);
        if (arg.target_backing)
                ADD("target-backing", "s", arg.target_backing);
        if (arg.target_backing_format)
                ADD("target-backing-format", "s", arg.target_backing_format);
        if (arg.image_format)
                ADD("image-format", "s", arg.image_format);
        if (arg.base_format)
                ADD("base-format", "s", arg.base_format);
        if (arg.overwrite >= 0)
                ADD("overwrite", "b", arg.overwrite);
        if (arg.granularity > 0)
                ADD("granularity", "u", arg.granularity);
        if (arg.buf_size_set)
                ADD("buf-size", "t", arg.buf_size);
        if (arg.top)
                ADD("top", "s", arg.top);
        if (arg.base)
                ADD("base", "s", arg.base);
        if (arg.backing_file)
                ADD("backing-file", "s", arg.backing_file);
        if (arg.source_fd >= 0)
                ADD(copy ? "source-fd" : "image-fd", "h", arg.source_fd);
        if (arg.image_fd >= 0)
                ADD("image-fd", "h", arg.image_fd);
        if (arg.target_fd >= 0)
                ADD("target-fd", "h", arg.target_fd);
#undef ADD
        if (arg.n_chain_fds > 0) {
                r = sd_bus_message_open_container(m, 'e', "sv");
                if (r >= 0)
                        r = sd_bus_message_append(m, "s", "chain-fds");
                if (r >= 0)
                        r = sd_bus_message_open_container(m, 'v', "ah");
                if (r >= 0)
                        r = sd_bus_message_open_container(m, 'a', "h");
                for (unsigned i = 0; r >= 0 && i < arg.n_chain_fds; i++)
                        r = sd_bus_message_append(m, "h", arg.chain_fds[i]);
                for (int k = 0; r >= 0 && k < 3; k++)
                        r = sd_bus_message_close_container(m);
                if (r < 0)
                        return r;
        }
        return sd_bus_message_close_container(m);
}

/* The format a file's name promises: "raw" for .raw and .img, "qcow2" for .qcow2 and .qcow. */
static const char *format_by_name(const char *path) {
        static const struct {
                const char *suffix, *format;
        } table[] = {
                { ".raw", "raw" }, { ".img", "raw" }, { ".qcow2", "qcow2" }, { ".qcow", "qcow2" },
        };
        size_t n = strlen(path);

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                size_t k = strlen(table[i].suffix);
                if (n > k && strcasecmp(path + n - k, table[i].suffix) == 0)
                        return table[i].format;
        }
        return NULL;
}

/* "full.raw becoming qcow2": TARGET's name says one format, the job writes the other. 'why' is
 * where the format came from. */
static void warn_format(const char *target, const char *format, const char *why) {
        const char *named = format_by_name(target);
        struct stat st;

        if (!named || !format || streq(named, format))
                return;
        /* A block device is written raw, whatever it is called. */
        if (stat(target, &st) >= 0 && S_ISBLK(st.st_mode))
                return;
        _cleanup_free_ char *e = esc(target);
        log_warning("'%s' is named like a %s image, but is written as %s (%s); give --format=%s for a %s TARGET.", e,
                    named, format, why, named, named);
}

/* The format TARGET gets: --format=, else the source's (QEMU's rule), which --source-format=
 * names, or the service tells once it has opened the source. */
static void check_target_formats(sd_bus *bus, const Pair *pairs, size_t n, char **paths) {
        for (size_t i = 0; i < n; i++) {
                _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
                _cleanup_free_ char *source_format = NULL;

                if (arg.format)
                        continue;       /* told before the call */
                if (arg.source_format) {
                        warn_format(pairs[i].target, arg.source_format, "the SOURCE's format, --source-format=");
                        continue;
                }
                if (!paths || sd_bus_get_property_string(bus, BUS_NAME, paths[i], JOB_IFACE, "SourceFormat", &error,
                                                         &source_format) < 0)
                        continue;
                warn_format(pairs[i].target, source_format,
                            "the SOURCE's format: a TARGET takes it unless --format= is given");
        }
}

/* The service's "no" with what the user can do about it. */
static void creation_hint(const sd_bus_error *error) {
        if (sd_bus_error_has_name(error, "org.blockjobd.Jobs1.Error.JobExists"))
                log_error("(An id stays taken until its job is dismissed: `%s dismiss ID`, or choose another "
                          "--job-id=.)", program_invocation_short_name);
        else if (error->message && strstr(error->message, "already exists") && is_copy())
                log_error("(--overwrite replaces it.)");
        else if (sd_bus_error_has_name(error, SD_BUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED))
                log_error(arg.ask_password ? "(polkit wants a password, and there is no terminal to ask on: run it "
                                             "from a terminal, or see blockjobd(8) for a polkit rule.)"
                                           : "(polkit wants a password, and --no-ask-password was given.)");
}

/* With --wait or --follow, the result is read before the job goes away: the job is made with
 * auto-dismiss off and dismissed once its result is read, unless the user asked for
 * --no-auto-dismiss, or the wait will stop before the end anyway (ready without --complete, or
 * pending): then the result comes later, to whoever completes or finalizes it. */
static bool keep_for_result(const Pair *pairs) {
        if (!arg.wait || arg.auto_dismiss == 0 || arg.auto_finalize == 0 || arg.until_ready)
                return false;
        if (arg.command == CMD_MIRROR && !arg.complete)
                return false;
        /* An active commit (top is the image itself, the default) waits in ready. */
        if (arg.command == CMD_COMMIT && !arg.complete && (!arg.top || streq(arg.top, pairs[0].source)))
                return false;
        return true;
}

static void pairs_free(Pair *pairs, size_t n) {
        for (size_t i = 0; i < n; i++) {
                free(pairs[i].source);
                free(pairs[i].target);
        }
        free(pairs);
}

static int make_pairs(Pair **ret, size_t *ret_n) {
        bool copy = is_copy();
        size_t n = copy ? arg.n_args / 2 : 1;
        Pair *pairs = calloc(n, sizeof(Pair));
        int r = 0;

        if (!pairs)
                oom();
        for (size_t i = 0; i < n && r >= 0; i++) {
                const char *a = arg.args[copy ? 2 * i : 0];
                r = path_make_absolute(a, &pairs[i].source);
                if (r >= 0 && copy) {
                        a = arg.args[2 * i + 1];
                        r = path_make_absolute(a, &pairs[i].target);
                }
                if (r < 0) {
                        _cleanup_free_ char *e = esc(a);
                        log_usage("Invalid path '%s': %s.", e,
                                  r == -ELOOP ? "'..' after a symbolic link (write the path without it)" : strerror(-r));
                }
        }
        if (r < 0) {
                pairs_free(pairs, n);
                return r;
        }
        *ret = pairs;
        *ret_n = n;
        return 0;
}

static const char *method_name(void) {
        switch (arg.command) {
        case CMD_BACKUP:
                return "Backup";
        case CMD_MIRROR:
                return "Mirror";
        case CMD_COMMIT:
                return "Commit";
        default:
                return "Stream";
        }
}

static int build_call(sd_bus *bus, const Pair *pairs, size_t n, bool transaction, bool no_auto_dismiss,
                      sd_bus_message **ret) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        r = sd_bus_message_new_method_call(bus, &m, BUS_NAME, MANAGER_PATH, MANAGER_IFACE,
                                           transaction ? "Transaction" : method_name());
        if (r < 0)
                return r;
        if (!transaction) {
                r = sd_bus_message_append(m, "s", pairs[0].source);
                if (r >= 0 && pairs[0].target)
                        r = sd_bus_message_append(m, "s", pairs[0].target);
                if (r >= 0)
                        r = append_options(m, arg.n_job_ids > 0 ? arg.job_ids[0] : NULL, no_auto_dismiss);
        } else {
                r = sd_bus_message_open_container(m, 'a', "(sssa{sv})");
                for (size_t i = 0; r >= 0 && i < n; i++) {
                        r = sd_bus_message_open_container(m, 'r', "sssa{sv}");
                        if (r >= 0)
                                r = sd_bus_message_append(m, "sss", "backup", pairs[i].source, pairs[i].target);
                        if (r >= 0)
                                r = append_options(m, arg.n_job_ids > 0 ? arg.job_ids[i] : NULL, no_auto_dismiss);
                        if (r >= 0)
                                r = sd_bus_message_close_container(m);
                }
                if (r >= 0)
                        r = sd_bus_message_close_container(m);
                if (r >= 0 && arg.completion_mode)
                        r = sd_bus_message_append(m, "a{sv}", 1, "completion-mode", "s", arg.completion_mode);
                else if (r >= 0)
                        r = sd_bus_message_append(m, "a{sv}", 0);
        }
        if (r < 0)
                return r;
        *ret = TAKE_PTR(m);
        return 0;
}

static int read_paths(sd_bus_message *reply, bool transaction, char ***ret, size_t *ret_n) {
        char **paths = NULL;
        size_t n = 0;
        const char *p;
        int r;

        if (transaction) {
                r = sd_bus_message_read_strv(reply, &paths);
                if (r < 0)
                        return r;
                while (paths && paths[n])
                        n++;
        } else {
                r = sd_bus_message_read(reply, "o", &p);
                if (r < 0)
                        return r;
                paths = calloc(2, sizeof(char *));
                if (!paths || !(paths[0] = strdup(p)))
                        oom();
                n = 1;
        }
        *ret = paths;
        *ret_n = n;
        return 0;
}

int verb_create(sd_bus *bus) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_(watch_freep) Watch *w = NULL;
        char **paths = NULL;
        Pair *pairs = NULL;
        size_t n_pairs = 0, n_paths = 0;
        bool transaction, keep;
        int r;

        r = make_pairs(&pairs, &n_pairs);
        if (r < 0)
                return r;
        transaction = arg.command == CMD_BACKUP && (n_pairs > 1 || arg.completion_mode);
        if (transaction && arg.n_job_ids > 0 && arg.n_job_ids != n_pairs) {
                r = log_usage("%u --job-id= for %zu SOURCE TARGET pairs: give one per pair, in their order, or none.",
                              arg.n_job_ids, n_pairs);
                goto finish;
        }
        if (transaction && (arg.source_fd >= 0 || arg.target_fd >= 0 || arg.n_chain_fds > 0)) {
                r = log_usage("Descriptors (--source-fd= and the like) are for one SOURCE TARGET pair.");
                goto finish;
        }
        if (arg.format)
                for (size_t i = 0; i < n_pairs; i++)
                        warn_format(pairs[i].target ?: "", arg.format, "--format=");

        keep = keep_for_result(pairs);
        if (arg.wait) {
                r = watch_new(bus, WATCH_UNTIL_END, &w);
                if (r < 0)
                        goto finish;
        }

        r = build_call(bus, pairs, n_pairs, transaction, keep, &m);
        if (r < 0) {
                log_error("Failed to build the call: %s", strerror(-r));
                goto finish;
        }
        prepare_authorized_call();
        r = sd_bus_call(bus, m, 0, &error, &reply);
        if (r < 0) {
                r = bus_fail(&error, r, "Failed to start the job");
                creation_hint(&error);
                goto finish;
        }
        r = read_paths(reply, transaction, &paths, &n_paths);
        if (r < 0) {
                set_exit_status(EXIT_LOST);
                log_error("Unexpected answer: %s", strerror(-r));
                goto finish;
        }
        if (is_copy())
                check_target_formats(bus, pairs, n_pairs < n_paths ? n_pairs : n_paths, paths);

        if (!arg.wait) {
                for (size_t i = 0; i < n_paths; i++) {
                        _cleanup_free_ char *id = NULL, *e = NULL;
                        if (job_id_from_path(paths[i], &id) <= 0) {
                                free(id);
                                id = strdup(paths[i]);
                        }
                        if (arg.json) {
                                fputs("{\"id\":", stdout);
                                json_string(stdout, id);
                                printf(",\"object\":\"%s\"}\n", paths[i]);
                        } else {
                                e = esc(id);
                                printf("Job '%s' started (%s).\n", e, paths[i]);
                        }
                }
                r = 0;
                goto finish;
        }

        for (size_t i = 0; i < n_paths; i++) {
                r = watch_add_job(w, paths[i], NULL, keep, false);
                if (r < 0)
                        goto finish;
        }
        r = watch_run(w);

finish:
        pairs_free(pairs, n_pairs);
        if (paths)
                for (size_t i = 0; i < n_paths; i++)
                        free(paths[i]);
        free(paths);
        return r;
}
