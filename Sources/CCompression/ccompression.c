// ccompression.c: see include/ccompression.h.
#include "ccompression.h"

#include <string.h>
#include <zlib.h>
#include <zstd.h>

int ccomp_inflate_raw(const void *src, size_t src_len, void *dst, size_t dst_len) {
    z_stream s;
    memset(&s, 0, sizeof s);
    // -15: a raw stream with any window up to 32 KiB (QEMU writes -12).
    if (inflateInit2(&s, -15) != Z_OK) return -1;
    s.next_in = (Bytef *)src;
    s.avail_in = (uInt)src_len;
    s.next_out = (Bytef *)dst;
    s.avail_out = (uInt)dst_len;
    int r = inflate(&s, Z_FINISH);
    int ok = (r == Z_STREAM_END || r == Z_OK || r == Z_BUF_ERROR) && s.avail_out == 0;
    inflateEnd(&s);
    return ok ? 0 : -1;
}

int ccomp_zstd_decompress(const void *src, size_t src_len, void *dst, size_t dst_len) {
    ZSTD_DCtx *d = ZSTD_createDCtx();
    if (!d) return -1;
    ZSTD_inBuffer in = {src, src_len, 0};
    ZSTD_outBuffer out = {dst, dst_len, 0};
    int result = -1;
    // Frames follow each other until the cluster is full; each call makes
    // progress or reports an error, and the loop ends when the input or
    // the output is exhausted.
    while (out.pos < out.size) {
        size_t before_in = in.pos, before_out = out.pos;
        size_t r = ZSTD_decompressStream(d, &out, &in);
        if (ZSTD_isError(r)) break;
        if (in.pos == before_in && out.pos == before_out) break;  // no progress: truncated
    }
    if (out.pos == out.size) result = 0;
    ZSTD_freeDCtx(d);
    return result;
}

long ccomp_deflate_raw(const void *src, size_t src_len, void *dst, size_t dst_len) {
    z_stream s;
    memset(&s, 0, sizeof s);
    if (deflateInit2(&s, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY) != Z_OK) return -1;
    s.next_in = (Bytef *)src;
    s.avail_in = (uInt)src_len;
    s.next_out = (Bytef *)dst;
    s.avail_out = (uInt)dst_len;
    int r = deflate(&s, Z_FINISH);
    long n = (r == Z_STREAM_END) ? (long)(dst_len - s.avail_out) : -1;
    deflateEnd(&s);
    return n;
}
