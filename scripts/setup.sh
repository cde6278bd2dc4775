#!/usr/bin/env bash
# scripts/setup.sh: install what skvm's build, guests and tests need on a
# fresh Debian 12 machine. Idempotent: installs only what is missing.
#
#   nasm              assembles the tiny test kernels in guests/
#   binutils          links them (ld)
#   qemu-system-x86   runs the same guests under QEMU, for side-by-side checks and benchmarks
#   qemu-utils        qemu-img, for qcow2 interop tests
#   iproute2          ip netns, for network tests
#   e2fsprogs         mkfs.ext4 and e2fsck, for the Linux disk tests
#   zlib1g-dev        zlib headers: qcow2 compressed clusters (deflate)
#   libzstd-dev       zstd headers: qcow2 compressed clusters (compression_type=zstd)
#
# Swift itself is expected at /opt/swift (or on PATH).
set -euo pipefail

need=()
command -v nasm >/dev/null 2>&1 || need+=(nasm)
command -v ld >/dev/null 2>&1 || need+=(binutils)
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
command -v qemu-img >/dev/null 2>&1 || need+=(qemu-utils)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v make >/dev/null 2>&1 || need+=(make)
command -v mkfs.ext4 >/dev/null 2>&1 || need+=(e2fsprogs)
[ -f /usr/include/zlib.h ] || need+=(zlib1g-dev)
[ -f /usr/include/zstd.h ] || need+=(libzstd-dev)

if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing ${need[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! command -v swift >/dev/null 2>&1 && [ ! -x /opt/swift/usr/bin/swift ]; then
    echo "setup: Swift 6 is not installed (expected at /opt/swift or on PATH); see swift.org/install" >&2
    exit 1
fi
echo "setup: all tools present"
