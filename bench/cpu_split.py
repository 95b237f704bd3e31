#!/usr/bin/env python3
"""CPU per request split into user space and kernel, beside nginx: for telling a change in
the gateway's own code (user time) from the loopback TCP path both servers share (system
time, about two thirds of the total here, and the noisier part on a busy machine).

    ROUNDS=5 DURATION=4 bench/cpu_split.py target/release/authgate [other/authgate ...]

Each round runs, in turn: nginx proxy_pass, then for every binary the public route and the
protected route (HS256, memory revocation, warm token cache), all in front of one nginx
`return 200` upstream, one worker each, wrk -t2 -c64 for DURATION seconds after 2 s of
warm-up. utime and stime come from /proc/PID/stat of the serving process (nginx: its
worker). Medians over the rounds, and for each binary the rounds in which it used less user
time than the first binary (a sign test: 5 of 5 happens by chance 1 time in 32).
"""
import os, statistics, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402
from run import port, spawn, wait_port, write  # noqa: E402
import instructions as ins  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "5"))
DURATION = int(os.environ.get("DURATION", "4"))
HZ = os.sysconf("SC_CLK_TCK")


def wrk(url, token, seconds):
    return ins.wrk(url, token, seconds, ("-t2", "-c64"))


def ticks(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]), int(f[12])


def measure(pid, url, token):
    wrk(url, token, 2)
    u0, s0 = ticks(pid)
    n = wrk(url, token, DURATION)
    u1, s1 = ticks(pid)
    return (u1 - u0) / HZ / n * 1e6, (s1 - s0) / HZ / n * 1e6


def main(binaries):
    ins.ensure_tools()
    up, ngx = port(), port()
    conf = lambda body: write(f"nginx-{port()}.conf", f"""
worker_processes 1; pid {run.work}/nginx-{port()}.pid; error_log /dev/null; daemon off;
events {{ worker_connections 4096; }}
http {{ access_log off; {body} }}""")
    spawn(["nginx", "-c", conf(f'server {{ listen 127.0.0.1:{up}; location / {{ return 200 "ok\\n"; }} }}')])
    wait_port(up)
    proxy = spawn(["nginx", "-c", conf(f"""upstream u {{ server 127.0.0.1:{up}; keepalive 64; }}
server {{ listen 127.0.0.1:{ngx}; location / {{ proxy_pass http://u; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}""")])
    wait_port(ngx)
    time.sleep(0.3)
    write("secret", run.SECRET)
    h = subprocess.run([binaries[0], "hash-password"], input="bench-password\n",
                       capture_output=True, text=True, check=True).stdout.strip()
    write("users.toml", f'[[user]]\nname = "bench"\npassword_hash = "{h}"\nroles = ["user"]\n')
    rows = {"nginx proxy_pass": (run.children(proxy.pid)[-1], f"http://127.0.0.1:{ngx}/x", None)}
    for i, b in enumerate(binaries):
        gp, ap = port(), port()
        p = spawn([b, "serve", "--config", ins.config(gp, ap, up)], env={**os.environ, "RUST_LOG": "warn"})
        wait_port(gp)
        token = ins.login(gp)
        rows[f"{i}: public"] = (p.pid, f"http://127.0.0.1:{gp}/public/x", None)
        rows[f"{i}: protected"] = (p.pid, f"http://127.0.0.1:{gp}/x", token)
    got = {name: [] for name in rows}
    for r in range(ROUNDS):
        for name, (pid, url, token) in rows.items():
            got[name].append(measure(pid, url, token))
            print(f"round {r + 1} {name}: user {got[name][-1][0]:.2f} sys {got[name][-1][1]:.2f} us", file=sys.stderr)
    print("\n" + "\n".join(f"{i}: {b}" for i, b in enumerate(binaries)))
    print(f"\nwrk -t2 -c64 -d{DURATION}s, {ROUNDS} interleaved rounds, medians (us a request)\n")
    print("| scenario | user | system | total | vs nginx | user below binary 0 |")
    print("|---|---:|---:|---:|---:|---:|")
    med = lambda name, k: statistics.median(x[k] for x in got[name])
    base = med("nginx proxy_pass", 0) + med("nginx proxy_pass", 1)
    for name in rows:
        u, s = med(name, 0), med(name, 1)
        below = ""
        if name[0].isdigit() and not name.startswith("0:"):
            first = got["0:" + name.split(":", 1)[1]]
            below = f"{sum(a[0] < b[0] for a, b in zip(got[name], first))} of {ROUNDS}"
        print(f"| {name} | {u:.2f} | {s:.2f} | {u + s:.2f} | {(u + s) / base:.2f}x | {below} |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    try:
        main([os.path.abspath(b) for b in sys.argv[1:]])
    finally:
        run.cleanup()
