/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The mirror against what a guest or an image header controls: blocks a guest crafts to look
 * unchanged or zero to the change detection, an image whose header claims a huge size, and a
 * qcow2 source that another process is writing. */

#include <fcntl.h>
#include <stdio.h>
#include <gio/gio.h>
#include <unistd.h>

#include "driver-fixture.h"
#include "file-util.h"
#include "lock.h"
#include "driver-open.h"
#include "siphash24.h"
#include "qemu-oracle.h"

#define BLOCK (64 * KiB)
#define WORDS (BLOCK / 8)




/* ---- SipHash against its reference vectors ---------------------------------------------------- */

/* Key 00 01 .. 0f, message i the bytes 00 01 .. i-1: SipHash-2-4 from the reference implementation
 * that accompanies the paper (vectors.h, the 64-bit output read as little-endian), SipHash-1-3
 * from Rust's libcore tests (the hasher behind its HashMap). Lengths 0 to 63 reach every tail
 * length and up to seven full words. */
static const uint64_t siphash24_vectors[64] = {
        0x726fdb47dd0e0e31, 0x74f839c593dc67fd, 0x0d6c8009d9a94f5a, 0x85676696d7fb7e2d,
        0xcf2794e0277187b7, 0x18765564cd99a68d, 0xcbc9466e58fee3ce, 0xab0200f58b01d137,
        0x93f5f5799a932462, 0x9e0082df0ba9e4b0, 0x7a5dbbc594ddb9f3, 0xf4b32f46226bada7,
        0x751e8fbc860ee5fb, 0x14ea5627c0843d90, 0xf723ca908e7af2ee, 0xa129ca6149be45e5,
        0x3f2acc7f57c29bdb, 0x699ae9f52cbe4794, 0x4bc1b3f0968dd39c, 0xbb6dc91da77961bd,
        0xbed65cf21aa2ee98, 0xd0f2cbb02e3b67c7, 0x93536795e3a33e88, 0xa80c038ccd5ccec8,
        0xb8ad50c6f649af94, 0xbce192de8a85b8ea, 0x17d835b85bbb15f3, 0x2f2e6163076bcfad,
        0xde4daaaca71dc9a5, 0xa6a2506687956571, 0xad87a3535c49ef28, 0x32d892fad841c342,
        0x7127512f72f27cce, 0xa7f32346f95978e3, 0x12e0b01abb051238, 0x15e034d40fa197ae,
        0x314dffbe0815a3b4, 0x027990f029623981, 0xcadcd4e59ef40c4d, 0x9abfd8766a33735c,
        0x0e3ea96b5304a7d0, 0xad0c42d6fc585992, 0x187306c89bc215a9, 0xd4a60abcf3792b95,
        0xf935451de4f21df2, 0xa9538f0419755787, 0xdb9acddff56ca510, 0xd06c98cd5c0975eb,
        0xe612a3cb9ecba951, 0xc766e62cfcadaf96, 0xee64435a9752fe72, 0xa192d576b245165a,
        0x0a8787bf8ecb74b2, 0x81b3e73d20b49b6f, 0x7fa8220ba3b2ecea, 0x245731c13ca42499,
        0xb78dbfaf3a8d83bd, 0xea1ad565322a1a0b, 0x60e61c23a3795013, 0x6606d7e446282b93,
        0x6ca4ecb15c5f91e1, 0x9f626da15c9625f3, 0xe51b38608ef25f57, 0x958a324ceb064572
};

