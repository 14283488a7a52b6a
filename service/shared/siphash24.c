/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <endian.h>
#include <string.h>

#include "siphash24.h"

static inline uint64_t rotl(uint64_t x, unsigned b) {
        return (x << b) | (x >> (64 - b));
}

static inline uint64_t read_le64(const uint8_t *p) {
        uint64_t v = 0;
        for (unsigned i = 0; i < 8; i++)
                v |= (uint64_t) p[i] << (8 * i);
        return v;
}

#define SIPROUND(v0, v1, v2, v3)                                                        \
        do {                                                                            \
                v0 += v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32);               \
                v2 += v3; v3 = rotl(v3, 16); v3 ^= v2;                                  \
                v0 += v3; v3 = rotl(v3, 21); v3 ^= v0;                                  \
                v2 += v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32);               \
        } while (0)

static void sipround(SipHash *s) {
        SIPROUND(s->v0, s->v1, s->v2, s->v3);
}

static void absorb(SipHash *s, uint64_t m) {
        s->v3 ^= m;
        sipround(s);
        sipround(s);
        s->v0 ^= m;
}

void siphash24_init(SipHash *state, const uint8_t key[SIPHASH_KEY_SIZE]) {
        uint64_t k0 = read_le64(key), k1 = read_le64(key + 8);

        *state = (SipHash) {
                .v0 = 0x736f6d6570736575ULL ^ k0,
                .v1 = 0x646f72616e646f6dULL ^ k1,
                .v2 = 0x6c7967656e657261ULL ^ k0,
                .v3 = 0x7465646279746573ULL ^ k1,
        };
}

void siphash24_compress(const void *in, size_t inlen, SipHash *state) {
        const uint8_t *p = in;

        /* Bytes join the pending word one by one until it is full; whole words go straight in. */
        for (size_t i = 0; i < inlen; i++) {
                state->padding |= (uint64_t) p[i] << (8 * (state->inlen % 8));
                state->inlen++;
                if (state->inlen % 8 == 0) {
                        absorb(state, state->padding);
                        state->padding = 0;
                }
        }
}

uint64_t siphash24_finalize(SipHash *state) {
        /* The last word carries the length's low byte in its top byte. */
        absorb(state, state->padding | ((uint64_t) (state->inlen & 0xff) << 56));

        state->v2 ^= 0xff;
        for (unsigned i = 0; i < 4; i++)
                sipround(state);
        return state->v0 ^ state->v1 ^ state->v2 ^ state->v3;
}

/* All at once, c rounds per word and d to finish; always inlined, so that with constant round
 * counts the loops unroll (the mirror hashes every block it reads with this). */
static inline __attribute__((always_inline)) uint64_t siphash_cd(unsigned c, unsigned d, const void *in, size_t n,
                                                                 const uint8_t key[SIPHASH_KEY_SIZE]) {
        uint64_t k0 = read_le64(key), k1 = read_le64(key + 8);
        uint64_t v0 = k0 ^ UINT64_C(0x736f6d6570736575), v1 = k1 ^ UINT64_C(0x646f72616e646f6d),
                 v2 = k0 ^ UINT64_C(0x6c7967656e657261), v3 = k1 ^ UINT64_C(0x7465646279746573);
        const uint8_t *p = in;
        size_t i = 0;
        uint64_t w;

        for (; i + 8 <= n; i += 8) {
                memcpy(&w, p + i, sizeof(w));
                w = le64toh(w);
                v3 ^= w;
                for (unsigned r = 0; r < c; r++)
                        SIPROUND(v0, v1, v2, v3);
                v0 ^= w;
        }
        /* The last word carries the length's low byte in its top byte. */
        w = (uint64_t) n << 56;
        for (unsigned k = 0; i + k < n; k++)
                w |= (uint64_t) p[i + k] << (8 * k);
        v3 ^= w;
        for (unsigned r = 0; r < c; r++)
                SIPROUND(v0, v1, v2, v3);
        v0 ^= w;

        v2 ^= 0xff;
        for (unsigned r = 0; r < d; r++)
                SIPROUND(v0, v1, v2, v3);
        return v0 ^ v1 ^ v2 ^ v3;
}

uint64_t siphash24(const void *in, size_t inlen, const uint8_t key[SIPHASH_KEY_SIZE]) {
        return siphash_cd(2, 4, in, inlen, key);
}

uint64_t siphash13(const void *in, size_t inlen, const uint8_t key[SIPHASH_KEY_SIZE]) {
        return siphash_cd(1, 3, in, inlen, key);
}
