#!/bin/bash
# =============================================================================
# guests/tools/net-test.sh -- run virtio-net-test on a tap device inside a
# network namespace of its own, with the host-side peer, under QEMU or skvm
# =============================================================================
#
#   net-test.sh VMM MODE [GUEST_ARG...]
#
#   VMM        qemu                    qemu-system-x86_64 (or $QEMU), virtio-net-pci,
#                                      -netdev tap,vhost=off
#              skvm:PATH               PATH run --net tap=tap0 --test-device ...
#   MODE       info | ping | frames | bench   (the guest's test=MODE)
#   GUEST_ARG  more KEY=VALUE words for the guest's command line,
#              e.g. mrg=1, offload=1, verbose=1, count=100000
#
# Needs root (network namespaces, tap devices) and guests/build/ built
# (make -C guests). Never touches the host's interfaces: everything lives in
# a namespace named skvmtest<PID>, deleted on exit whatever happens.
#
# Inside the namespace:
#   tap0   pre-created (ip tuntap add dev tap0 mode tap vnet_hdr), IPv6 off
#          (so the host sends no router solicitations and MLD reports),
#          10.0.2.2/24, up. The VMM opens it by name: QEMU's ifname=tap0
#          attaches to an existing persistent tap when the flags agree
#          (single queue), skvm opens it with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR.
#   peer   guests/build/net-peer tap0 (modes frames and bench), started and
#          ready before the VMM.
#   ping   in mode ping, once the guest prints "answering ICMP echo
#          requests", `ping -c 3 -i 0.2 -W 2 10.0.2.15` from the namespace
#          (or, without iputils-ping, `net-peer --ping 10.0.2.15 3`).
#
# Output: the guest's serial output exactly as it came, then the peer's
# lines (frames, bench), the host ping's summary (ping), and a verdict:
#   net-test: qemu test=frames offload=1: PASS
# Exit status 0 if the guest passed (its verdict line, and the VMM's exit
# status 1 = debug-exit v 0), the peer passed, and the ping got its 3
# replies; 1 otherwise; 2 for bad usage.
# =============================================================================
set -u

usage() {
    echo "usage: $0 qemu|skvm:PATH info|ping|frames|bench [GUEST_ARG...]" >&2
    exit 2
}
[ $# -ge 2 ] || usage
VMM=$1
MODE=$2
shift 2
case "$MODE" in info|ping|frames|bench) ;; *) usage ;; esac
case "$VMM" in qemu|skvm:?*) ;; *) usage ;; esac

here=$(cd "$(dirname "$0")" && pwd)
guests=$(dirname "$here")
ELF=$guests/build/virtio-net-test.elf
PEER=$guests/build/net-peer
QEMU=${QEMU:-qemu-system-x86_64}
ARGS="test=$MODE${*:+ $*}"
# bench: the guest needs the TSC frequency to turn cycles into time. Under
# KVM the guest's TSC runs at the host's rate (no TSC scaling here); take it
# from the host's kernel log, else /proc/cpuinfo (constant_tsc hosts only).
if [ "$MODE" = bench ] && [[ " $ARGS " != *" tsc_khz="* ]]; then
    mhz=$(dmesg 2>/dev/null | sed -n 's/.*tsc: Refined TSC clocksource calibration: \([0-9.]*\) MHz.*/\1/p' | tail -1)
    [ -n "$mhz" ] || mhz=$(dmesg 2>/dev/null | sed -n 's/.*tsc: Detected \([0-9.]*\) MHz processor.*/\1/p' | tail -1)
    if [ -z "$mhz" ] && grep -qw constant_tsc /proc/cpuinfo; then
        mhz=$(sed -n 's/^cpu MHz[[:space:]]*: \([0-9.]*\)/\1/p' /proc/cpuinfo | head -1)
    fi
    [ -n "$mhz" ] && ARGS="$ARGS tsc_khz=$(awk -v m="$mhz" 'BEGIN { printf "%d", m * 1000 }')"
fi
TIMEOUT=${NET_TEST_TIMEOUT:-60}

[ "$(id -u)" = 0 ] || { echo "net-test: needs root (ip netns, tap devices)" >&2; exit 1; }
[ -f "$ELF" ] && [ -x "$PEER" ] || { echo "net-test: build first: make -C guests" >&2; exit 1; }

NS=skvmtest$$
TMP=$(mktemp -d /tmp/net-test.XXXXXX)
PEER_PID=
VMM_PID=