static const uint64_t siphash13_vectors[64] = {
        0xabac0158050fc4dc, 0xc9f49bf37d57ca93, 0x82cb9b024dc7d44d, 0x8bf80ab8e7ddf7fb,
        0xcf75576088d38328, 0xdef9d52f49533b67, 0xc50d2b50c59f22a7, 0xd3927d989bb11140,
        0x369095118d299a8e, 0x25a48eb36c063de4, 0x79de85ee92ff097f, 0x70c118c1f94dc352,
        0x78a384b157b4d9a2, 0x306f760c1229ffa7, 0x605aa111c0f95d34, 0xd320d86d2a519956,
        0xcc4fdd1a7d908b66, 0x9cf2689063dbd80c, 0x8ffc389cb473e63e, 0xf21f9de58d297d1c,
        0xc0dc2f46a6cce040, 0xb992abfe2b45f844, 0x7ffe7b9ba320872e, 0x525a0e7fdae6c123,
        0xf464aeb267349c8c, 0x45cd5928705b0979, 0x3a3e35e3ca9913a5, 0xa91dc74e4ade3b35,
        0xfb0bed02ef6cd00d, 0x88d93cb44ab1e1f4, 0x540f11d643c5e663, 0x2370dd1f8c21d1bc,
        0x81157b6c16a7b60d, 0x4d54b9e57a8ff9bf, 0x759f12781f2a753e, 0xcea1a3bebf186b91,
        0x2cf508d3ada26206, 0xb6101c2da3c33057, 0xb3f47496ae3a36a1, 0x626b57547b108392,
        0xc1d2363299e41531, 0x667cc1923f1ad944, 0x65704ffec8138825, 0x24f280d1c28949a6,
        0xc2ca1cedfaf8876b, 0xc2164bfc9f042196, 0xa16e9c9368b1d623, 0x49fb169c8b5114fd,
        0x9f3143f8df074c46, 0xc6fdaf2412cc86b3, 0x7eaf49d10a52098f, 0x1cf313559d292f9a,
        0xc44a30dda2f41f12, 0x36fae98943a71ed0, 0x318fb34c73f0bce6, 0xa27abf3670a7e980,
        0xb4bcc0db243c6d75, 0x23f8d852fdb71513, 0x8f035f4da67d8a08, 0xd89cd0e5b7e8f148,
        0xf6f4e6bcf7a644ee, 0xaec59ad80f1837f2, 0xc3b2f6154b6694e0, 0x9d199062b7bbb3a8
};

static void test_siphash_vectors(void) {
        uint8_t key[16], msg[64];

        for (unsigned i = 0; i < sizeof(key); i++)
                key[i] = i;
        for (unsigned i = 0; i < sizeof(msg); i++)
                msg[i] = i;
        for (unsigned n = 0; n < 64; n++) {
                g_assert_cmphex(siphash24(msg, n, key), ==, siphash24_vectors[n]);
                g_assert_cmphex(siphash13(msg, n, key), ==, siphash13_vectors[n]);
        }
        /* The paper's worked example (its appendix A): 15 bytes under the same key. */
        g_assert_cmphex(siphash24(msg, 15, key), ==, UINT64_C(0xa129ca6149be45e5));
}

/* ---- blocks crafted against an unkeyed hash ----------------------------------------------------- */

/* The hash the mirror compared blocks by before it was keyed: a multiply-rotate hash over 8-byte
 * words with public constants. Every word step is invertible, so whoever writes a block (a guest)
 * can choose its last word to bring the state to any value: to the state of a block of zeroes, or
 * to that of the block's previous content. The tests below craft such blocks. */
#define M1 UINT64_C(0x87c37b91114253d5)
#define M2 UINT64_C(0x4cf5ad432745937f)
#define ADD UINT64_C(0x52dce729)

static uint64_t rotl(uint64_t x, unsigned r) {
        return (x << r) | (x >> (64 - r));
}

static uint64_t rotr(uint64_t x, unsigned r) {
        return (x >> r) | (x << (64 - r));
}

static uint64_t inverse(uint64_t odd) {
        uint64_t x = odd;
        for (unsigned i = 0; i < 6; i++)
                x *= 2 - odd * x;
        return x;
}

static uint64_t old_state(const uint64_t *w, size_t n_words) {
        uint64_t h = UINT64_C(0x9e3779b97f4a7c15) ^ ((uint64_t) BLOCK * M2);
        for (size_t i = 0; i < n_words; i++)
                h = rotl(h ^ (rotl(w[i] * M1, 31) * M2), 27) * 5 + ADD;
        return h;
}

