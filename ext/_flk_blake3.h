/* A small portable BLAKE3 (hash mode, 32-byte output) written from the BLAKE3
 * specification, for the domain-separated Merkle scheme. Scalar only: Merkle leaves are
 * short (one or two BLAKE3 chunks), so per-leaf SIMD would not help and the leaves are
 * spread over threads instead. Checked against the `blake3` package in
 * tests/kernels/test_merkle.py. */
#ifndef FLK_BLAKE3_H
#define FLK_BLAKE3_H
#include <stdint.h>
#include <string.h>

enum { FLK_B3_CHUNK_START = 1, FLK_B3_CHUNK_END = 2, FLK_B3_PARENT = 4, FLK_B3_ROOT = 8 };

static const uint32_t FLK_B3_IV[8] = {0x6A09E667u, 0xBB67AE85u, 0x3C6EF372u, 0xA54FF53Au,
                                      0x510E527Fu, 0x9B05688Cu, 0x1F83D9ABu, 0x5BE0CD19u};
/* Message word order of round r: the spec's permutation
 * {2,6,3,10,7,0,4,13,1,11,12,5,9,14,15,8} applied r times, written out in
 * flk_b3_compress so that no round copies the message. */

static inline uint32_t flk_rotr32(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

#define FLK_B3_G(a, b, c, d, x, y)                  \
    do {                                            \
        s[a] = s[a] + s[b] + (x);                   \
        s[d] = flk_rotr32(s[d] ^ s[a], 16);         \
        s[c] = s[c] + s[d];                         \
        s[b] = flk_rotr32(s[b] ^ s[c], 12);         \
        s[a] = s[a] + s[b] + (y);                   \
        s[d] = flk_rotr32(s[d] ^ s[a], 8);          \
        s[c] = s[c] + s[d];                         \
        s[b] = flk_rotr32(s[b] ^ s[c], 7);          \
    } while (0)

/* One round with literal message indices, so m[] stays in registers. */
#define FLK_B3_ROUND(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15) \
    do {                                                                                 \
        FLK_B3_G(0, 4, 8, 12, m[a0], m[a1]);                                             \
        FLK_B3_G(1, 5, 9, 13, m[a2], m[a3]);                                             \
        FLK_B3_G(2, 6, 10, 14, m[a4], m[a5]);                                            \
        FLK_B3_G(3, 7, 11, 15, m[a6], m[a7]);                                            \
        FLK_B3_G(0, 5, 10, 15, m[a8], m[a9]);                                            \
        FLK_B3_G(1, 6, 11, 12, m[a10], m[a11]);                                          \
        FLK_B3_G(2, 7, 8, 13, m[a12], m[a13]);                                           \
        FLK_B3_G(3, 4, 9, 14, m[a14], m[a15]);                                           \
    } while (0)

/* out = first 8 words of the compression output (the chaining value). */
static void flk_b3_compress(const uint32_t cv[8], const uint8_t block[64], uint64_t counter,
                            uint32_t block_len, uint32_t flags, uint32_t out[8])
{
    uint32_t m[16], s[16];
    int i;
    for (i = 0; i < 16; i++)  /* message words are little-endian */
        m[i] = (uint32_t)block[4 * i] | ((uint32_t)block[4 * i + 1] << 8) |
               ((uint32_t)block[4 * i + 2] << 16) | ((uint32_t)block[4 * i + 3] << 24);
    for (i = 0; i < 8; i++) s[i] = cv[i];
    s[8] = FLK_B3_IV[0]; s[9] = FLK_B3_IV[1]; s[10] = FLK_B3_IV[2]; s[11] = FLK_B3_IV[3];
    s[12] = (uint32_t)counter; s[13] = (uint32_t)(counter >> 32);
    s[14] = block_len; s[15] = flags;
    FLK_B3_ROUND(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    FLK_B3_ROUND(2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8);
    FLK_B3_ROUND(3, 4, 10, 12, 13, 2, 7, 14, 6, 5, 9, 0, 11, 15, 8, 1);
    FLK_B3_ROUND(10, 7, 12, 9, 14, 3, 13, 15, 4, 0, 11, 2, 5, 8, 1, 6);
    FLK_B3_ROUND(12, 13, 9, 11, 15, 10, 14, 8, 7, 2, 5, 3, 0, 1, 6, 4);
    FLK_B3_ROUND(9, 14, 11, 5, 8, 12, 15, 1, 13, 3, 0, 10, 2, 6, 4, 7);
    FLK_B3_ROUND(11, 15, 5, 0, 1, 9, 8, 6, 14, 10, 2, 12, 3, 4, 7, 13);
    for (i = 0; i < 8; i++) out[i] = s[i] ^ s[i + 8];
}

/* A pending compression whose flags are not final yet (it may become the root). */
typedef struct {
    uint32_t cv[8];
    uint8_t block[64];
    uint64_t counter;
    uint32_t block_len, flags;
} flk_b3_output;

/* Chunk `counter` of at most 1024 bytes: compress all blocks but the last and return
 * the last one as a pending output. */
static void flk_b3_chunk(const uint8_t *p, size_t len, uint64_t counter, flk_b3_output *o)
{
    uint32_t cv[8];
    uint32_t start = FLK_B3_CHUNK_START;
    memcpy(cv, FLK_B3_IV, sizeof cv);
    while (len > 64) {
        flk_b3_compress(cv, p, counter, 64, start, cv);
        start = 0;
        p += 64;
        len -= 64;
    }
    memcpy(o->cv, cv, sizeof cv);
    memset(o->block, 0, 64);
    memcpy(o->block, p, len);
    o->counter = counter;
    o->block_len = (uint32_t)len;
    o->flags = start | FLK_B3_CHUNK_END;
}

static void flk_b3_parent(const uint32_t l[8], const uint32_t r[8], flk_b3_output *o)
{
    int i;
    memcpy(o->cv, FLK_B3_IV, sizeof o->cv);
    for (i = 0; i < 8; i++) {
        o->block[4 * i] = (uint8_t)l[i]; o->block[4 * i + 1] = (uint8_t)(l[i] >> 8);
        o->block[4 * i + 2] = (uint8_t)(l[i] >> 16); o->block[4 * i + 3] = (uint8_t)(l[i] >> 24);
        o->block[32 + 4 * i] = (uint8_t)r[i]; o->block[33 + 4 * i] = (uint8_t)(r[i] >> 8);
        o->block[34 + 4 * i] = (uint8_t)(r[i] >> 16); o->block[35 + 4 * i] = (uint8_t)(r[i] >> 24);
    }
    o->counter = 0;
    o->block_len = 64;
    o->flags = FLK_B3_PARENT;
}

/* BLAKE3 of prefix (0 or 1 byte) || data. Handles any length: chunk chaining values are
 * merged with the spec's lazy stack (a message of 2^k chunks is a perfect tree, and the
 * left subtree is always the largest power of two). */
static void flk_b3_hash_prefixed(int prefix, const uint8_t *data, size_t len, uint8_t out[32])
{
    uint8_t buf[1024];
    uint32_t stack[54][8], cv[8], w[8];
    int depth = 0, i;
    size_t total = len + (prefix >= 0 ? 1 : 0), pos = 0;
    uint64_t chunk = 0, merged;
    flk_b3_output o;
    for (;;) {
        size_t take = total - pos > 1024 ? 1024 : total - pos;
        const uint8_t *p;
        if (prefix >= 0 && pos == 0) {  /* the prefix shifts every chunk of data by one */
            if (take) buf[0] = (uint8_t)prefix;
            if (take > 1) memcpy(buf + 1, data, take - 1);
            p = buf;
        } else if (prefix >= 0) {
            memcpy(buf, data + pos - 1, take);
            p = buf;
        } else {
            p = data + pos;
        }
        flk_b3_chunk(p, take, chunk, &o);
        pos += take;
        if (pos >= total) break;
        /* not the last chunk: finalise its chaining value and merge */
        flk_b3_compress(o.cv, o.block, o.counter, o.block_len, o.flags, cv);
        chunk++;
        for (merged = chunk; (merged & 1) == 0; merged >>= 1) {
            flk_b3_output po;
            depth--;
            flk_b3_parent(stack[depth], cv, &po);
            flk_b3_compress(po.cv, po.block, po.counter, po.block_len, po.flags, cv);
        }
        memcpy(stack[depth++], cv, sizeof cv);
    }
    while (depth > 0) {
        flk_b3_compress(o.cv, o.block, o.counter, o.block_len, o.flags, cv);
        depth--;
        flk_b3_parent(stack[depth], cv, &o);
    }
    flk_b3_compress(o.cv, o.block, 0, o.block_len, o.flags | FLK_B3_ROOT, w);
    for (i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)w[i]; out[4 * i + 1] = (uint8_t)(w[i] >> 8);
        out[4 * i + 2] = (uint8_t)(w[i] >> 16); out[4 * i + 3] = (uint8_t)(w[i] >> 24);
    }
}
#endif
