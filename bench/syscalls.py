#!/usr/bin/env python3
"""System calls per proxied request, by leg (client side, upstream side), counted by strace: like
bench/instructions.py a figure that does not move with the machine's load, for the kernel part
of the CPU per request.

    bench/syscalls.py target/release/authgate [other/authgate ...]

Behind one nginx upstream (`return 200`): nginx `proxy_pass` (keepalive 64, as in bench/run.py)
and, for every binary, the public route and the protected route (HS256, memory revocation,
token minted by the measured process). Each gets 2 s of warm-up, then `strace -f -yy` is
attached to its worker while `wrk -t1 -c8 -d3s` runs; every call is put on a leg by the
socket it names (the client's or the upstream's port) and divided by the requests wrk made.
EAGAIN results are counted apart (`read!` is a read that found nothing). strace slows the
process down, so calls that depend on timing (epoll_wait's batching) are only indicative: a
second table counts them at full speed with `perf stat` (syscall tracepoints, no legs), with
the context switches.
"""
import collections, os, re, shutil, signal, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402
from run import port, spawn, wait_port, write  # noqa: E402
from instructions import config, login, wrk  # noqa: E402

LINE = re.compile(r"^(?:\[pid\s+\d+\]\s+|\d+\s+)?(\w+)\((.*)\)\s+=\s+(-?\d+|\?)(?:\s+(\w+))?")
SOCK = re.compile(r"<TCP(?:v6)?:\[[^\]]*?:(\d+)->[^\]]*?:(\d+)\]>")


def leg(args, client_port, up_port):
    m = SOCK.search(args)
    if not m:
        return "other"
    ports = {int(m.group(1)), int(m.group(2))}
    if up_port in ports:
        return "upstream"
    if client_port in ports:
        return "client"
    return "other"


def trace(pid, client_port, up_port, url, token):
    out = os.path.join(run.work, f"strace.{pid}")
    wrk(url, token, 2)
    s = subprocess.Popen(["strace", "-f", "-yy", "-qq", "-s", "0", "-o", out, "-p", str(pid)],
                         stderr=subprocess.DEVNULL)
    time.sleep(1)
    n = wrk(url, token, 3)
    s.send_signal(signal.SIGINT)
    s.wait(30)
    counts = collections.Counter()
    for line in open(out, errors="replace"):
        m = LINE.match(line)
        if not m:
            continue
        name, args, _, err = m.groups()
        if err == "EAGAIN":
            name += "!"
        counts[(leg(args, client_port, up_port), name)] += 1
    return n, counts


PERF_CALLS = ["epoll_wait", "recvfrom", "sendto", "writev", "read", "write", "getsockopt",
              "epoll_ctl", "futex"]


def at_speed(pid, url, token):
    """Per request at full speed: all syscalls, some by name, context switches (perf stat)."""
    wrk(url, token, 1)
    events = ["raw_syscalls:sys_enter", "context-switches"] + [f"syscalls:sys_enter_{c}" for c in PERF_CALLS]
    out = os.path.join(run.work, f"perf.{pid}")
    s = subprocess.Popen(["perf", "stat", "-x,", "-o", out, "-e", ",".join(events), "-p", str(pid)],
                         stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    n = wrk(url, token, 3)
    s.send_signal(signal.SIGINT)
    s.wait(30)
    counts = {}
    for line in open(out):
        f = line.strip().split(",")
        if len(f) > 2 and f[0].replace(".", "").isdigit():
            name = f[2].replace("syscalls:sys_enter_", "").replace("raw_syscalls:sys_enter", "all syscalls")
            counts[name] = int(float(f[0]))
    return n, counts


def perf_table(rows):
    names = ["all syscalls"] + PERF_CALLS + ["context-switches"]
    print("| at full speed (perf stat) | " + " | ".join(label for label, _, _ in rows) + " |")
    print("|---|" + "---:|" * len(rows))
    for name in names:
        vals = [c.get(name, 0) / n for _, n, c in rows]
        if max(vals) >= 0.005:
            print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in vals) + " |")


def table(rows):
    keys = sorted({k for _, _, c in rows for k in c}, key=lambda k: (k[0], k[1]))
    print("| leg | call | " + " | ".join(label for label, _, _ in rows) + " |")
    print("|---|---|" + "---:|" * len(rows))
    for k in keys:
        vals = [c.get(k, 0) / n for _, n, c in rows]
        if max(vals) < 0.005:
            continue
        print(f"| {k[0]} | {k[1]} | " + " | ".join(f"{v:.2f}" for v in vals) + " |")
    totals = [sum(c.values()) / n for _, n, c in rows]
    print("| all | **total** | " + " | ".join(f"**{t:.2f}**" for t in totals) + " |")


def main(binaries):
    up = port()
    conf = lambda body: write(f"nginx-{port()}.conf", f"""
worker_processes 1; pid {run.work}/nginx-{port()}.pid; error_log /dev/null; daemon off;
events {{ worker_connections 1024; }}
http {{ access_log off; {body} }}""")
    spawn(["nginx", "-c", conf(f'server {{ listen 127.0.0.1:{up}; location / {{ return 200 "ok\\n"; }} }}')])
    wait_port(up)
    ngx = port()
    p = spawn(["nginx", "-c", conf(f"""upstream u {{ server 127.0.0.1:{up}; keepalive 64; }}
server {{ listen 127.0.0.1:{ngx}; location / {{ proxy_pass http://u; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}""")])
    wait_port(ngx)
    time.sleep(0.3)
    worker = int(open(f"/proc/{p.pid}/task/{p.pid}/children").read().split()[0])
    perf = shutil.which("perf") is not None
    rows = [("nginx proxy_pass", *trace(worker, ngx, up, f"http://127.0.0.1:{ngx}/x", None))]
    fast = [("nginx proxy_pass", *at_speed(worker, f"http://127.0.0.1:{ngx}/x", None))] if perf else []
    write("secret", run.SECRET)
    h = subprocess.run([binaries[0], "hash-password"], input="bench-password\n", capture_output=True,
                       text=True, check=True).stdout.strip()
    write("users.toml", f'[[user]]\nname = "bench"\npassword_hash = "{h}"\nroles = ["user"]\n')
    for b in binaries:
        gp, ap = port(), port()
        g = spawn([b, "serve", "--config", config(gp, ap, up)], env={**os.environ, "RUST_LOG": "warn"})
        wait_port(gp)
        token = login(gp)
        # The build's directory: target/release/authgate -> target, old/authgate -> old.
        parent = os.path.dirname(b)
        name = os.path.basename(os.path.dirname(parent) if os.path.basename(parent) == "release" else parent)
        for label, path, tok in (("public", "/public/x", None), ("protected", "/x", token)):
            url = f"http://127.0.0.1:{gp}{path}"
            rows.append((f"{name} {label}", *trace(g.pid, gp, up, url, tok)))
            if perf:
                fast.append((f"{name} {label}", *at_speed(g.pid, url, tok)))
        g.terminate(); g.wait(10)
    print("requests: " + ", ".join(f"{label} {n:,}" for label, n, _ in rows))
    table(rows)
    if fast:
        print()
        perf_table(fast)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    try:
        main([os.path.abspath(b) for b in sys.argv[1:]])
    finally:
        run.cleanup()
