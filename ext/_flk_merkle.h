/* Leaf and node hashes of the three Merkle schemes (SPEC §5), callable without the GIL.
 * SHA-256 comes from the OpenSSL libcrypto that Python's hashlib already uses (SHA-NI
 * where the CPU has it); the low-level SHA256_* calls are deprecated in OpenSSL 3 but
 * are the cheapest per call, which matters for 64-byte leaves. */
#ifndef FLK_MERKLE_H
#define FLK_MERKLE_H
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include <openssl/sha.h>
#include <stdint.h>
#include <string.h>
#include "_flk_blake3.h"

enum { FLK_HEXCAT = 0, FLK_SHA256_RFC = 1, FLK_BLAKE3_RFC = 2 };

/* OpenSSL 3's one-shot SHA256() goes through EVP and fetches the algorithm on every
 * call; the context API skips that, which is most of the cost of a 64-byte leaf. */
static inline void flk_sha256(const uint8_t *p, size_t len, uint8_t out[32])
{
    SHA256_CTX c;
    SHA256_Init(&c);
    SHA256_Update(&c, p, len);
    SHA256_Final(out, &c);
}

static const char FLK_HEX[] = "0123456789abcdef";

static void flk_leaf(int scheme, const uint8_t *p, size_t len, uint8_t out[32])
{
    SHA256_CTX c;
    static const uint8_t zero = 0;
    switch (scheme) {
    case FLK_HEXCAT:  /* leaf = sha256(chunk); the hex text is formed at the parent */
        flk_sha256(p, len, out);
        break;
    case FLK_SHA256_RFC:  /* RFC 6962: leaf = H(0x00 || chunk) */
        SHA256_Init(&c);
        SHA256_Update(&c, &zero, 1);
        SHA256_Update(&c, p, len);
        SHA256_Final(out, &c);
        break;
    default:
        flk_b3_hash_prefixed(0, p, len, out);
    }
}

/* count consecutive leaves of chunk_size bytes; BLAKE3 leaves go eight at a time
 * through the AVX2 lanes when the CPU has them. */
static void flk_leaves(int scheme, const uint8_t *p, size_t chunk_size, int64_t count,
                       uint8_t *out)
{
    int64_t i = 0;
#ifdef FLK_B3_HAVE_X8
    if (scheme == FLK_BLAKE3_RFC && count >= 8 && flk_b3_have_avx2()) {
        for (; i + 8 <= count; i += 8) {
            const uint8_t *d[8];
            int l;
            for (l = 0; l < 8; l++) d[l] = p + (size_t)(i + l) * chunk_size;
            flk_b3_hash8_prefixed(0, d, chunk_size, (uint8_t (*)[32])(out + 32 * i));
        }
    }
#endif
    for (; i < count; i++) flk_leaf(scheme, p + (size_t)i * chunk_size, chunk_size, out + 32 * i);
}

static void flk_node(int scheme, const uint8_t l[32], const uint8_t r[32], uint8_t out[32])
{
    uint8_t buf[129];
    int i;
    switch (scheme) {
    case FLK_HEXCAT:  /* parent = sha256(utf8(hex(left) + hex(right))) */
        for (i = 0; i < 32; i++) {
            buf[2 * i] = FLK_HEX[l[i] >> 4]; buf[2 * i + 1] = FLK_HEX[l[i] & 15];
            buf[64 + 2 * i] = FLK_HEX[r[i] >> 4]; buf[65 + 2 * i] = FLK_HEX[r[i] & 15];
        }
        flk_sha256(buf, 128, out);
        break;
    case FLK_SHA256_RFC:  /* RFC 6962: node = H(0x01 || left || right) */
        buf[0] = 1;
        memcpy(buf + 1, l, 32);
        memcpy(buf + 33, r, 32);
        flk_sha256(buf, 65, out);
        break;
    default:
        memcpy(buf, l, 32);
        memcpy(buf + 32, r, 32);
        flk_b3_hash_prefixed(1, buf, 64, out);
    }
}

static void flk_empty_root(int scheme, uint8_t out[32])
{
    switch (scheme) {
    case FLK_HEXCAT:  /* legacy: no chunks -> 64 zero hex digits */
        memset(out, 0, 32);
        break;
    case FLK_SHA256_RFC:  /* RFC 6962: MTH({}) = H() */
        flk_sha256((const uint8_t *)"", 0, out);
        break;
    default:
        flk_b3_hash_prefixed(-1, (const uint8_t *)"", 0, out);
    }
}
#endif