/* Makes the last word of 'w' bring the old hash's state to that of 'like' (the finalization
 * depends on that state only, so both blocks then hash alike). */
static void collide(uint64_t w[WORDS], const uint64_t like[WORDS]) {
        uint64_t want = old_state(like, WORDS), before = old_state(w, WORDS - 1);
        uint64_t k = rotr((want - ADD) * inverse(5), 27) ^ before;

        w[WORDS - 1] = rotr(k * inverse(M2), 31) * inverse(M1);
        g_assert_cmpuint(old_state(w, WORDS), ==, want);
        g_assert_true(memcmp(w, like, BLOCK) != 0);
}

static void fill_random(uint64_t *w, size_t n, guint32 seed) {
        g_autoptr(GRand) rand = g_rand_new_with_seed(seed);
        for (size_t i = 0; i < n; i++)
                w[i] = (uint64_t) g_rand_int(rand) << 32 | g_rand_int(rand);
}

static void test_block_like_zeroes(Fixture *f, gconstpointer data) {
        TestMirrorParams mp = { .source = f->source, .target = f->target };
        g_autofree uint64_t *zero = g_new0(uint64_t, WORDS), *w = g_new(uint64_t, WORDS);
        Job *j;

        /* A guest's block that an unkeyed hash takes for zeroes: the first copy, which starts from
         * a target of zeroes, would skip it, and a later pass would write it as zeroes. */
        fill_random(w, WORDS, 1);
        collide(w, zero);
        make_sparse_file(f->source, 4 * BLOCK, NULL, 0, 1);
        write_at(f->source, BLOCK, w, BLOCK);

        j = driver_fixture_start_mirror(f, &mp, true);
        test_loop_run_until_status(&f->loop, j, JOB_STATUS_READY);
        /* The same block written again while ready, elsewhere: a change that must be copied. */
        Mirror *m = job_driver_data(j);
        uint64_t passes = mirror_passes(m);
        write_at(f->source, 3 * BLOCK, w, BLOCK);
        driver_fixture_wait_for_passes(f, m, passes + 1);
        g_assert_cmpint(job_complete(j, NULL), ==, 0);
        test_loop_run_until_empty(&f->loop);
        g_assert_cmpstr(f->events->str, ==, "created running ready waiting pending concluded null ");
        assert_same_content(f->source, f->target);
}

static void test_block_like_before(Fixture *f, gconstpointer data) {
        TestMirrorParams mp = { .source = f->source, .target = f->target };
        g_autofree uint64_t *before = g_new(uint64_t, WORDS), *after = g_new(uint64_t, WORDS);
        Mirror *m;
        Job *j;

        /* A block that changes into one the unkeyed hash cannot tell from what it was. */
        fill_random(before, WORDS, 2);
        fill_random(after, WORDS, 3);
        collide(after, before);
        make_sparse_file(f->source, 4 * BLOCK, NULL, 0, 1);
        write_at(f->source, 2 * BLOCK, before, BLOCK);

        j = driver_fixture_start_mirror(f, &mp, true);
        m = job_driver_data(j);
        test_loop_run_until_status(&f->loop, j, JOB_STATUS_READY);
        write_at(f->source, 2 * BLOCK, after, BLOCK);
        driver_fixture_wait_for_passes(f, m, 2);
        g_assert_cmpint(job_complete(j, NULL), ==, 0);
        test_loop_run_until_empty(&f->loop);
        g_assert_cmpstr(f->events->str, ==, "created running ready waiting pending concluded null ");
        assert_same_content(f->source, f->target);
}

/* ---- memory that a header claims ---------------------------------------------------------------- */

static uint64_t resident_bytes(void) {
        g_autofree char *text = NULL;
        unsigned long size, resident;

        g_assert_true(g_file_get_contents("/proc/self/statm", &text, NULL, NULL));
        g_assert_cmpint(sscanf(text, "%lu %lu", &size, &resident), ==, 2);
        return (uint64_t) resident * (uint64_t) sysconf(_SC_PAGESIZE);
}

