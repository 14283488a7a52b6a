/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "util.h"

#include "escape.h"

int exit_status = EXIT_OK;

void set_exit_status(int status) {
        if (exit_status == EXIT_OK)
                exit_status = status;
}

static void log_va(const char *prefix, const char *format, va_list ap) {
        fflush(stdout);
        fprintf(stderr, "%s: %s", program_invocation_short_name, prefix);
        vfprintf(stderr, format, ap);
        fputc('\n', stderr);
}

int log_error(const char *format, ...) {
        va_list ap;

        va_start(ap, format);
        log_va("", format, ap);
        va_end(ap);
        return -EINVAL;
}

int log_warning(const char *format, ...) {
        va_list ap;

        va_start(ap, format);
        log_va("warning: ", format, ap);
        va_end(ap);
        return 0;
}

int log_usage(const char *format, ...) {
        va_list ap;

        va_start(ap, format);
        log_va("", format, ap);
        va_end(ap);
        set_exit_status(EXIT_USAGE);
        return -EINVAL;
}

void oom(void) {
        log_error("Out of memory.");
        exit(EXIT_LOST);
}

char *esc(const char *s) {
        char *e = escape_untrusted(s ?: "");
        if (!e)
                oom();
        return e;
}

int exit_status_for_bus_error(const sd_bus_error *error) {
        static const struct {
                const char *name;
                int status;
        } table[] = {
                { SD_BUS_ERROR_ACCESS_DENIED, EXIT_NOT_AUTHORIZED },
                { SD_BUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED, EXIT_NOT_AUTHORIZED },
                { "org.freedesktop.PolicyKit1.Error.NotAuthorized", EXIT_NOT_AUTHORIZED },
                { SD_BUS_ERROR_SERVICE_UNKNOWN, EXIT_LOST },
                { SD_BUS_ERROR_NAME_HAS_NO_OWNER, EXIT_LOST },
                { SD_BUS_ERROR_NO_REPLY, EXIT_LOST },
                { SD_BUS_ERROR_TIMEOUT, EXIT_LOST },
                { SD_BUS_ERROR_DISCONNECTED, EXIT_LOST },
                { SD_BUS_ERROR_NO_SERVER, EXIT_LOST },
                { SD_BUS_ERROR_NO_MEMORY, EXIT_LOST },
                { "org.freedesktop.DBus.Error.Spawn.Failed", EXIT_LOST },
                { "org.freedesktop.DBus.Error.Spawn.ChildExited", EXIT_LOST },
                { "org.freedesktop.DBus.Error.Spawn.ChildSignaled", EXIT_LOST },
                { "org.freedesktop.DBus.Error.Spawn.ServiceNotFound", EXIT_LOST },
        };

        if (!sd_bus_error_is_set(error))
                return EXIT_LOST;
        for (size_t i = 0; i < ELEMENTSOF(table); i++)
                if (sd_bus_error_has_name(error, table[i].name))
                        return table[i].status;
        return EXIT_REFUSED;
}

int bus_fail(const sd_bus_error *error, int r, const char *what, ...) {
        _cleanup_free_ char *w = NULL;
        va_list ap;

        va_start(ap, what);
        if (vasprintf(&w, what, ap) < 0)
                oom();
        va_end(ap);

        if (sd_bus_error_is_set(error)) {
                _cleanup_free_ char *message = esc(error->message ?: error->name);
                log_error("%s: %s", w, message);
        } else
                log_error("%s: %s", w, strerror(r < 0 ? -r : EIO));
        set_exit_status(exit_status_for_bus_error(error));
        return r < 0 ? r : -EIO;
}

void json_string(FILE *f, const char *s) {
        _cleanup_free_ char *e = esc(s);

        fputc('"', f);
        for (const char *p = e; *p; p++) {
                if (*p == '"' || *p == '\\')
                        fputc('\\', f);
                fputc(*p, f);
        }
        fputc('"', f);
}
