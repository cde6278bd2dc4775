#!/usr/bin/env bash
# scripts/demo.sh SKVM: the README's first command (make demo).
#
# Checks the host, then boots the Debian kernel to a command in its
# initramfs. Where KVM cannot run a stock kernel's code natively (PVM hosts,
# docs/pvm.md), it shows what can be shown there instead: the boot-protocol
# probe kernel checking everything skvm promises a Linux kernel, and the
# Debian kernel itself up to its banner, its command line, the E820 map and
# the MP table skvm gave it.
set -u
skvm=${1:-.build/release/skvm}
linux=guests/build/linux
say() { printf '\n\033[1m%s\033[0m\n' "$*"; }

say "\$ skvm check"
"$skvm" check || { echo "skvm cannot run VMs on this machine (see above)."; exit 4; }

if "$skvm" check --json | grep -q '"canBootStockLinux": true'; then
    say "\$ skvm run --kernel $linux/bzImage --initrd $linux/initrd.img --cpus 2 --memory 512M --append 'quiet skvm.cmd=...'"
    "$skvm" run --no-input --kernel "$linux/bzImage" --initrd "$linux/initrd.img" --cpus 2 --memory 512M \
        --append 'quiet skvm.cmd=uname -sr; echo vCPUs: $(nproc); grep MemTotal /proc/meminfo'
    echo "(exit status $?)"
    exit 0
fi

echo
echo "This host's KVM emulates guest kernel code, so a stock Linux kernel cannot finish booting here"
echo "(it would on bare-metal VT-x/AMD-V in about 100 ms). Showing the Linux boot path as far as it goes:"

if [ -f guests/build/boot-probe.vmlinux ]; then
    say "\$ skvm run --kernel guests/build/boot-probe.bzimage --cpus 2 --memory 256M  (the boot-protocol probe)"
    "$skvm" run --no-input --kernel guests/build/boot-probe.bzimage --cpus 2 --memory 256M --append "probe.cpus=2 probe.mem=256"
    echo "(exit status $?: 1 means every check passed)"
fi

say "\$ skvm run --kernel $linux/vmlinux --initrd $linux/initrd.img --cpus 2 --memory 512M --append earlyprintk=serial  (stopped after the MP table line)"
out=$(mktemp)
"$skvm" run --no-input --kernel "$linux/vmlinux" --initrd "$linux/initrd.img" --cpus 2 --memory 512M \
    --append "earlyprintk=serial,ttyS0" >"$out" 2>&1 &
pid=$!
for _ in $(seq 1 240); do
    grep -q "found SMP MP-table" "$out" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
done
kill -TERM "$pid" 2>/dev/null
wait "$pid"
status=$?
tr -d '\r' <"$out" | sed -n '1,/found SMP MP-table/p'
rm -f "$out"
echo "(exit status $status: 143 means skvm was stopped with SIGTERM, as intended)"