static void test_huge_claim_small_granularity(Fixture *f, gconstpointer data) {
        TestMirrorParams mp = { .source = f->source, .target = f->target, .granularity = 512 };
        g_autofree char *error = NULL, *expected = NULL;
        Mirror *m = NULL;

        /* 196 KiB on disk, 64 GiB claimed: at 512 bytes a block, 1 GiB of hashes. */
        g_free(oracle_run("qemu-img create -q -f qcow2 %s 64G", f->source));
        g_assert_cmpint(test_mirror_open(&mp, &m, &error), ==, -E2BIG);
        g_assert_null(m);
        expected = g_strdup_printf("Mirroring '%s' (64 GiB) in blocks of 512 B would take up to 1 GiB of memory "
                                   "to track them, more than the 64 MiB allowed: use a granularity of at least 8 KiB",
                                   f->source);
        g_assert_cmpstr(error, ==, expected);
        /* Refused before the target was made. */
        assert_dir_holds(f->dir, (const char *const[]) { "source.img", NULL });
}

static void test_huge_claim_default(Fixture *f, gconstpointer data) {
        TestMirrorParams mp = { .source = f->source, .target = f->target };
        uint64_t before;
        Mirror *m;
        Job *j;

        g_free(oracle_run("qemu-img create -q -f qcow2 %s 64G", f->source));
        before = resident_bytes();
        j = driver_fixture_start_mirror(f, &mp, true);
        m = job_driver_data(j);
        g_assert_cmpuint(mirror_granularity(m), ==, 64 * KiB);
        /* At worst one hash per block (1 Mi blocks) and the page index; the block buffer is
         * the worker thread's, not the job's. */
        g_assert_cmpuint(mirror_memory_estimate(m), >=, 8 * MiB);
        g_assert_cmpuint(mirror_memory_estimate(m), <=, 8 * MiB + 128 * KiB);

        /* The copy of an empty image copies nothing, and keeps nothing per block. */
        test_loop_run_until_status(&f->loop, j, JOB_STATUS_READY);
        uint64_t after = resident_bytes(), grown = after - MIN(before, after);
        g_test_message("resident memory grew by %" G_GUINT64_FORMAT " KiB", (guint64) (grown / KiB));
        g_assert_cmpuint(grown, <, 2 * MiB);
        g_assert_cmpint(job_user_cancel(j, true, NULL), ==, 0);
        test_loop_run_until_empty(&f->loop);
}

static void test_default_granularity_follows_size(Fixture *f, gconstpointer data) {
        TestMirrorParams mp = { .source = f->source, .target = f->target };
        g_autofree char *error = NULL, *expected = NULL;
        Mirror *m = NULL;

        /* Beyond 512 GiB, 64 KiB blocks would take more than the cap: the blocks grow instead. */
        g_free(oracle_run("qemu-img create -q -f qcow2 %s 1T", f->source));
        g_assert_cmpint(test_mirror_open(&mp, &m, &error), ==, 0);
        g_assert_cmpuint(mirror_granularity(m), ==, 128 * KiB);
        g_assert_cmpuint(mirror_memory_estimate(m), <=, 64 * MiB + 256 * KiB);
        mirror_free(m);
        m = NULL;

        /* ...up to the largest granularity, 64 MiB, which covers 512 TiB. */
        g_free(oracle_run("qemu-img create -q -f qcow2 %s 1P", f->source));
        g_assert_cmpint(test_mirror_open(&mp, &m, &error), ==, -E2BIG);
        g_assert_null(m);
        expected = g_strdup_printf("Mirroring '%s' (1 PiB) in blocks of 64 MiB (the largest granularity) would take "
                                   "up to 128 MiB of memory to track them, more than the 64 MiB allowed",
                                   f->source);
        g_assert_cmpstr(error, ==, expected);
        assert_dir_holds(f->dir, (const char *const[]) { "source.img", NULL });
}

/* ---- work that a header claims ---------------------------------------------------------------- */

