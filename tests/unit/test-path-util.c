/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Paths as strings: simplifying them, and the relative name that reaches one from a directory
 * (what commit and stream record when the layer that names a base moves to another directory). */

#include <errno.h>
#include <glib.h>
#include <stdlib.h>

#include "path-util.h"

static void assert_relative(const char *from_dir, const char *to, const char *expected) {
        char *s = NULL;

        g_assert_cmpint(path_make_relative(from_dir, to, &s), ==, 0);
        g_assert_cmpstr(s, ==, expected);
        free(s);
}

static void test_make_relative(void) {
        assert_relative("/a/b", "/a/b/c.qcow2", "c.qcow2");
        assert_relative("/a/b", "/a/c/d.qcow2", "../c/d.qcow2");
        assert_relative("/a/b/c", "/a/d.qcow2", "../../d.qcow2");
        assert_relative("/a", "/a/b/c/d.qcow2", "b/c/d.qcow2");
        assert_relative("/", "/a/b.qcow2", "a/b.qcow2");
        assert_relative("/a/b", "/c.qcow2", "../../c.qcow2");
        assert_relative("/a/b", "/a/b", ".");
        assert_relative("/a/b", "/a", "..");
        /* As the chain spells them: "//", "/./" and ".." applied lexically. */
        assert_relative("/a//b/./", "/a/b/../c/./d.qcow2", "../c/d.qcow2");
        assert_relative("/a/sub/..", "/a/base/../base/b.qcow2", "base/b.qcow2");
        /* A component is a whole name: "/a/bc" is not under "/a/b". */
        assert_relative("/a/b", "/a/bc/d.qcow2", "../bc/d.qcow2");
        assert_relative("x/y", "x/z/w", "../z/w");
        assert_relative(".", "z/w", "z/w");
}

static void test_make_relative_refused(void) {
        char *s = NULL;

        /* Nothing says how an absolute and a relative path relate, or what ".." above the start is. */
        g_assert_cmpint(path_make_relative("/a", "b/c", &s), ==, -EINVAL);
        g_assert_cmpint(path_make_relative("a", "/b/c", &s), ==, -EINVAL);
        g_assert_cmpint(path_make_relative("../a", "b", &s), ==, -EINVAL);
        g_assert_cmpint(path_make_relative("a", "../b", &s), ==, -EINVAL);
        g_assert_null(s);
}

static void test_simplify(void) {
        static const char *const cases[][2] = {
                { "/a//b/./c/../d", "/a/b/d" }, { "/..", "/" }, { "a/../..", ".." }, { "./", "." },
                { "../a/..", ".." },            { "/a/b/", "/a/b" },
        };
        for (unsigned i = 0; i < G_N_ELEMENTS(cases); i++) {
                char *s = path_simplify_dup(cases[i][0]);
                g_assert_cmpstr(s, ==, cases[i][1]);
                free(s);
        }
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/path/make-relative", test_make_relative);
        g_test_add_func("/path/make-relative-refused", test_make_relative_refused);
        g_test_add_func("/path/simplify", test_simplify);
        return g_test_run();
}
