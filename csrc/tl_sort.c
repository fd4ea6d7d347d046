#include <string.h>
#include "tl_sort.h"

#define TL_RADIX_BITS 8
#define TL_RADIX_SIZE (1 << TL_RADIX_BITS)
#define TL_RADIX_PASSES 8

void tl_radix_sort(uint64_t *keys, int64_t *vals, ptrdiff_t n, uint64_t *kbuf, int64_t *vbuf,
                   const tl_stop_flag *stop) {
    if (n < 2) return;
    static const uint64_t mask = TL_RADIX_SIZE - 1;
    /* histograms of all digits in one read */
    ptrdiff_t (*hist)[TL_RADIX_SIZE] = NULL;
    ptrdiff_t local[TL_RADIX_PASSES][TL_RADIX_SIZE];
    hist = local;
    memset(local, 0, sizeof local);
    for (ptrdiff_t i = 0; i < n; i++) {
        uint64_t k = keys[i];
        for (int p = 0; p < TL_RADIX_PASSES; p++) hist[p][(k >> (p * TL_RADIX_BITS)) & mask]++;
    }
    uint64_t *src_k = keys, *dst_k = kbuf;
    int64_t *src_v = vals, *dst_v = vbuf;
    for (int p = 0; p < TL_RADIX_PASSES; p++) {
        if (tl_stop_requested(stop)) return;
        ptrdiff_t *h = hist[p];
        /* skip a digit shared by every key */
        if (h[(src_k[0] >> (p * TL_RADIX_BITS)) & mask] == n) continue;
        ptrdiff_t sum = 0;
        for (int b = 0; b < TL_RADIX_SIZE; b++) {
            ptrdiff_t c = h[b];
            h[b] = sum;
            sum += c;
        }
        for (ptrdiff_t i = 0; i < n; i++) {
            uint64_t k = src_k[i];
            ptrdiff_t pos = h[(k >> (p * TL_RADIX_BITS)) & mask]++;
            dst_k[pos] = k;
            dst_v[pos] = src_v[i];
        }
        uint64_t *tk = src_k;
        src_k = dst_k;
        dst_k = tk;
        int64_t *tv = src_v;
        src_v = dst_v;
        dst_v = tv;
    }
    if (src_k != keys) {
        memcpy(keys, src_k, (size_t)n * sizeof *keys);
        memcpy(vals, src_v, (size_t)n * sizeof *vals);
    }
}
