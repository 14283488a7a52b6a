/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* bitmap add|remove|clear|enable|disable|merge|list: the Manager's bitmap methods, one call each;
 * the changes print nothing on success, the listing a table or JSON. */

#include "args.h"
#include "bus.h"
#include "paths.h"
#include "units.h"
#include "util.h"
#include "verbs.h"

static const char *const methods[_CMD_MAX] = {
        [CMD_BITMAP_ADD] = "AddBitmap",
        [CMD_BITMAP_REMOVE] = "RemoveBitmap",
        [CMD_BITMAP_CLEAR] = "ClearBitmap",
        [CMD_BITMAP_ENABLE] = "EnableBitmap",
        [CMD_BITMAP_DISABLE] = "DisableBitmap",
        [CMD_BITMAP_MERGE] = "MergeBitmaps",
        [CMD_BITMAP_LIST] = "ListBitmaps",
};

typedef struct BitmapRow {
        char *name;
        uint32_t granularity;
        uint64_t dirty;
        char *flags;                    /* "auto,in-use" */
        char **flag_list;
} BitmapRow;

static void rows_free(BitmapRow *rows, size_t n) {
        for (size_t i = 0; i < n; i++) {
                free(rows[i].name);
                free(rows[i].flags);
                for (char **p = rows[i].flag_list; p && *p; p++)
                        free(*p);
                free(rows[i].flag_list);
        }
        free(rows);
}

static int read_rows(sd_bus_message *reply, BitmapRow **ret, size_t *ret_n) {
        BitmapRow *rows = NULL;
        size_t n = 0;
        int r;

        r = sd_bus_message_enter_container(reply, 'a', "(sutas)");
        while (r >= 0 && (r = sd_bus_message_enter_container(reply, 'r', "sutas")) > 0) {
                const char *name;
                BitmapRow *a = reallocarray(rows, n + 1, sizeof(BitmapRow));

                if (!a)
                        oom();
                rows = a;
                rows[n] = (BitmapRow) {};
                r = sd_bus_message_read(reply, "sut", &name, &rows[n].granularity, &rows[n].dirty);
                if (r >= 0)
                        r = sd_bus_message_read_strv(reply, &rows[n].flag_list);
                if (r >= 0)
                        r = sd_bus_message_exit_container(reply);
                if (r < 0)
                        break;
                rows[n].name = strdup(name);
                size_t len = 1;
                for (char **p = rows[n].flag_list; p && *p; p++)
                        len += strlen(*p) + 1;
                rows[n].flags = calloc(1, len);
                if (!rows[n].name || !rows[n].flags)
                        oom();
                for (char **p = rows[n].flag_list; p && *p; p++) {
                        if (p != rows[n].flag_list)
                                strcat(rows[n].flags, ",");
                        strcat(rows[n].flags, *p);
                }
                n++;
        }
        if (r >= 0)
                r = sd_bus_message_exit_container(reply);
        if (r < 0) {
                rows_free(rows, n);
                return r;
        }
        *ret = rows;
        *ret_n = n;
        return 0;
}

static void print_json(const BitmapRow *rows, size_t n) {
        fputc('[', stdout);
        for (size_t i = 0; i < n; i++) {
                fputs(i > 0 ? ",{\"name\":" : "{\"name\":", stdout);
                json_string(stdout, rows[i].name);
                printf(",\"granularity\":%" PRIu32 ",\"dirty\":%" PRIu64 ",\"flags\":[", rows[i].granularity,
                       rows[i].dirty);
                for (char **p = rows[i].flag_list; p && *p; p++) {
                        if (p != rows[i].flag_list)
                                fputc(',', stdout);
                        json_string(stdout, *p);
                }
                fputs("]}", stdout);
        }
        puts("]");
}

static char *size_cell(uint64_t bytes) {
        char buf[FORMAT_BYTES_MAX];
        char *s = NULL;

        if (arg.bytes ? asprintf(&s, "%" PRIu64, bytes) < 0 : !(s = strdup(format_bytes(buf, bytes))))
                oom();
        return s;
}

