// ckvm_storage.h: the glibc and Linux pieces the Storage target needs and
// Swift cannot import.
//
// Swift's Glibc module is built without _GNU_SOURCE, so `O_DIRECT`,
// `fallocate` and `statx` are invisible to Swift (and to static inline
// functions here). The block-device ioctls are function-like `_IOR` macros.
// So this header re-exports the raw values and reaches `fallocate` and
// `statx` through `syscall(2)`, which is not GNU-only. Same contract as
// ckvm.h: the shim exports, it never decides; functions return >= 0 on
// success and -errno on failure.
#ifndef CKVM_STORAGE_H
#define CKVM_STORAGE_H

#include <stdint.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <linux/falloc.h>  // FALLOC_FL_KEEP_SIZE, _PUNCH_HOLE, _ZERO_RANGE (plain #defines)
#include <linux/stat.h>    // struct statx, STATX_DIOALIGN

/// open(2)'s O_DIRECT (glibc defines it only under _GNU_SOURCE; the value
/// behind it, __O_DIRECT, is always there).
static const int CKVM_O_DIRECT = __O_DIRECT;

/// BLKSSZGET: a block device's logical sector size, as an int
/// (linux/fs.h: `_IO(0x12, 104)`; spelled out so as not to pull in
/// linux/fs.h, whose mount flags collide with sys/mount.h).
static const unsigned long CKVM_BLKSSZGET = _IO(0x12, 104);

/// BLKGETSIZE64: a block device's size in bytes, as a uint64_t
/// (linux/fs.h: `_IOR(0x12, 114, size_t)`).
static const unsigned long CKVM_BLKGETSIZE64 = _IOR(0x12, 114, size_t);

/// fallocate(2): allocates, punches or zeroes [offset, offset + length) of
/// `fd` according to `mode` (FALLOC_FL_*). Returns 0 or -errno (-EOPNOTSUPP
/// when the filesystem or device does not support `mode`).
static inline int ckvm_fallocate(int fd, int mode, int64_t offset, int64_t length) {
    long r = syscall(SYS_fallocate, fd, mode, offset, length);
    return r < 0 ? -errno : 0;
}

/// statx(2) on an open descriptor (AT_EMPTY_PATH with an empty path),
/// asking for the fields in `mask` (STATX_*). Returns 0 or -errno; the
/// kernel sets in `buffer->stx_mask` which fields it filled in.
static inline int ckvm_fstatx(int fd, unsigned int mask, struct statx *buffer) {
    // 0x1000 is AT_EMPTY_PATH, another _GNU_SOURCE-only name.
    long r = syscall(SYS_statx, fd, "", 0x1000, mask, buffer);
    return r < 0 ? -errno : 0;
}

#endif
