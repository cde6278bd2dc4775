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

With --linux, on a host whose KVM runs guest kernels natively (not PVM; see
docs/pvm.md), also the Debian kernel of `make linux` in both VMMs: TCP
throughput guest->host (busybox dd piped into nc, the host's busybox nc
discarding) and ping latency to the host (busybox ping, 20 pings). On a PVM
host that part is skipped with the reason.
"""
import argparse, glob, json, os, re, statistics, subprocess, sys, tempfile

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


LINUX = os.path.join(ROOT, "guests", "build", "linux")
DD = re.compile(r"(\d+) bytes \([^)]*\) copied, ([0-9.]+) seconds")
RTT = re.compile(r"round-trip min/avg/max = ([0-9.]+)/([0-9.]+)/([0-9.]+) ms")


def host_busybox():
    """The static busybox of the Linux assets' cache, unpacked (for the host's nc)."""
    debs = glob.glob(os.path.join(LINUX, "cache", "busybox-static_*.deb"))
    if not debs:
        return None
    out = tempfile.mkdtemp(prefix="skvm-busybox-")
    subprocess.run(["dpkg-deb", "-x", debs[0], out], check=True)
    return os.path.join(out, "bin", "busybox")


def linux_run(vmm, skvm, ns, busybox):
    """TCP MB/s guest->host and ping avg ms under `vmm`, the Debian kernel on a tap in namespace `ns`."""
    sink = subprocess.Popen(["ip", "netns", "exec", ns, busybox, "nc", "-l", "-p", "5001"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cmd = ("ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ping -c 20 -i 0.2 10.0.2.2 && "
           "dd if=/dev/zero bs=1M count=512 | nc -w 2 10.0.2.2 5001")
    append = f'quiet skvm.cmd="{cmd}"'
    if vmm == "skvm":
        argv = [skvm, "run", "--quiet", "--no-input", "--memory", "512M", "--kernel", f"{LINUX}/bzImage",
                "--initrd", f"{LINUX}/initrd.img", "--net", "tap=tap0", "--append", append]
    else:
        argv = ["qemu-system-x86_64", "-enable-kvm", "-cpu", "host", "-M", "pc", "-m", "512", "-display", "none",
                "-serial", "stdio", "-no-reboot", "-nodefaults", "-kernel", f"{LINUX}/bzImage", "-initrd", f"{LINUX}/initrd.img",
                "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no,vhost=off", "-device", "virtio-net-pci,netdev=n0",
                "-append", "console=ttyS0 reboot=k panic=-1 " + append]
    try:
        out = subprocess.run(["ip", "netns", "exec", ns] + argv, stdin=subprocess.DEVNULL, capture_output=True,
                             text=True, timeout=600).stdout
    finally:
        sink.kill()
    dd, rtt = DD.search(out), RTT.search(out)
    if not dd or not rtt:
        sys.exit(f"bench-net: the Linux run under {vmm} printed no figures:\n{out}")
    return {"TCP guest->host MB/s": int(dd.group(1)) / float(dd.group(2)) / 1e6, "ping avg ms": float(rtt.group(2))}


def linux_part(a, have_qemu):
    if os.path.exists("/sys/module/kvm_pvm"):
        return None, "Linux: skipped, this host's KVM is PVM (a stock kernel cannot finish booting; docs/pvm.md)"
    if not os.path.exists(f"{LINUX}/bzImage"):
        return None, "Linux: skipped, the Linux assets are not built (make linux)"
    busybox = host_busybox()
    if not busybox:
        return None, "Linux: skipped, no busybox-static package in the Linux assets' cache"
    ns = f"skvm-bench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for c in (["tuntap", "add", "dev", "tap0", "mode", "tap", "vnet_hdr"], ["addr", "add", "10.0.2.2/24", "dev", "tap0"],
                  ["link", "set", "tap0", "up"]):
            subprocess.run(["ip", "-n", ns] + c, check=True)
        runs = {"skvm": [], "qemu": []}
        for _ in range(a.rounds):
            runs["skvm"].append(linux_run("skvm", a.skvm, ns, busybox))
            if have_qemu:
                runs["qemu"].append(linux_run("qemu", a.skvm, ns, busybox))
        return {who: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for who, rs in runs.items() if rs}, None
    finally:
        subprocess.run(["ip", "netns", "del", ns])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--skvm", default=os.path.join(ROOT, ".build", "release", "skvm"))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--linux", action="store_true", help="also Linux: TCP throughput and ping latency (hosts that boot Linux natively)")
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
    if a.linux:
        linux, note = linux_part(a, have_qemu)
        if note:
            print("\n" + note)
        else:
            results["linux"] = linux
            print("\nLinux (Debian kernel, busybox dd | nc, busybox ping):")
            for k in linux["skvm"]:
                line = f"  {k:40}{linux['skvm'][k]:15.2f}"
                if "qemu" in linux:
                    line += f"{linux['qemu'][k]:23.2f}"
                print(line)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"rounds": a.rounds, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
