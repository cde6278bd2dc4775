#!/usr/bin/env python3
"""Block throughput benchmark: skvm's virtio-blk against QEMU's, same guest, same image, same run.

  scripts/bench-block.py [--skvm PATH] [--dir DIR] [--size GIB] [--mib N] [--random N]
                         [--qd 1,8] [--rounds N] [--json FILE]

The guest is guests/virtio-blk-test in test=bench mode: it drives the queue
from CPL 3 with polling (native speed on a PVM host) and times itself with
rdtsc: sequential writes of 1 MiB requests, a FLUSH, sequential reads of the
same, then 4 KiB reads at random aligned offsets over the whole disk, with up
to QD requests in flight. The image is a fully allocated raw file (default
1 GiB) on DIR (a real file system: O_DIRECT does not work on tmpfs), used
with cache=none by both VMMs:

  skvm run --kernel virtio-blk-test.elf --disk path=IMG,cache=none
  qemu-system-x86_64 -enable-kvm ... -drive file=IMG,format=raw,if=none,id=d0,cache=none,aio=threads
                     -device virtio-blk-pci,drive=d0,disable-legacy=on -kernel virtio-blk-test.elf

With --linux, on a host whose KVM runs guest kernels natively (not PVM; see
docs/pvm.md), also the Debian kernel of `make linux` in both VMMs, reading and
writing /dev/vda with busybox dd (1 MiB blocks, O_DIRECT), the same image. On
a PVM host that part is skipped with the reason.

The limit beside both: this host's own direct I/O on the same file, the same
pattern issued from here (pread/pwrite with O_DIRECT, one request at a time,
1 MiB sequential and 4 KiB random). Runs alternate skvm, QEMU and the host
ROUNDS times; the figures are medians. The guest's cycles become seconds with
the guest TSC frequency KVM reports (KVM_GET_TSC_KHZ, via `skvm bench exits
--json`); the guest TSC runs at the host's rate.
"""
import argparse, json, mmap, os, random, re, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUEST = os.path.join(ROOT, "guests", "build", "virtio-blk-test.elf")
MIB = 1 << 20


