#!/usr/bin/env python3
"""Start-up benchmark: skvm against QEMU microvm, same guest, same run.

  scripts/bench-startup.py [--skvm PATH] [--runs N] [--linux] [--json FILE]

For each VMM, N runs of guests/startup (a real-mode guest that prints a marker
on COM1 and exits through the debug-exit port; a flat binary for skvm, a 64 KiB
BIOS ROM for QEMU microvm), timing process start -> marker and -> exit, and the
peak RSS (getrusage of the child). Then one run of the waiting variant per VMM,
whose memory is read from /proc/PID/smaps_rollup and /proc/PID/smaps while the
guest sits halted: total RSS, private memory (Private_Clean + Private_Dirty),
and the guest RAM touched (the RSS of the guest RAM mapping), so the VMM's own
memory is what is left. With --linux, also the wall time from process start to
the Debian kernel's banner ("Linux version") for both VMMs, same kernel and
command line. Medians; only same-run ratios are meaningful.
"""
import argparse, json, os, select, signal, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
G = os.path.join(ROOT, "guests", "build")
MARKER = b"skvm-startup-marker"
QEMU_BASE = ["qemu-system-x86_64", "-enable-kvm", "-cpu", "host,-arch-capabilities",
             "-M", "microvm,x-option-roms=off,rtc=off", "-m", "128M", "-display", "none",
             "-serial", "stdio", "-no-reboot", "-nodefaults", "-device", "isa-debug-exit,iobase=0xf4,iosize=4"]


def commands(skvm, wait=False):
    suffix = "-wait" if wait else ""
    return {
        "skvm": [skvm, "run", "--quiet", "--no-input", "--flat", "--memory", "128M", "--kernel", f"{G}/startup{suffix}.bin"],
        "qemu-microvm": QEMU_BASE + ["-bios", f"{G}/startup{suffix}.rom"],
    }


