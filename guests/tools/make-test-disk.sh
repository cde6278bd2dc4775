#!/bin/sh
# =============================================================================
# tools/make-test-disk.sh -- the disk image virtio-blk-test reads and writes,
# and the check of that image after a run
# =============================================================================
#
# Usage:
#   guests/tools/make-test-disk.sh PATH SIZE
#       Create (or overwrite) the raw image PATH of SIZE bytes (a number,
#       optionally with K, M or G = KiB, MiB, GiB; a multiple of 512, at
#       least 256K) filled with the 'orig' pattern. Every byte is written, so
#       the file starts fully allocated (a later discard can punch holes).
#   guests/tools/make-test-disk.sh --check PATH MODE [SIZE]
#       After `virtio-blk-test test=MODE` ran on PATH (and the VMM exited),
#       check every sector of it: what the guest wrote holds the 'test'
#       pattern, what it zeroed holds zeros, and every other sector still
#       holds the 'orig' pattern. With SIZE, also check the file's size.
#       Exit status 0 if the image is as expected, 1 if not.
#
# The pattern (see virtio-blk-test/virtio-blk-test.c): each 512-byte sector
# is 16 lines of 32 bytes,
#     "orig sector 0000002A line 0F   \n"
# with the sector number (mod 2^32) and the line number in upper-case hex;
# the guest writes the same lines with the tag "test".
#
# What each mode leaves behind (C = the capacity in sectors):
#   rw        sectors 0-7, 100-115 and C-1 hold 'test'; the rest 'orig'
#   discard   200-215 'orig' or zeros (a discard may or may not deallocate;
#             per sector), 216-247 zeros; the rest 'orig'
#   info, ro, bad, reset, wrap
#             every sector 'orig' (the image is unchanged)
# =============================================================================

set -eu

usage() {
    echo "usage: $0 PATH SIZE | $0 --check PATH MODE [SIZE]" >&2
    exit 2
}

[ $# -ge 2 ] || usage

if [ "$1" = "--check" ]; then
    [ $# -ge 3 ] || usage
    exec python3 - "$2" "$3" "${4:-}" <<'EOF'
import os, sys

path, mode, size_arg = sys.argv[1], sys.argv[2], sys.argv[3]

def size_bytes(s):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(s[-1:].upper(), 1)
    return int(s[:-1] if mult > 1 else s) * mult

def line(tag, sector, n):
    return b"%s sector %08X line %02X   \n" % (tag, sector & 0xFFFFFFFF, n)

def sector_bytes(tag, sector):
    return b"".join(line(tag, sector, n) for n in range(16))

ZERO = bytes(512)

if mode not in ("info", "rw", "ro", "bad", "discard", "reset", "wrap"):
    sys.exit("make-test-disk: unknown mode %r (info|rw|ro|bad|discard|reset|wrap)" % mode)
data = open(path, "rb").read()
problems = []
if size_arg and len(data) != size_bytes(size_arg):
    problems.append("the file is %d bytes, expected %d" % (len(data), size_bytes(size_arg)))
if len(data) % 512:
    problems.append("the file size %d is no multiple of 512" % len(data))
cap = len(data) // 512

def expected(s):
    """The contents sector s may have: a list of (name, bytes)."""
    if mode == "rw" and (s <= 7 or 100 <= s <= 115 or s == cap - 1):
        return [("test", sector_bytes(b"test", s))]
    if mode == "discard" and 200 <= s <= 215:
        return [("orig", sector_bytes(b"orig", s)), ("zeros", ZERO)]
    if mode == "discard" and 216 <= s <= 247:
        return [("zeros", ZERO)]
    return [("orig", sector_bytes(b"orig", s))]

def name_of(block, s):
    for tag in (b"orig", b"test"):
        if block == sector_bytes(tag, s):
            return tag.decode()
    if block == ZERO:
        return "zeros"
    return "something else"

counts = {}
bad = 0
for s in range(cap):
    block = data[s * 512:(s + 1) * 512]
    choices = expected(s)
    hit = [name for name, b in choices if block == b]
    if hit:
        counts[hit[0]] = counts.get(hit[0], 0) + 1
        continue
    bad += 1
    if bad <= 10:
        problems.append("sector %d holds %s, expected %s" % (s, name_of(block, s), " or ".join(n for n, _ in choices)))
if bad > 10:
    problems.append("... %d bad sectors in all" % bad)

def holes(path):
    """The file's holes as (first sector, last sector), from SEEK_HOLE/SEEK_DATA.
    Unlike st_blocks, this leaves out the file system's own metadata blocks
    (an ext4 extent block appears once punched holes fragment the file)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        found, at = [], 0
        while at < size:
            hole = os.lseek(fd, at, os.SEEK_HOLE)   # size when no hole is left
            if hole >= size:
                break
            try:
                data = os.lseek(fd, hole, os.SEEK_DATA)
            except OSError:                          # ENXIO: a hole up to the end
                data = size
            found.append((hole // 512, (data - 1) // 512))
            at = data
        return found
    finally:
        os.close(fd)

summary = ", ".join("%d %s" % (counts[k], k) for k in sorted(counts))
hole_list = holes(path)
layout = "holes at sectors " + ", ".join("%d-%d" % h for h in hole_list) if hole_list else "no holes"
print("make-test-disk: %s: %d sectors (%s), %s: %s" % (
    path, cap, summary, layout, "as expected after test=" + mode if not problems else "NOT as expected"))
for p in problems:
    print("make-test-disk:   " + p)
sys.exit(1 if problems else 0)
EOF
fi

[ $# -eq 2 ] || usage
exec python3 - "$1" "$2" <<'EOF'
import sys

path, size_arg = sys.argv[1], sys.argv[2]
mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size_arg[-1:].upper(), 1)
try:
    size = int(size_arg[:-1] if mult > 1 else size_arg) * mult
except ValueError:
    sys.exit("make-test-disk: bad SIZE %r (bytes, or a number with K, M or G)" % size_arg)
if size % 512 or size < 256 * 1024:
    sys.exit("make-test-disk: SIZE must be a multiple of 512 and at least 256K (512 sectors)")
with open(path, "wb") as f:
    chunk = []
    for s in range(size // 512):
        chunk.append(b"".join(b"orig sector %08X line %02X   \n" % (s & 0xFFFFFFFF, n) for n in range(16)))
        if len(chunk) == 2048:
            f.write(b"".join(chunk))
            chunk = []
    f.write(b"".join(chunk))
print("make-test-disk: %s: %d sectors of the 'orig' pattern" % (path, size // 512))
EOF