static void print_table(const BitmapRow *rows, size_t n) {
        static const char *const columns[] = { "NAME", "GRANULARITY", "DIRTY", "FLAGS" };
        size_t widths[ELEMENTSOF(columns)];
        char *(*cells)[ELEMENTSOF(columns)];

        if (n == 0) {
                puts("No bitmaps.");
                return;
        }
        cells = calloc(n, sizeof(*cells));
        if (!cells)
                oom();
        for (size_t c = 0; c < ELEMENTSOF(columns); c++)
                widths[c] = strlen(columns[c]);
        for (size_t i = 0; i < n; i++) {
                cells[i][0] = esc(rows[i].name);
                cells[i][1] = size_cell(rows[i].granularity);
                cells[i][2] = size_cell(rows[i].dirty);
                cells[i][3] = esc(rows[i].flags);
                for (size_t c = 0; c < ELEMENTSOF(columns); c++)
                        if (strlen(cells[i][c]) > widths[c])
                                widths[c] = strlen(cells[i][c]);
        }
        printf("%-*s  %*s  %*s  %s\n", (int) widths[0], columns[0], (int) widths[1], columns[1], (int) widths[2],
               columns[2], columns[3]);
        for (size_t i = 0; i < n; i++) {
                printf("%-*s  %*s  %*s  %s\n", (int) widths[0], cells[i][0], (int) widths[1], cells[i][1],
                       (int) widths[2], cells[i][2], cells[i][3]);
                for (size_t c = 0; c < ELEMENTSOF(columns); c++)
                        free(cells[i][c]);
        }
        free(cells);
}

/* AddBitmap's options, as the command line gave them. */
static int append_add_options(sd_bus_message *m) {
        int r;

        r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0 && arg.granularity > 0)
                r = sd_bus_message_append(m, "{sv}", "granularity", "u", arg.granularity);
        if (r >= 0 && arg.disabled)
                r = sd_bus_message_append(m, "{sv}", "disabled", "b", 1);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        return r;
}

int verb_bitmap(sd_bus *bus) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_free_ char *image = NULL, *e_image = NULL;
        Command c = arg.command;
        int r;

        r = path_make_absolute(arg.args[0], &image);
        if (r < 0) {
                _cleanup_free_ char *e = esc(arg.args[0]);
                return log_usage("Invalid IMAGE '%s': %s.", e, strerror(-r));
        }

        r = sd_bus_message_new_method_call(bus, &m, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, methods[c]);
        if (r >= 0)
                r = sd_bus_message_append(m, "s", image);
        if (r >= 0 && c != CMD_BITMAP_LIST)
                r = sd_bus_message_append(m, "s", arg.args[1]);
        if (r >= 0 && c == CMD_BITMAP_ADD)
                r = append_add_options(m);
        if (r >= 0 && c == CMD_BITMAP_MERGE)
                r = sd_bus_message_append_strv(m, arg.args + 2);
        if (r < 0)
                return log_error("Failed to build the call: %s", strerror(-r));

        if (c != CMD_BITMAP_LIST)
                prepare_authorized_call();
        r = sd_bus_call(bus, m, 0, &error, &reply);
        e_image = esc(image);
        if (r < 0 && c == CMD_BITMAP_LIST)
                return bus_fail(&error, r, "Cannot list the bitmaps of '%s'", e_image);
        if (r < 0) {
                _cleanup_free_ char *e_name = esc(arg.args[1]);
                return bus_fail(&error, r, "Cannot %s bitmap '%s' of '%s'", commands[c].name + strlen("bitmap "),
                                e_name, e_image);
        }
        if (c != CMD_BITMAP_LIST)
                return 0;

        BitmapRow *rows = NULL;
        size_t n = 0;
        r = read_rows(reply, &rows, &n);
        if (r < 0) {
                set_exit_status(EXIT_LOST);
                return log_error("Could not read the answer: %s", strerror(-r));
        }
        if (arg.json)
                print_json(rows, n);
        else
                print_table(rows, n);
        rows_free(rows, n);
        return 0;
}
