#!/usr/bin/env bash
# scripts/demo.sh SKVM: the README's first command. Checks the host, then
# boots each tiny test kernel and shows what it printed and how it ended.
set -u
skvm=${1:-.build/release/skvm}
run() {
    echo
    echo "\$ skvm run $*"
    "$skvm" run --no-input "$@"
    echo "(exit status $?)"
}
"$skvm" check || { echo "skvm cannot run VMs on this machine (see above)."; exit 4; }
run --flat --kernel guests/build/hello-real.bin
run --kernel guests/build/multiboot-hello.elf --append "hello world"
run --kernel guests/build/long-mode.elf
run --kernel guests/build/cpl3.elf
run --kernel guests/build/debug-exit.elf
exit 0