static void test_step_bounded_in_time(Fixture *f, gconstpointer data) {
        TestMirrorParams mp = { .source = f->source, .target = f->target, .granularity = 8 * KiB };
        uint64_t progress = 0, steps = 0;
        Mirror *m = NULL;

        /* 64 GiB claimed, nothing in it: 8 Mi blocks that need no read. A step used to count only
         * what it read, so one step went through all of them, however long that took, while the
         * job could not be paused or cancelled. */
        g_free(oracle_run("qemu-img create -q -f qcow2 %s 64G", f->source));
        g_assert_cmpint(test_mirror_open(&mp, &m, NULL), ==, 0);
        for (bool ready = false; !ready; steps++) {
                JobStepInput in = {};
                JobStepResult out = {};
                gint64 start = g_get_monotonic_time();

                mirror_driver.step(NULL, m, &in, &out);
                g_assert_false(out.finished);
                g_assert_false(out.io_error.set);
                /* STEP_TIME_NS (20 ms), with room for a slow machine. */
                g_assert_cmpint(g_get_monotonic_time() - start, <, 500 * 1000);
                progress += out.progress;
                ready = out.ready;
        }
        g_test_message("%" G_GUINT64_FORMAT " steps", (guint64) steps);
        g_assert_cmpuint(steps, >, 1);
        g_assert_cmpuint(progress, ==, 64 * 1024 * MiB);
        mirror_free(m);
}

/* ---- a qcow2 source that another process writes -------------------------------------------------- */




static char *writer_refusal(const char *path) {
        return g_strdup_printf("Image '%s' is a qcow2 image that another process (a running QEMU?) is writing; its "
                               "metadata lives in that process's memory, so a mirror of it cannot be consistent: "
                               "mirror it from inside QEMU (drive-mirror), or stop the writer",
                               path);
}