def timed_run(cmd, marker, timeout=60, stop_after_marker=False):
    """(seconds to marker, seconds to exit, peak RSS KiB, exit status)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out, t_marker = b"", None
    while True:
        r, _, _ = select.select([p.stdout], [], [], max(0.0, timeout - (time.perf_counter() - t0)))
        if not r:
            p.kill()  # timed out (os.wait4 below reaps it; Popen.poll would reap it first)
            break
        chunk = os.read(p.stdout.fileno(), 65536)
        if not chunk:
            break
        out += chunk
        if t_marker is None and marker in out:
            t_marker = time.perf_counter() - t0
            if stop_after_marker:
                p.send_signal(signal.SIGTERM)
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)  # so Popen does not wait for it again
    t_exit = time.perf_counter() - t0
    return t_marker, t_exit, usage.ru_maxrss, os.waitstatus_to_exitcode(status)


def memory(cmd, guest_bytes):
    """Memory of the second of two VMMs whose guests printed the marker and
    halted: with two running, shared library and executable text shows as
    shared, so private memory is what each extra VM costs the host."""
    first = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = b""
    deadline = time.time() + 30
    while MARKER not in out and time.time() < deadline:
        r, _, _ = select.select([p.stdout], [], [], 1)
        if r:
            out += os.read(p.stdout.fileno(), 65536)
    time.sleep(0.3)
    rollup = {}
    with open(f"/proc/{p.pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                rollup[parts[0].rstrip(":")] = int(parts[1])
    # The guest RAM: the anonymous mapping at least as large as the guest's memory.
    guest_rss, size = 0, None
    with open(f"/proc/{p.pid}/smaps") as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5 and all(c in "0123456789abcdef-" for c in fields[0]):
                lo, hi = (int(x, 16) for x in fields[0].split("-"))
                size = hi - lo
                name = fields[5] if len(fields) > 5 else ""
                # Guest RAM is anonymous (skvm) or a memfd (QEMU's memory backend).
                anonymous = name == "" or name.startswith("/memfd:")
            elif fields[0] == "Rss:" and size is not None and anonymous and size >= guest_bytes:
                guest_rss += int(fields[1])
    for q in (p, first):
        q.send_signal(signal.SIGTERM)
        q.wait(timeout=10)
    private = rollup.get("Private_Clean", 0) + rollup.get("Private_Dirty", 0)
    return {"rssKiB": rollup.get("Rss", 0), "privateKiB": private, "guestTouchedKiB": guest_rss,
            "vmmRssKiB": rollup.get("Rss", 0) - guest_rss, "vmmPrivateKiB": private - guest_rss}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skvm", default=os.path.join(ROOT, ".build", "release", "skvm"))
    ap.add_argument("--runs", type=int, default=11)
    ap.add_argument("--linux", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args()
    results = {"runs": a.runs, "startup": {}, "memory": {}, "linuxBanner": {}}
    cmds = commands(a.skvm)
    # Interleave the VMMs run by run, so drifting load hits both alike.
    samples = {name: [] for name in cmds}
    for _ in range(a.runs):
        for name, cmd in cmds.items():
            samples[name].append(timed_run(cmd, MARKER))
    for name, runs in samples.items():
        bad = [r for r in runs if r[0] is None or r[3] != 1]
        if bad:
            sys.exit(f"bench-startup: {name} did not print the marker and exit with status 1: {bad[0]}")
        results["startup"][name] = {
            "markerMs": statistics.median(r[0] for r in runs) * 1000,
            "exitMs": statistics.median(r[1] for r in runs) * 1000,
            "peakRssKiB": statistics.median(r[2] for r in runs),
        }
    for name, cmd in commands(a.skvm, wait=True).items():
        results["memory"][name] = memory(cmd, 128 << 20)
    if a.linux:
        vmlinux = os.path.join(G, "linux", "vmlinux")
        cmdline = "console=ttyS0 earlyprintk=serial,ttyS0 noxsave"
        lcmds = {
            "skvm": [a.skvm, "run", "--quiet", "--no-input", "--memory", "512M", "--kernel", vmlinux, "--append", "earlyprintk=serial,ttyS0"],
            "qemu-microvm": ["qemu-system-x86_64", "-enable-kvm", "-cpu", "host,-arch-capabilities,-cx16", "-M", "microvm", "-m", "512M",
                             "-display", "none", "-serial", "stdio", "-nodefaults", "-kernel", vmlinux, "-append", cmdline],
        }
        banner = {name: [] for name in lcmds}
        for _ in range(3):
            for name, cmd in lcmds.items():
                t, _, _, _ = timed_run(cmd, b"Linux version", timeout=120, stop_after_marker=True)
                banner[name].append(t)
        for name, ts in banner.items():
            ok = [t for t in ts if t is not None]
            results["linuxBanner"][name] = {"bannerMs": statistics.median(ok) * 1000 if ok else None, "runs": len(ts), "reached": len(ok)}

    s, q = results["startup"]["skvm"], results["startup"]["qemu-microvm"]
    lines = [f"start-up, median of {a.runs} runs each, interleaved (guests/startup: print a marker, exit through port 0xf4)",
             f"{'':14}{'to marker':>12}{'to exit':>12}{'peak RSS':>12}"]
    for name, r in results["startup"].items():
        lines.append(f"{name:14}{r['markerMs']:>9.1f} ms{r['exitMs']:>9.1f} ms{r['peakRssKiB'] / 1024:>8.1f} MiB")
    lines.append(f"{'skvm / qemu':14}{s['markerMs'] / q['markerMs']:>12.2f}{s['exitMs'] / q['exitMs']:>12.2f}{s['peakRssKiB'] / q['peakRssKiB']:>12.2f}")
    lines.append("")
    lines.append("memory of the second of two VMs whose guests halted (KiB): total RSS, private (Private_Clean + Private_Dirty),")
    lines.append("guest RAM touched, and each minus the guest (with two VMs, text is shared: private = what each extra VM costs)")
    lines.append(f"{'':14}{'RSS':>10}{'private':>10}{'guest':>10}{'VMM RSS':>10}{'VMM priv.':>11}")
    for name, m in results["memory"].items():
        lines.append(f"{name:14}{m['rssKiB']:>10}{m['privateKiB']:>10}{m['guestTouchedKiB']:>10}{m['vmmRssKiB']:>10}{m['vmmPrivateKiB']:>11}")
    if a.linux:
        lines.append("")
        lines.append("Debian kernel (vmlinux), process start to the banner 'Linux version', median of 3 (stopped there)")
        for name, r in results["linuxBanner"].items():
            ms = r["bannerMs"]
            lines.append(f"{name:14}{(f'{ms:.0f} ms' if ms is not None else 'not reached'):>12}  ({r['reached']} of {r['runs']} runs reached it)")
    print("\n".join(lines))
    if a.json:
        with open(a.json + ".tmp", "w") as f:
            json.dump(results, f, indent=2)
        os.replace(a.json + ".tmp", a.json)


if __name__ == "__main__":
    main()
