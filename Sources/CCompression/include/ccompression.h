// ccompression.h: zlib and zstd decompression for qcow2 compressed clusters.
//
// The shim exports, never decides: each function does one library call
// sequence and returns 0 or a negative code. The callers (Storage/Qcow2)
// own the buffers and validate every length before calling.
#ifndef CCOMPRESSION_H
#define CCOMPRESSION_H

#include <stddef.h>

/// Inflates a raw deflate stream (no zlib header; qcow2.txt "zlib" type,
/// QEMU writes it with windowBits -12) from `src` until `dst` is full.
/// Returns 0 when exactly `dst_len` bytes were produced, -1 when the stream
/// is corrupt or ends early. Trailing input after the stream is ignored:
/// a compressed cluster is rounded up to whole sectors.
int ccomp_inflate_raw(const void *src, size_t src_len, void *dst, size_t dst_len);

/// Decompresses zstd frames from `src` until `dst` is full (qcow2.txt
/// compression_type 1). Returns 0 when exactly `dst_len` bytes were
/// produced, -1 on a corrupt stream or when the input ends first.
int ccomp_zstd_decompress(const void *src, size_t src_len, void *dst, size_t dst_len);

/// Compresses `src` into `dst` as a raw deflate stream (windowBits -12, as
/// QEMU). Returns the compressed length, or -1 when it does not fit in
/// `dst_len` bytes (the caller then stores the cluster uncompressed).
long ccomp_deflate_raw(const void *src, size_t src_len, void *dst, size_t dst_len);

#endif