def tsc_khz(skvm):
    out = subprocess.run([skvm, "bench", "exits", "--kinds", "pio-out", "--cpls", "3", "--iterations", "200",
                          "--batches", "2", "--rounds", "1", "--no-floor", "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=True).stdout
    khz = json.loads(out)["tscKHz"]
    if not khz:
        sys.exit("bench-block: KVM reports a TSC frequency of 0")
    return khz


def guest_args(a, qd):
    return f"test=bench bench-mib={a.mib} bench-random={a.random} qd={qd}"


def run_guest(cmd, label):
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900)
    cycles = {}
    for line in r.stdout.splitlines():
        # "virtio-blk-test: bench: seq-write: 256 requests of 1048576 bytes, qd 1: 123 cycles"
        if ": bench: " in line and line.endswith(" cycles"):
            parts = line.split(": ")
            name, value = parts[2], int(parts[-1].split()[0])
            cycles[name] = value
    if "all " not in r.stdout or "checks passed" not in r.stdout or len(cycles) != 4:
        sys.exit(f"bench-block: the guest failed under {label} (status {r.returncode}):\n{r.stdout}\n{r.stderr}")
    return cycles


def skvm_cmd(a, image, qd):
    return [a.skvm, "run", "--quiet", "--no-input", "--stats", "--memory", "128M", "--kernel", GUEST,
            "--disk", f"path={image},cache=none", "--append", guest_args(a, qd)]


def qemu_cmd(a, image, qd):
    return ["qemu-system-x86_64", "-enable-kvm", "-cpu", "host,-arch-capabilities", "-M", "pc", "-m", "128",
            "-display", "none", "-serial", "stdio", "-no-reboot", "-nodefaults",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
            "-drive", f"file={image},format=raw,if=none,id=d0,cache=none,aio=threads",
            "-device", "virtio-blk-pci,drive=d0,disable-legacy=on",
            "-kernel", GUEST, "-append", guest_args(a, qd)]


def host_direct(a, image):
    """The same pattern from the host, O_DIRECT, one request at a time: seconds per phase."""
    fd = os.open(image, os.O_RDWR | os.O_DIRECT)
    try:
        big = mmap.mmap(-1, MIB)
        big.write(b"\x5a" * MIB)
        small = mmap.mmap(-1, 4096)
        t = {}
        t0 = time.perf_counter()
        for i in range(a.mib):
            os.pwritev(fd, [big], i * MIB)
        t["seq-write"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        os.fdatasync(fd)
        t["flush"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(a.mib):
            os.preadv(fd, [big], i * MIB)
        t["seq-read"] = time.perf_counter() - t0
        blocks = a.size * (1 << 30) // 4096
        rng = random.Random(1)
        offsets = [rng.randrange(blocks) * 4096 for _ in range(a.random)]
        t0 = time.perf_counter()
        for off in offsets:
            os.preadv(fd, [small], off)
        t["rand-read"] = time.perf_counter() - t0
        return t
    finally:
        os.close(fd)


def make_image(path, gib):
    """A fully allocated raw image (every block written), so no run measures allocation."""
    chunk = b"\0" * (16 * MIB)
    with open(path, "wb") as f:
        for _ in range(gib * 64):
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())


LINUX = os.path.join(ROOT, "guests", "build", "linux")
DD = re.compile(r"(\d+) bytes \([^)]*\) copied, ([0-9.]+) seconds")


def linux_dd(a, image, vmm):
    """Linux's dd on /dev/vda under `vmm`: {"dd read MB/s", "dd write MB/s"}."""
    cmd = (f"dd if=/dev/vda of=/dev/null bs=1M count={a.mib} iflag=direct; "
           f"dd if=/dev/zero of=/dev/vda bs=1M count={a.mib} oflag=direct")
    append = f'quiet skvm.cmd="{cmd}"'
    if vmm == "skvm":
        argv = [a.skvm, "run", "--quiet", "--no-input", "--memory", "512M", "--kernel", f"{LINUX}/bzImage",
                "--initrd", f"{LINUX}/initrd.img", "--disk", f"path={image},cache=none", "--append", append]
    else:
        argv = ["qemu-system-x86_64", "-enable-kvm", "-cpu", "host", "-M", "pc", "-m", "512", "-display", "none",
                "-serial", "stdio", "-no-reboot", "-nodefaults", "-kernel", f"{LINUX}/bzImage", "-initrd", f"{LINUX}/initrd.img",
                "-drive", f"file={image},format=raw,if=none,id=d0,cache=none,aio=threads",
                "-device", "virtio-blk-pci,drive=d0,disable-legacy=on",
                "-append", "console=ttyS0 reboot=k panic=-1 " + append]
    out = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600).stdout
    found = DD.findall(out)
    if len(found) != 2:
        sys.exit(f"bench-block: Linux dd under {vmm} printed no figures:\n{out}")
    (rb, rs), (wb, ws) = found
    return {"dd read MB/s": int(rb) / float(rs) / 1e6, "dd write MB/s": int(wb) / float(ws) / 1e6}


def figures(seconds, a):
    """MB/s for the sequential phases, IOPS for the random one."""
    return {
        "seq-write MB/s": a.mib * MIB / seconds["seq-write"] / 1e6,
        "seq-read MB/s": a.mib * MIB / seconds["seq-read"] / 1e6,
        "rand-read 4K IOPS": a.random / seconds["rand-read"],
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--skvm", default=os.path.join(ROOT, ".build", "release", "skvm"))
    p.add_argument("--dir", default=os.path.join(ROOT, "bench-results", "work"))
    p.add_argument("--size", type=int, default=1, help="image size in GiB (default 1)")
    p.add_argument("--mib", type=int, default=512, help="MiB per sequential phase (default 512)")
    p.add_argument("--random", type=int, default=20000, help="random 4 KiB reads (default 20000)")
    p.add_argument("--qd", default="1,8", help="queue depths to run (default 1,8)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--linux", action="store_true", help="also Linux's dd on /dev/vda (hosts that boot Linux natively)")
    p.add_argument("--json")
    a = p.parse_args()
    if a.mib > a.size * 1024:
        sys.exit("bench-block: --mib is larger than the image")
    os.makedirs(a.dir, exist_ok=True)
    image = os.path.join(a.dir, "block-bench.img")
    make_image(image, a.size)
    linux_note = None
    try:
        khz = tsc_khz(a.skvm)
        have_qemu = subprocess.run(["sh", "-c", "command -v qemu-system-x86_64"], capture_output=True).returncode == 0
        results = {}
        for qd in [int(q) for q in a.qd.split(",")]:
            runs = {"skvm": [], "qemu": [], "host": []}
            for _ in range(a.rounds):
                c = run_guest(skvm_cmd(a, image, qd), "skvm")
                runs["skvm"].append(figures({k: v / (khz * 1e3) for k, v in c.items()}, a))
                if have_qemu:
                    c = run_guest(qemu_cmd(a, image, qd), "QEMU")
                    runs["qemu"].append(figures({k: v / (khz * 1e3) for k, v in c.items()}, a))
                if qd == 1:
                    runs["host"].append(figures(host_direct(a, image), a))
            results[f"qd{qd}"] = {who: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
                                  for who, rs in runs.items() if rs}
        if a.linux:
            if os.path.exists("/sys/module/kvm_pvm"):
                linux_note = "Linux dd: skipped, this host's KVM is PVM (a stock kernel cannot finish booting; docs/pvm.md)"
            elif not os.path.exists(f"{LINUX}/bzImage"):
                linux_note = "Linux dd: skipped, the Linux assets are not built (make linux)"
            else:
                runs = {"skvm": [], "qemu": []}
                for _ in range(a.rounds):
                    runs["skvm"].append(linux_dd(a, image, "skvm"))
                    if have_qemu:
                        runs["qemu"].append(linux_dd(a, image, "qemu"))
                results["linux"] = {who: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for who, rs in runs.items() if rs}
    finally:
        os.unlink(image)

    print(f"Block throughput: {a.size} GiB raw image, cache=none; {a.mib} MiB sequential in 1 MiB requests, "
          f"{a.random} random 4 KiB reads; guest at CPL 3, polling; medians of {a.rounds} alternating rounds; "
          f"guest TSC {khz} kHz")
    for qd, r in results.items():
        print("\nLinux, busybox dd on /dev/vda (1 MiB, O_DIRECT):" if qd == "linux" else f"\nqueue depth {qd[2:]}:")
        whos = [w for w in ("skvm", "qemu", "host") if w in r]
        header = f"  {'':20}" + "".join(f"{w if w != 'host' else 'host O_DIRECT (qd 1)':>22}" for w in whos)
        if "qemu" in r:
            header += f"{'skvm/QEMU':>12}"
        print(header)
        for k in r["skvm"]:
            line = f"  {k:20}" + "".join(f"{r[w][k]:22.1f}" for w in whos)
            if "qemu" in r:
                line += f"{r['skvm'][k] / r['qemu'][k]:12.2f}"
            print(line)
    if linux_note:
        print("\n" + linux_note)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"tscKHz": khz, "imageGiB": a.size, "sequentialMiB": a.mib, "randomReads": a.random,
                       "rounds": a.rounds, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
