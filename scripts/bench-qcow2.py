#!/usr/bin/env python3
"""qcow2 throughput: skvm's qcow2 backend against skvm's raw backend and QEMU's qcow2, same guest, one run.

  scripts/bench-qcow2.py [--skvm PATH] [--dir DIR] [--size GIB] [--mib N] [--random N]
                         [--qd 1,8] [--rounds N] [--json FILE]

The guest and its figures are those of scripts/bench-block.py (virtio-blk-test
test=bench: 1 MiB sequential writes, a FLUSH, 1 MiB sequential reads, then
random 4 KiB reads over the whole disk, at CPL 3 with polling, timed with
rdtsc). The data is allocated in every image, so the runs measure the
mapping, not allocation: a raw file with every block written, and a qcow2
image made from it with `qemu-img create -o preallocation=full` (every cluster
allocated and written). skvm's qcow2 goes through the host page cache, so all
three run with cache=writeback:

  skvm run ... --disk path=RAW                       (raw, the reference)
  skvm run ... --disk path=QCOW2                     (skvm qcow2)
  qemu-system-x86_64 ... -drive file=QCOW2,format=qcow2,cache=writeback,aio=threads   (QEMU qcow2)

Runs alternate the three ROUNDS times; the figures are medians. The aims
(issue 5): skvm qcow2 within 10% of skvm raw, and at least QEMU's qcow2.
"""
import argparse, importlib.util, json, os, statistics, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("bench_block", os.path.join(ROOT, "scripts", "bench-block.py"))
bb = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bb)


def skvm_cmd(a, image, qd):
    return [a.skvm, "run", "--quiet", "--no-input", "--memory", "128M", "--kernel", bb.GUEST,
            "--disk", f"path={image}", "--append", bb.guest_args(a, qd)]


def qemu_cmd(a, image, qd):
    return ["qemu-system-x86_64", "-enable-kvm", "-cpu", "host,-arch-capabilities", "-M", "pc", "-m", "128",
            "-display", "none", "-serial", "stdio", "-no-reboot", "-nodefaults",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
            "-drive", f"file={image},format=qcow2,if=none,id=d0,cache=writeback,aio=threads",
            "-device", "virtio-blk-pci,drive=d0,disable-legacy=on",
            "-kernel", bb.GUEST, "-append", bb.guest_args(a, qd)]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--skvm", default=os.path.join(ROOT, ".build", "release", "skvm"))
    p.add_argument("--dir", default=os.path.join(ROOT, "bench-results", "work"))
    p.add_argument("--size", type=int, default=1, help="image size in GiB (default 1)")
    p.add_argument("--mib", type=int, default=512, help="MiB per sequential phase (default 512)")
    p.add_argument("--random", type=int, default=20000, help="random 4 KiB reads (default 20000)")
    p.add_argument("--qd", default="1,8", help="queue depths to run (default 1,8)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json")
    a = p.parse_args()
    if a.mib > a.size * 1024:
        sys.exit("bench-qcow2: --mib is larger than the image")
    os.makedirs(a.dir, exist_ok=True)
    raw = os.path.join(a.dir, "qcow2-bench.raw")
    qcow2 = os.path.join(a.dir, "qcow2-bench.qcow2")
    bb.make_image(raw, a.size)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "preallocation=full", qcow2, f"{a.size}G"], check=True)
    try:
        khz = bb.tsc_khz(a.skvm)
        have_qemu = subprocess.run(["sh", "-c", "command -v qemu-system-x86_64"], capture_output=True).returncode == 0
        results = {}
        for qd in [int(q) for q in a.qd.split(",")]:
            runs = {"skvm raw": [], "skvm qcow2": [], "qemu qcow2": []}
            for _ in range(a.rounds):
                for who, cmd in [("skvm raw", skvm_cmd(a, raw, qd)), ("skvm qcow2", skvm_cmd(a, qcow2, qd)),
                                 ("qemu qcow2", qemu_cmd(a, qcow2, qd) if have_qemu else None)]:
                    if cmd is None:
                        continue
                    c = bb.run_guest(cmd, who)
                    runs[who].append(bb.figures({k: v / (khz * 1e3) for k, v in c.items()}, a))
            results[f"qd{qd}"] = {who: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
                                  for who, rs in runs.items() if rs}
        check = subprocess.run(["qemu-img", "check", qcow2], capture_output=True, text=True)
        if check.returncode != 0:
            sys.exit(f"bench-qcow2: qemu-img check failed after the runs:\n{check.stdout}")
    finally:
        os.unlink(raw)
        os.unlink(qcow2)

    print(f"qcow2 throughput: {a.size} GiB images, data allocated, cache=writeback; {a.mib} MiB sequential in "
          f"1 MiB requests, {a.random} random 4 KiB reads; medians of {a.rounds} alternating rounds; guest TSC {khz} kHz")
    for qd, r in results.items():
        print(f"\nqueue depth {qd[2:]}:")
        whos = [w for w in ("skvm raw", "skvm qcow2", "qemu qcow2") if w in r]
        header = f"  {'':20}" + "".join(f"{w:>14}" for w in whos) + f"{'qcow2/raw':>11}"
        if "qemu qcow2" in r:
            header += f"{'skvm/QEMU':>11}"
        print(header)
        for k in r["skvm raw"]:
            line = f"  {k:20}" + "".join(f"{r[w][k]:14.1f}" for w in whos) + f"{r['skvm qcow2'][k] / r['skvm raw'][k]:11.2f}"
            if "qemu qcow2" in r:
                line += f"{r['skvm qcow2'][k] / r['qemu qcow2'][k]:11.2f}"
            print(line)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"tscKHz": khz, "imageGiB": a.size, "sequentialMiB": a.mib, "randomReads": a.random,
                       "rounds": a.rounds, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
