/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* SipHash-2-4 (Aumasson and Bernstein), the keyed hash systemd's hashmaps use: with a secret
 * random key, a caller who picks the strings (job ids arrive over the bus) cannot make them
 * collide on purpose and turn every lookup into a walk. Incremental: feed the parts of a key one
 * after another, then finalize. */

#include <stddef.h>
#include <stdint.h>

#define SIPHASH_KEY_SIZE 16

typedef struct SipHash {
        uint64_t v0, v1, v2, v3;
        uint64_t padding;               /* bytes not yet hashed, little-endian */
        size_t inlen;
} SipHash;

void siphash24_init(SipHash *state, const uint8_t key[SIPHASH_KEY_SIZE]);
void siphash24_compress(const void *in, size_t inlen, SipHash *state);
uint64_t siphash24_finalize(SipHash *state);

/* Everything at once. */
uint64_t siphash24(const void *in, size_t inlen, const uint8_t key[SIPHASH_KEY_SIZE]);
/* SipHash-1-3: one round per word and three to finish, nearly twice as fast, with no known
 * attack; what Rust's and Python's hash tables use against inputs an attacker chooses, and what
 * the mirror compares blocks by (mirror.c says why). */
uint64_t siphash13(const void *in, size_t inlen, const uint8_t key[SIPHASH_KEY_SIZE]);
