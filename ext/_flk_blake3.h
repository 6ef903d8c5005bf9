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

/* ---- Eight equal-length messages at once (AVX2 lanes via GCC vector extensions) ----
 * Merkle leaves all have the same length, so every lane follows the same chunk/block
 * structure and the same tree; only the bytes differ. Each 32-bit lane of a vector is
 * one message. Results are identical to flk_b3_hash_prefixed (tested per lane). */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define FLK_B3_HAVE_X8 1
typedef uint32_t flk_v8 __attribute__((vector_size(32)));
#define FLK_B3_X8_ATTR __attribute__((target("avx2")))

#define FLK_V8_ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))
#define FLK_B3_G8(a, b, c, d, x, y)                  \
    do {                                             \
        s[a] = s[a] + s[b] + (x);                    \
        s[d] = FLK_V8_ROTR(s[d] ^ s[a], 16);         \
        s[c] = s[c] + s[d];                          \
        s[b] = FLK_V8_ROTR(s[b] ^ s[c], 12);         \
        s[a] = s[a] + s[b] + (y);                    \
        s[d] = FLK_V8_ROTR(s[d] ^ s[a], 8);          \
        s[c] = s[c] + s[d];                          \
        s[b] = FLK_V8_ROTR(s[b] ^ s[c], 7);          \
    } while (0)
#define FLK_B3_ROUND8(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15) \
    do {                                                                                  \
        FLK_B3_G8(0, 4, 8, 12, m[a0], m[a1]);                                             \
        FLK_B3_G8(1, 5, 9, 13, m[a2], m[a3]);                                             \
        FLK_B3_G8(2, 6, 10, 14, m[a4], m[a5]);                                            \
        FLK_B3_G8(3, 7, 11, 15, m[a6], m[a7]);                                            \
        FLK_B3_G8(0, 5, 10, 15, m[a8], m[a9]);                                            \
        FLK_B3_G8(1, 6, 11, 12, m[a10], m[a11]);                                          \
        FLK_B3_G8(2, 7, 8, 13, m[a12], m[a13]);                                           \
        FLK_B3_G8(3, 4, 9, 14, m[a14], m[a15]);                                           \
    } while (0)

FLK_B3_X8_ATTR static void flk_b3_compress8(const flk_v8 cv[8], const flk_v8 m[16],
                                            uint64_t counter, uint32_t block_len,
                                            uint32_t flags, flk_v8 out[8])
{
    flk_v8 s[16];
    int i;
    for (i = 0; i < 8; i++) s[i] = cv[i];
    for (i = 0; i < 4; i++) s[8 + i] = (flk_v8){0} + FLK_B3_IV[i];
    s[12] = (flk_v8){0} + (uint32_t)counter;
    s[13] = (flk_v8){0} + (uint32_t)(counter >> 32);
    s[14] = (flk_v8){0} + block_len;
    s[15] = (flk_v8){0} + flags;
    FLK_B3_ROUND8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    FLK_B3_ROUND8(2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8);
    FLK_B3_ROUND8(3, 4, 10, 12, 13, 2, 7, 14, 6, 5, 9, 0, 11, 15, 8, 1);
    FLK_B3_ROUND8(10, 7, 12, 9, 14, 3, 13, 15, 4, 0, 11, 2, 5, 8, 1, 6);
    FLK_B3_ROUND8(12, 13, 9, 11, 15, 10, 14, 8, 7, 2, 5, 3, 0, 1, 6, 4);
    FLK_B3_ROUND8(9, 14, 11, 5, 8, 12, 15, 1, 13, 3, 0, 10, 2, 6, 4, 7);
    FLK_B3_ROUND8(11, 15, 5, 0, 1, 9, 8, 6, 14, 10, 2, 12, 3, 4, 7, 13);
    for (i = 0; i < 8; i++) out[i] = s[i] ^ s[i + 8];
}

/* Message words of one 64-byte block of each lane: lane l's block starts at
 * buf + l * stride. Little-endian words, as flk_b3_compress reads them. */