static void test_lock_held_by_others(Fixture *f, gconstpointer data) {
        GSubprocess *qemu;
        int fd;

        g_free(oracle_run("qemu-img create -q -f qcow2 %s 4M", f->source));
        fd = open(f->source, O_RDONLY | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(image_lock_held_by_others(fd, IMAGE_PERM_ALL), ==, 0);

        qemu = oracle_qemu_io_hold(f->source, "qcow2", true);
        g_assert_cmpint(image_lock_held_by_others(fd, IMAGE_PERM_WRITE), ==, 0);
        g_assert_cmpint(image_lock_held_by_others(fd, IMAGE_PERM_CONSISTENT_READ), ==, 1);
        oracle_qemu_io_release(qemu);

        qemu = oracle_qemu_io_hold(f->source, "qcow2", false);
        g_assert_cmpint(image_lock_held_by_others(fd, IMAGE_PERM_WRITE), ==, 1);
        g_assert_cmpint(image_lock_held_by_others(fd, IMAGE_PERM_RESIZE | IMAGE_PERM_WRITE), ==, 1);
        oracle_qemu_io_release(qemu);
        g_assert_cmpint(image_lock_held_by_others(fd, IMAGE_PERM_ALL), ==, 0);

        /* What this open file description holds itself does not count. */
        struct flock fl = { .l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 101, .l_len = 1 };
        g_assert_cmpint(fcntl(fd, F_OFD_SETLK, &fl), ==, 0);
        g_assert_cmpint(image_lock_held_by_others(fd, IMAGE_PERM_WRITE), ==, 0);
        close(fd);
}

static void test_qcow2_writer_refused(Fixture *f, gconstpointer data) {
        TestMirrorParams mp = { .source = f->source, .target = f->target };
        g_autofree char *error = NULL, *expected = writer_refusal(f->source);
        GSubprocess *qemu;
        Mirror *m = NULL;

        g_free(oracle_run("qemu-img create -q -f qcow2 %s 4M", f->source));
        qemu = oracle_qemu_io_hold(f->source, "qcow2", false);
        g_assert_cmpint(test_mirror_open(&mp, &m, &error), ==, -EBUSY);
        g_assert_null(m);
        g_assert_cmpstr(error, ==, expected);
        assert_dir_holds(f->dir, (const char *const[]) { "source.img", NULL });
        oracle_qemu_io_release(qemu);

        /* Without the writer, it may. */
        g_clear_pointer(&error, g_free);
        g_assert_cmpint(test_mirror_open(&mp, &m, &error), ==, 0);
        mirror_free(m);
}

static void test_other_holders_allowed(Fixture *f, gconstpointer data) {
        TestMirrorParams mp = { .source = f->source, .target = f->target };
        GSubprocess *qemu;
        Mirror *m = NULL;

        /* A raw source being written is what a mirror is for. */
        g_free(oracle_run("qemu-img create -q -f raw %s 4M", f->source));
        qemu = oracle_qemu_io_hold(f->source, "raw", false);
        g_assert_cmpint(test_mirror_open(&mp, &m, NULL), ==, 0);
        mirror_free(m);
        oracle_qemu_io_release(qemu);

        /* A qcow2 source that QEMU only reads keeps still. */
        g_assert_cmpint(unlink(f->source), ==, 0);
        g_free(oracle_run("qemu-img create -q -f qcow2 %s 4M", f->source));
        qemu = oracle_qemu_io_hold(f->source, "qcow2", true);
        g_assert_cmpint(test_mirror_open(&mp, &m, NULL), ==, 0);
        mirror_free(m);
        oracle_qemu_io_release(qemu);
}

static void test_qcow2_writer_at_complete(Fixture *f, gconstpointer data) {
        TestMirrorParams mp = { .source = f->source, .target = f->target };
        g_autofree char *expected = NULL, *refusal = writer_refusal(f->source);
        GSubprocess *qemu;
        Job *j;

        /* A QEMU that starts writing the source after the mirror did: the last pass, the one that
         * would become the copy, is refused rather than published half-torn. */
        g_free(oracle_run("qemu-img create -q -f qcow2 %s 4M", f->source));
        g_free(oracle_run("qemu-io -f qcow2 -c 'write -P 7 0 1M' %s", f->source));
        j = driver_fixture_start_mirror(f, &mp, true);
        test_loop_run_until_status(&f->loop, j, JOB_STATUS_READY);
        qemu = oracle_qemu_io_hold(f->source, "qcow2", false);
        g_assert_cmpint(job_complete(j, NULL), ==, 0);
        test_loop_run_until_empty(&f->loop);
        oracle_qemu_io_release(qemu);
        expected = g_strdup_printf("created running ready aborting concluded (%s) null ", refusal);
        g_assert_cmpstr(f->events->str, ==, expected);
        assert_dir_holds(f->dir, (const char *const[]) { "source.img", NULL });
}

#define MIRROR_TEST(path, fn) g_test_add(path, Fixture, NULL, driver_fixture_setup, fn, driver_fixture_teardown)

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/mirror-hostile/siphash-vectors", test_siphash_vectors);
        MIRROR_TEST("/mirror-hostile/block-like-zeroes", test_block_like_zeroes);
        MIRROR_TEST("/mirror-hostile/block-like-before", test_block_like_before);
        MIRROR_TEST("/mirror-hostile/huge-claim-small-granularity", test_huge_claim_small_granularity);
        MIRROR_TEST("/mirror-hostile/huge-claim-default", test_huge_claim_default);
        MIRROR_TEST("/mirror-hostile/default-granularity-follows-size", test_default_granularity_follows_size);
        MIRROR_TEST("/mirror-hostile/step-bounded-in-time", test_step_bounded_in_time);
        MIRROR_TEST("/mirror-hostile/lock-held-by-others", test_lock_held_by_others);
        MIRROR_TEST("/mirror-hostile/qcow2-writer-refused", test_qcow2_writer_refused);
        MIRROR_TEST("/mirror-hostile/other-holders-allowed", test_other_holders_allowed);
        MIRROR_TEST("/mirror-hostile/qcow2-writer-at-complete", test_qcow2_writer_at_complete);
        return g_test_run();
}
