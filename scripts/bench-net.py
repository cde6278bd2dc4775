#!/usr/bin/env python3
"""Network benchmark: skvm's virtio-net against QEMU's, same guest, same tap setup, same run.

  scripts/bench-net.py [--skvm PATH] [--rounds N] [--json FILE]      (as root)

The guest is guests/virtio-net-test in test=bench mode with offloads on
(offload=1: CSUM, HOST_TSO4, GUEST_CSUM, GUEST_TSO4, merged receive buffers):
from CPL 3, polling, it sends 20000 60-byte frames and 2000 65535-byte TCPv4
GSO frames to a host peer (an AF_PACKET socket on the tap, in a network
namespace of its own that guests/tools/net-test.sh creates and deletes), and
receives as many from it, timing each phase with rdtsc. The same runs under

  skvm run ... --net tap=tap0
  qemu-system-x86_64 -enable-kvm ... -netdev tap,ifname=tap0,vhost=off -device virtio-net-pci

alternating, ROUNDS times; the figures are medians. Both VMMs use the tap
with the vnet header, so the comparison is of the userspace device models
(QEMU's vhost-net, which moves the data path into the host kernel, is off).
"""
import argparse, json, os, re, statistics, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "guests", "tools", "net-test.sh")
# "virtio-net-test: bench: guest->host, 60-byte frames: 20000 frames of 60 bytes in 1 TSC cycles = 2 us: 3 frames/s, 4 MB/s; ..."
LINE = re.compile(r"bench: (guest->host|host->guest), (.+?): \d+ frames of \d+ bytes in \d+ TSC cycles = \d+ us: (\d+) frames/s, (\d+) MB/s")


def run(vmm):
    r = subprocess.run(["bash", SCRIPT, vmm, "bench", "offload=1"], capture_output=True, text=True, timeout=600)
    rows = {}
    for m in LINE.finditer(r.stdout):
        rows[f"{m.group(1)} {m.group(2)}"] = {"frames/s": int(m.group(3)), "MB/s": int(m.group(4))}
    if r.returncode != 0 or len(rows) != 4:
        sys.exit(f"bench-net: the benchmark failed under {vmm} (status {r.returncode}):\n{r.stdout}\n{r.stderr}")
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--skvm", default=os.path.join(ROOT, ".build", "release", "skvm"))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json")
    a = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench-net: needs root (a network namespace and a tap device)")
    have_qemu = subprocess.run(["sh", "-c", "command -v qemu-system-x86_64"], capture_output=True).returncode == 0
    runs = {"skvm": [], "qemu": []}
    for _ in range(a.rounds):
        runs["skvm"].append(run("skvm:" + a.skvm))
        if have_qemu:
            runs["qemu"].append(run("qemu"))
    results = {who: {row: {k: statistics.median(r[row][k] for r in rs) for k in ("frames/s", "MB/s")} for row in rs[0]}
               for who, rs in runs.items() if rs}
    print(f"virtio-net through a tap (vnet header, offloads on), guest at CPL 3 polling; medians of {a.rounds} alternating rounds")
    print(f"  {'':40}{'skvm frames/s':>15}{'MB/s':>8}" + (f"{'QEMU frames/s':>15}{'MB/s':>8}{'skvm/QEMU':>11}" if "qemu" in results else ""))
    for row in results["skvm"]:
        s = results["skvm"][row]
        line = f"  {row:40}{s['frames/s']:15.0f}{s['MB/s']:8.0f}"
        if "qemu" in results:
            q = results["qemu"][row]
            line += f"{q['frames/s']:15.0f}{q['MB/s']:8.0f}{s['frames/s'] / q['frames/s']:11.2f}"
        print(line)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"rounds": a.rounds, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
