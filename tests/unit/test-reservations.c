/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Reservations: readers share, a writer is alone, the newest holder is named, and many readers of
 * one file cost a creation no more than one does. */

#include <glib.h>
#include <stdlib.h>

#include "reservations.h"

static FileClaim claim(ino_t ino, bool write, const char *label) {
        FileClaim c = { .write = write, .label = g_strdup(label) };

        c.id.st.st_mode = S_IFREG | 0644;
        c.id.st.st_dev = 42;
        c.id.st.st_ino = ino;
        return c;
}

static ReservationSet *reserve(Reservations *r, ino_t ino, bool write, const char *holder, char **ret_error) {
        ReservationSet *s = reservation_set_new(r);
        FileClaim c = claim(ino, write, "img");
        int k;

        g_assert_nonnull(s);
        g_assert_cmpint(reservation_set_add(s, &c, 1), ==, 0);
        k = reservation_set_check(s, NULL, 0, ret_error);
        if (k < 0) {
                reservation_set_free(s);
                return NULL;
        }
        g_assert_cmpint(reservation_set_commit(s, holder, "backup"), ==, 0);
        return s;
}

static void test_readers_and_writers(void) {
        Reservations *r = reservations_new();
        g_autofree char *e1 = NULL, *e2 = NULL, *e3 = NULL;

        ReservationSet *a = reserve(r, 1, false, "a", NULL), *b = reserve(r, 1, false, "b", NULL);
        g_assert_nonnull(a);
        g_assert_nonnull(b);

        /* A writer meets the newest reader. */
        g_assert_null(reserve(r, 1, true, "w", &e1));
        g_assert_cmpstr(e1, ==, "Image 'img' is in use by job 'b' (backup)");

        /* Once the readers are gone, it is alone, and a reader meets it. */
        reservation_set_free(b);
        reservation_set_free(a);
        ReservationSet *w = reserve(r, 1, true, "w", NULL);
        g_assert_nonnull(w);
        g_assert_null(reserve(r, 1, false, "c", &e2));
        g_assert_cmpstr(e2, ==, "Image 'img' is written by job 'w' (backup)");
        g_assert_null(reserve(r, 1, true, "v", &e3));
        g_assert_cmpstr(e3, ==, "Image 'img' is in use by job 'w' (backup)");

        /* Other files are not concerned. */
        ReservationSet *o = reserve(r, 2, true, "o", NULL);
        g_assert_nonnull(o);
        reservation_set_free(o);
        reservation_set_free(w);
        reservations_free(r);
}

static void test_many_readers(void) {
        enum { N = 5000 };
        Reservations *r = reservations_new();
        ReservationSet **sets = g_new0(ReservationSet *, N);

        for (unsigned i = 0; i < N; i++) {
                g_autofree char *holder = g_strdup_printf("backup%u", i);
                sets[i] = reserve(r, 7, false, holder, NULL);
                g_assert_nonnull(sets[i]);
        }
        /* Released in any order; the key goes with the last of them (reservations_free checks). */
        for (unsigned i = 0; i < N; i += 2)
                reservation_set_free(sets[i]);
        g_autofree char *error = NULL;
        g_assert_null(reserve(r, 7, true, "w", &error));
        g_assert_cmpstr(error, ==, "Image 'img' is in use by job 'backup4999' (backup)");
        for (unsigned i = 1; i < N; i += 2)
                reservation_set_free(sets[i]);
        g_free(sets);
        reservations_free(r);
}

/* A call of the daemon's that is no job (a bitmap operation) holds a file as a job does, and is
 * named as what it is. */
static void test_call_holder(void) {
        Reservations *r = reservations_new();
        ReservationSet *s = reservation_set_new(r);
        FileClaim c = claim(3, true, "img");
        g_autofree char *e1 = NULL, *e2 = NULL;

        g_assert_cmpint(reservation_set_add(s, &c, 1), ==, 0);
        g_assert_cmpint(reservation_set_check(s, NULL, 0, NULL), ==, 0);
        g_assert_cmpint(reservation_set_commit(s, NULL, "AddBitmap() call"), ==, 0);
        g_assert_null(reserve(r, 3, false, "b", &e1));
        g_assert_cmpstr(e1, ==, "Image 'img' is written by blockjobd's AddBitmap() call");
        g_assert_null(reserve(r, 3, true, "w", &e2));
        g_assert_cmpstr(e2, ==, "Image 'img' is in use by blockjobd's AddBitmap() call");
        reservation_set_free(s);
        reservation_set_free(reserve(r, 3, true, "w", NULL));
        reservations_free(r);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/reservations/readers-and-writers", test_readers_and_writers);
        g_test_add_func("/reservations/many-readers", test_many_readers);
        g_test_add_func("/reservations/call-holder", test_call_holder);
        return g_test_run();
}
