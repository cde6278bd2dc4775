#!/usr/bin/env bash
# =============================================================================
# tools/compare-conventions.sh -- run the convention guests under QEMU and
# skvm and compare their serial output and exit status
# =============================================================================
#
# The guests mb-args, fwcfg, smp-mb and testdev check conventions of kernels
# written for `qemu-system-x86_64 -kernel` (see guests/README.md). Their
# output is built to be byte-identical under every VMM that follows those
# conventions, so the test is simply: the same bytes, the same exit status,
# and that status is 1 (every check passed).
#
# Usage (from the repository root, after `make -C guests`):
#   SKVM=.build/debug/skvm guests/tools/compare-conventions.sh
# Environment: SKVM (default: skvm on PATH), QEMU (default:
# qemu-system-x86_64), OUT (a folder for the outputs; default: a new
# temporary one, named at the end). One line per case; exit status 1 if any
# case differs or did not pass.
# =============================================================================

set -u
SKVM=${SKVM:-skvm}
QEMU=${QEMU:-qemu-system-x86_64}
OUT=${OUT:-$(mktemp -d)}
B=guests/build
mkdir -p "$OUT"
bad=0

# one NAME GUEST CPUS APPEND [MODULE...]: one case under both VMMs. Each
# MODULE is "FILE [ARGS]", as the module's string should read.
one() {
    local name=$1 guest=$2 cpus=$3 append=$4
    shift 4
    local qemu_args=() skvm_args=() joined="" m
    for m in "$@"; do
        joined="${joined:+$joined,}$m"     # QEMU: one -initrd, comma-separated
        skvm_args+=(--initrd "$m")         # skvm: one --initrd per module
    done
    [ -n "$joined" ] && qemu_args=(-initrd "$joined")
    timeout 120 "$QEMU" -enable-kvm -cpu host,-arch-capabilities -M pc -m 128 -smp "$cpus" \
        -display none -serial stdio -no-reboot -nodefaults \
        -device isa-debug-exit,iobase=0xf4,iosize=4 -device pc-testdev \
        -kernel "$B/$guest.elf" -append "$append" "${qemu_args[@]}" \
        >"$OUT/$name.qemu" 2>"$OUT/$name.qemu.err" </dev/null
    local qs=$?
    "$SKVM" run --no-input --kernel "$B/$guest.elf" --append "$append" \
        --cpus "$cpus" --memory 128M --test-device --timeout 110 "${skvm_args[@]}" \
        >"$OUT/$name.skvm" 2>"$OUT/$name.skvm.err" </dev/null
    local ss=$?
    if cmp -s "$OUT/$name.qemu" "$OUT/$name.skvm" && [ $qs -eq $ss ] && [ $qs -eq 1 ]; then
        echo "same    $name: exit status 1, $(wc -l <"$OUT/$name.qemu") lines"
    else
        echo "DIFFER  $name: QEMU exit status $qs, skvm exit status $ss"
        diff "$OUT/$name.qemu" "$OUT/$name.skvm" | sed 's/^/        /'
        bad=1
    fi
}

one mb-args            mb-args 1 "alpha beta" "$B/mod-a.txt one two" "$B/mod-b.bin"
one mb-args-nomods     mb-args 1 "alpha beta"
one fwcfg-1            fwcfg   1 "alpha beta"
one fwcfg-2            fwcfg   2 "alpha beta"
one fwcfg-4            fwcfg   4 "alpha beta"
one smp-mb-1           smp-mb  1 "alpha beta"
one smp-mb-2           smp-mb  2 "alpha beta"
one smp-mb-4           smp-mb  4 "alpha beta"
one testdev            testdev 1 "alpha beta"
# Known difference (see guests/README.md): with an empty append text QEMU
# still writes "<path> " (a trailing space), skvm "<path>".
one mb-args-empty      mb-args 1 ""

echo "outputs in $OUT"
exit $bad