FLK_B3_X8_ATTR static inline void flk_b3_load8(const uint8_t *buf, size_t stride,
                                               flk_v8 m[16])
{
    int w, l;
    for (w = 0; w < 16; w++) {
        flk_v8 v;
        for (l = 0; l < 8; l++) {
            uint32_t x;
            memcpy(&x, buf + l * stride + 4 * w, 4);  /* x86 is little-endian */
            v[l] = x;
        }
        m[w] = v;
    }
}

/* out[l] = BLAKE3(prefix || data[l][0:len]) for l = 0..7 (prefix < 0: none). */
FLK_B3_X8_ATTR static void flk_b3_hash8_prefixed(int prefix, const uint8_t *const data[8],
                                                 size_t len, uint8_t out[8][32])
{
    /* One BLAKE3 chunk of every lane, zero padded, lane-major. */
    uint8_t buf[8][1024 + 64];
    flk_v8 stack[54][8], cv[8], m[16], pm[16];
    int depth = 0, i, l, w;
    size_t total = len + (prefix >= 0 ? 1 : 0), pos = 0;
    uint64_t chunk = 0, merged;
    for (;;) {
        size_t take = total - pos > 1024 ? 1024 : total - pos;
        size_t nblocks = take ? (take + 63) / 64 : 1, b;
        int last_chunk = pos + take >= total;
        for (l = 0; l < 8; l++) {
            if (prefix >= 0 && pos == 0) {
                if (take) buf[l][0] = (uint8_t)prefix;
                if (take > 1) memcpy(buf[l] + 1, data[l], take - 1);
            } else {
                memcpy(buf[l], data[l] + pos - (prefix >= 0 ? 1 : 0), take);
            }
            memset(buf[l] + take, 0, nblocks * 64 - take);
        }
        for (i = 0; i < 8; i++) cv[i] = (flk_v8){0} + FLK_B3_IV[i];
        for (b = 0; b < nblocks; b++) {
            uint32_t blen = (uint32_t)(b + 1 < nblocks ? 64 : take - 64 * b);
            uint32_t flags = (b == 0 ? FLK_B3_CHUNK_START : 0) |
                             (b + 1 == nblocks ? FLK_B3_CHUNK_END : 0);
            flk_b3_load8(&buf[0][64 * b], sizeof buf[0], m);
            if (b + 1 == nblocks && last_chunk && depth == 0)
                flags |= FLK_B3_ROOT;  /* a single-chunk message: this is the root */
            flk_b3_compress8(cv, m, chunk, blen, flags, cv);
        }
        pos += take;
        if (last_chunk) break;
        chunk++;
        for (merged = chunk; (merged & 1) == 0; merged >>= 1) {
            depth--;
            for (w = 0; w < 8; w++) { pm[w] = stack[depth][w]; pm[8 + w] = cv[w]; }
            {
                flk_v8 key[8];
                for (i = 0; i < 8; i++) key[i] = (flk_v8){0} + FLK_B3_IV[i];
                flk_b3_compress8(key, pm, 0, 64, FLK_B3_PARENT, cv);
            }
        }
        for (w = 0; w < 8; w++) stack[depth][w] = cv[w];
        depth++;
    }
    while (depth > 0) {
        flk_v8 key[8];
        depth--;
        for (w = 0; w < 8; w++) { pm[w] = stack[depth][w]; pm[8 + w] = cv[w]; }
        for (i = 0; i < 8; i++) key[i] = (flk_v8){0} + FLK_B3_IV[i];
        flk_b3_compress8(key, pm, 0, 64, FLK_B3_PARENT | (depth == 0 ? FLK_B3_ROOT : 0),
                         cv);
    }
    for (l = 0; l < 8; l++)
        for (i = 0; i < 8; i++) {
            uint32_t x = cv[i][l];
            out[l][4 * i] = (uint8_t)x; out[l][4 * i + 1] = (uint8_t)(x >> 8);
            out[l][4 * i + 2] = (uint8_t)(x >> 16); out[l][4 * i + 3] = (uint8_t)(x >> 24);
        }
}

static int flk_b3_have_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
}
#endif
