/* SPDX-License-Identifier: LGPL-2.1-or-later */

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

static void sipround(SipHash *s) {
        s->v0 += s->v1;
        s->v1 = rotl(s->v1, 13);
        s->v1 ^= s->v0;
        s->v0 = rotl(s->v0, 32);
        s->v2 += s->v3;
        s->v3 = rotl(s->v3, 16);
        s->v3 ^= s->v2;
        s->v0 += s->v3;
        s->v3 = rotl(s->v3, 21);
        s->v3 ^= s->v0;
        s->v2 += s->v1;
        s->v1 = rotl(s->v1, 17);
        s->v1 ^= s->v2;
        s->v2 = rotl(s->v2, 32);
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

uint64_t siphash24(const void *in, size_t inlen, const uint8_t key[SIPHASH_KEY_SIZE]) {
        SipHash state;

        siphash24_init(&state, key);
        siphash24_compress(in, inlen, &state);
        return siphash24_finalize(&state);
}
