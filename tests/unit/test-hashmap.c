/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* SipHash-2-4 against the reference vectors, and the hash map against GLib's, including keys
 * that all collide, so that probing and backward-shift deletion are exercised in every layout. */

#include <glib.h>

#include "hashmap.h"
#include "siphash24.h"

/* The reference implementation's vectors_sip64: key 00..0f, message 00..n-1. */
static const uint64_t sip_vectors[] = {
        0x726fdb47dd0e0e31, 0x74f839c593dc67fd, 0x0d6c8009d9a94f5a, 0x85676696d7fb7e2d, 0xcf2794e0277187b7,
        0x18765564cd99a68d, 0xcbc9466e58fee3ce, 0xab0200f58b01d137, 0x93f5f5799a932462, 0x9e0082df0ba9e4b0,
        0x7a5dbbc594ddb9f3, 0xf4b32f46226bada7, 0x751e8fbc860ee5fb, 0x14ea5627c0843d90, 0xf723ca908e7af2ee,
        0xa129ca6149be45e5, 0x3f2acc7f57c29bdb,
};

static void test_siphash_vectors(void) {
        uint8_t key[SIPHASH_KEY_SIZE], in[G_N_ELEMENTS(sip_vectors)];

        for (unsigned i = 0; i < sizeof(key); i++)
                key[i] = i;
        for (unsigned i = 0; i < sizeof(in); i++)
                in[i] = i;

        for (unsigned n = 0; n < G_N_ELEMENTS(sip_vectors); n++) {
                g_assert_cmphex(siphash24(in, n, key), ==, sip_vectors[n]);

                /* Fed in two parts at every split point, the result is the same. */
                for (unsigned split = 0; split <= n; split++) {
                        SipHash s;
                        siphash24_init(&s, key);
                        siphash24_compress(in, split, &s);
                        siphash24_compress(in + split, n - split, &s);
                        g_assert_cmphex(siphash24_finalize(&s), ==, sip_vectors[n]);
                }
        }
}

static void test_strings(void) {
        Hashmap *h = NULL;
        char a[] = "nightly", b[] = "nightly";

        g_assert_cmpint(hashmap_new(&string_hash_ops, &h), ==, 0);
        g_assert_null(hashmap_get(h, "nightly"));
        g_assert_null(hashmap_remove(h, "nightly"));
        g_assert_null(hashmap_get(h, NULL));
        g_assert_cmpuint(hashmap_capacity(h), ==, 0);

        g_assert_cmpint(hashmap_put(h, a, a), ==, 0);
        /* Equal content, another pointer: the same key. */
        g_assert_cmpint(hashmap_put(h, b, b), ==, -EEXIST);
        g_assert_true(hashmap_get(h, b) == a);
        g_assert_cmpuint(hashmap_size(h), ==, 1);
        g_assert_null(hashmap_get(h, "nightl"));
        g_assert_true(hashmap_remove(h, b) == a);
        g_assert_cmpuint(hashmap_size(h), ==, 0);
        g_assert_null(hashmap_free(h));
        g_assert_null(hashmap_free(NULL));
        g_assert_cmpuint(hashmap_size(NULL), ==, 0);
}

/* Keys are small integers behind pointers; 'collide' sends every key to the same slot. */
static bool collide;

static void int_hash(const void *key, SipHash *state) {
        const unsigned *k = key;
        if (!collide)
                siphash24_compress(k, sizeof(*k), state);
}

static bool int_equal(const void *a, const void *b) {
        return *(const unsigned *) a == *(const unsigned *) b;
}

static const HashOps int_hash_ops = { .hash = int_hash, .equal = int_equal };

static void check_against_glib(Hashmap *h, GHashTable *ref, const unsigned *keys, unsigned n_keys) {
        g_assert_cmpuint(hashmap_size(h), ==, g_hash_table_size(ref));
        for (unsigned i = 0; i < n_keys; i++)
                g_assert_true(hashmap_get(h, &keys[i]) == g_hash_table_lookup(ref, GUINT_TO_POINTER(keys[i])));
}

static void random_operations(gconstpointer data) {
        const unsigned n_keys = 512;
        g_autofree unsigned *keys = g_new(unsigned, n_keys);
        g_autoptr(GHashTable) ref = g_hash_table_new(NULL, NULL);
        g_autoptr(GRand) rand = g_rand_new_with_seed(42);
        Hashmap *h = NULL;

        collide = GPOINTER_TO_INT(data);
        for (unsigned i = 0; i < n_keys; i++)
                keys[i] = i;

        g_assert_cmpint(hashmap_new(&int_hash_ops, &h), ==, 0);
        for (unsigned round = 0; round < (collide ? 20000 : 200000); round++) {
                unsigned i = g_rand_int_range(rand, 0, n_keys);
                void *value = &keys[i];
                bool present = g_hash_table_contains(ref, GUINT_TO_POINTER(i));

                if (g_rand_boolean(rand)) {
                        g_assert_cmpint(hashmap_put(h, &keys[i], value), ==, present ? -EEXIST : 0);
                        g_hash_table_insert(ref, GUINT_TO_POINTER(i), value);
                } else {
                        g_assert_true(hashmap_remove(h, &keys[i]) == (present ? value : NULL));
                        g_hash_table_remove(ref, GUINT_TO_POINTER(i));
                }
                if (round % 1000 == 0)
                        check_against_glib(h, ref, keys, n_keys);
        }
        check_against_glib(h, ref, keys, n_keys);
        hashmap_free(h);
        collide = false;
}

static void test_grow_and_shrink(void) {
        const unsigned n = 10000;
        g_autofree unsigned *keys = g_new(unsigned, n);
        Hashmap *h = NULL;

        g_assert_cmpint(hashmap_new(&int_hash_ops, &h), ==, 0);
        for (unsigned i = 0; i < n; i++) {
                keys[i] = i;
                g_assert_cmpint(hashmap_put(h, &keys[i], &keys[i]), ==, 0);
                /* Never more than 3/4 full. */
                g_assert_cmpuint(hashmap_size(h) * 4, <=, hashmap_capacity(h) * 3);
        }
        g_assert_cmpuint(hashmap_capacity(h), ==, 16384);

        for (unsigned i = 0; i < n; i++) {
                g_assert_true(hashmap_remove(h, &keys[i]) == &keys[i]);
                g_assert_null(hashmap_get(h, &keys[i]));
                if (i + 1 < n)
                        g_assert_true(hashmap_get(h, &keys[i + 1]) == &keys[i + 1]);
        }
        /* Memory goes back, down to the smallest table. */
        g_assert_cmpuint(hashmap_size(h), ==, 0);
        g_assert_cmpuint(hashmap_capacity(h), ==, 8);
        hashmap_free(h);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/siphash24/reference-vectors", test_siphash_vectors);
        g_test_add_func("/hashmap/strings", test_strings);
        g_test_add_data_func("/hashmap/random-operations", GINT_TO_POINTER(false), random_operations);
        g_test_add_data_func("/hashmap/random-operations-all-colliding", GINT_TO_POINTER(true), random_operations);
        g_test_add_func("/hashmap/grow-and-shrink", test_grow_and_shrink);
        return g_test_run();
}