cleanup() {
    [ -n "$VMM_PID" ] && kill "$VMM_PID" 2>/dev/null
    [ -n "$PEER_PID" ] && kill "$PEER_PID" 2>/dev/null
    wait 2>/dev/null
    ip netns del "$NS" 2>/dev/null
    if [ -n "${NET_TEST_KEEP:-}" ]; then echo "net-test: files kept in $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP PIPE

in_ns() { ip netns exec "$NS" "$@"; }

ip netns add "$NS" || exit 1
in_ns ip link set lo up
in_ns ip tuntap add dev tap0 mode tap vnet_hdr || exit 1
in_ns sysctl -qw net.ipv6.conf.tap0.disable_ipv6=1
in_ns ip addr add 10.0.2.2/24 dev tap0
in_ns ip link set tap0 up

if [ "$MODE" = frames ] || [ "$MODE" = bench ]; then
    in_ns "$PEER" tap0 >"$TMP/peer.out" 2>"$TMP/peer.err" &
    PEER_PID=$!
    for _ in $(seq 50); do
        grep -q '^peer: ready' "$TMP/peer.out" 2>/dev/null && break
        kill -0 "$PEER_PID" 2>/dev/null || break
        sleep 0.1
    done
    grep -q '^peer: ready' "$TMP/peer.out" || { cat "$TMP/peer.out" "$TMP/peer.err" >&2; echo "net-test: the peer did not start" >&2; exit 1; }
fi

case "$VMM" in
qemu)
    in_ns timeout "$TIMEOUT" "$QEMU" -enable-kvm -cpu host,-arch-capabilities -M pc -m 128 \
        -display none -serial stdio -no-reboot -nodefaults \
        -device isa-debug-exit,iobase=0xf4,iosize=4 \
        -netdev tap,id=n0,ifname=tap0,script=no,downscript=no,vhost=off \
        -device virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56,disable-legacy=on \
        -kernel "$ELF" -append "$ARGS" </dev/null >"$TMP/guest.out" 2>"$TMP/vmm.err" &
    ;;
skvm:*)
    # SKVM_ARGS: more skvm options, e.g. SKVM_ARGS="--stats --trace virtio".
    # shellcheck disable=SC2086
    in_ns timeout "$TIMEOUT" "${VMM#skvm:}" run --kernel "$ELF" --append "$ARGS" --net tap=tap0,mac=52:54:00:12:34:56 \
        --test-device --timeout 30 ${SKVM_ARGS:-} </dev/null >"$TMP/guest.out" 2>"$TMP/vmm.err" &
    ;;
esac
VMM_PID=$!

ping_ok=true
if [ "$MODE" = ping ]; then
    ping_ok=false
    for _ in $(seq 300); do
        grep -q 'answering ICMP echo requests' "$TMP/guest.out" 2>/dev/null && break
        kill -0 "$VMM_PID" 2>/dev/null || break
        sleep 0.1
    done
    if grep -q 'answering ICMP echo requests' "$TMP/guest.out"; then
        if command -v ping >/dev/null; then
            in_ns ping -c 3 -i 0.2 -W 2 10.0.2.15 >"$TMP/ping.out" 2>&1 && ping_ok=true
        else                            # no iputils-ping: net-peer's own
            in_ns "$PEER" --ping 10.0.2.15 3 >"$TMP/ping.out" 2>&1 && ping_ok=true
        fi
    else
        echo "ping: not started (the guest never got to answering)" >"$TMP/ping.out"
    fi
fi

wait "$VMM_PID"
vmm_status=$?
VMM_PID=
peer_ok=true
if [ -n "$PEER_PID" ]; then
    for _ in $(seq 50); do kill -0 "$PEER_PID" 2>/dev/null || break; sleep 0.1; done
    kill "$PEER_PID" 2>/dev/null
    wait "$PEER_PID"
    [ $? = 0 ] || peer_ok=false
    PEER_PID=
fi

cat "$TMP/guest.out"
[ -s "$TMP/vmm.err" ] && sed 's/^/vmm stderr: /' "$TMP/vmm.err" >&2
if [ "$MODE" = frames ] || [ "$MODE" = bench ]; then
    cat "$TMP/peer.out"
    [ -s "$TMP/peer.err" ] && sed 's/^/peer stderr: /' "$TMP/peer.err" >&2
fi
[ "$MODE" = ping ] && grep -E 'packets transmitted|^ping:|^peer: ping' "$TMP/ping.out" | sed 's/^/host ping: /'

why=
grep -q '^virtio-net-test: all [0-9]* checks passed$' "$TMP/guest.out" || why="the guest did not pass"
[ "$vmm_status" = 1 ] || why="${why:+$why; }VMM exit status $vmm_status (expected 1: debug-exit v = 0)"
$peer_ok || why="${why:+$why; }the peer failed"
$ping_ok || why="${why:+$why; }the host's ping failed"
if [ -z "$why" ]; then
    echo "net-test: $VMM $ARGS: PASS"
    exit 0
fi
echo "net-test: $VMM $ARGS: FAIL ($why)"
exit 1
