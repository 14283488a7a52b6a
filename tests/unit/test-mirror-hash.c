/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The mirror's block hashes: mirror_siphash13_blocks() hashes eight blocks side by side where the
 * CPU has AVX-512, and a pass compares what it finds against what an earlier pass recorded, and
 * against the hash of zeroes, which are computed one block at a time. So both ways must give
 * siphash13() of every block, bit for bit: for every block size and length (whole groups of
 * eight, groups and a rest, a short last block, blocks shorter than a word), at any alignment of
 * the data, and for any key. A lane that lost a word would make a pass miss a change there. */

#include <glib.h>
#include <string.h>

#include "mirror.h"
#include "siphash24.h"

#define DATA_MAX (2U << 20)

static uint8_t *random_bytes(GRand *rand, size_t n) {
        uint8_t *p = g_malloc(n);
        for (size_t i = 0; i < n; i++)
                p[i] = (uint8_t) g_rand_int(rand);
        return p;
}

static void check_blocks(const uint8_t *data, size_t length, size_t block_size, const uint8_t key[SIPHASH_KEY_SIZE]) {
        size_t n = length / block_size + (length % block_size != 0);
        g_autofree uint64_t *got = g_new0(uint64_t, n + 1);

        got[n] = UINT64_C(0x5a5a5a5a5a5a5a5a);  /* nothing is written past the last block */
        mirror_siphash13_blocks(data, length, block_size, key, got);
        for (size_t b = 0; b < n; b++) {
                size_t len = MIN(block_size, length - b * block_size);
                uint64_t want = siphash13(data + b * block_size, len, key);
                if (got[b] != want)
                        g_error("block %zu of %zu (block size %zu, length %zu, data at +%zu): %016" G_GINT64_MODIFIER
                                "x, siphash13() gives %016" G_GINT64_MODIFIER "x",
                                b, n, block_size, length, (size_t) ((uintptr_t) data & 63), got[b], want);
        }
        g_assert_cmphex(got[n], ==, UINT64_C(0x5a5a5a5a5a5a5a5a));
}

static void test_equal_to_siphash13(void) {
        static const size_t block_sizes[] = { 1, 7, 8, 9, 100, 512, 4096, 4097, 65536 };
        g_autoptr(GRand) rand = g_rand_new_with_seed(13);
        g_autofree uint8_t *data = random_bytes(rand, DATA_MAX + 64);
        uint8_t key[SIPHASH_KEY_SIZE];

        g_test_message("blocks hashed %s", mirror_hash_vectorized() ? "eight at a time (AVX-512)" : "one at a time");
        for (unsigned k = 0; k < 4; k++) {
                for (size_t i = 0; i < sizeof(key); i++)
                        key[i] = (uint8_t) g_rand_int(rand);
                for (size_t s = 0; s < G_N_ELEMENTS(block_sizes); s++) {
                        size_t g = block_sizes[s];
                        /* Fewer blocks than lanes, one group, a group and one, two groups, and
                         * each of those with a short last block; at the start of the buffer
                         * (aligned) and at odd offsets. */
                        static const size_t counts[] = { 1, 7, 8, 9, 16, 17, 31 };
                        for (size_t c = 0; c < G_N_ELEMENTS(counts); c++)
                                for (size_t tail = 0; tail < 3; tail++) {
                                        size_t length = counts[c] * g + (tail == 0 ? 0 : tail == 1 ? 1 : g - 1);
                                        if (length > DATA_MAX)
                                                continue;
                                        check_blocks(data, length, g, key);
                                        check_blocks(data + 1 + k, length, g, key);
                                }
                }
        }
}

/* A change of one byte anywhere changes the hash of its block, and of no other. */
static void test_one_byte_changes_one_block(void) {
        g_autoptr(GRand) rand = g_rand_new_with_seed(14);
        const size_t g = 4096, n = 16, length = g * n;
        g_autofree uint8_t *data = random_bytes(rand, length);
        uint64_t before[16], after[16];
        uint8_t key[SIPHASH_KEY_SIZE] = { 1, 2, 3 };

        mirror_siphash13_blocks(data, length, g, key, before);
        for (unsigned t = 0; t < 200; t++) {
                size_t at = g_rand_int_range(rand, 0, (gint32) length);
                data[at] ^= (uint8_t) (1U << g_rand_int_range(rand, 0, 8));
                mirror_siphash13_blocks(data, length, g, key, after);
                for (size_t b = 0; b < n; b++)
                        if (b == at / g)
                                g_assert_cmphex(after[b], !=, before[b]);
                        else
                                g_assert_cmphex(after[b], ==, before[b]);
                memcpy(before, after, sizeof(before));
        }
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/mirror-hash/equal-to-siphash13", test_equal_to_siphash13);
        g_test_add_func("/mirror-hash/one-byte-changes-one-block", test_one_byte_changes_one_block);
        return g_test_run();
}
