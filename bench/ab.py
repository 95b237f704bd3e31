#!/usr/bin/env python3
"""A/B of two authgate binaries against nginx proxy_pass on the public and the protected
(HS256, memory) route: interleaved rounds, medians. For judging one change quickly; the full
table is bench/run.sh.

    ROUNDS=5 DURATION=5 bench/ab.py path/to/authgate-A path/to/authgate-B
    WORKERS=2 bench/ab.py A B     # both gateways and the nginx proxy with 2 workers (the
                                  # upstream nginx keeps 1)
"""
import json, os, statistics, sys

WORKERS = int(os.environ.get("WORKERS", "1"))

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (shares its process handling, wrk parsing and cleanup)
from run import port, spawn, wait_port, write, request, wrk, cpu_ticks, TICK  # noqa: E402


def gateway(binary, label, up):
    gp, ap = port(), port()
    cfg = write(f"ab-{label}.toml", f"""
[server]\nlisten = "127.0.0.1:{gp}"\nworkers = {WORKERS}\n[log]\nformat = "json"\n[admin]\nlisten = "127.0.0.1:{ap}"
[tokens]\nalgorithm = "HS256"\nsecret_file = "secret"\n[revocation]\nbackend = "memory"\n[users]\nfile = "users.toml"
[[upstreams]]\nname = "u"\nurl = "http://127.0.0.1:{up}"\n
[[routes]]\npath = "/public/**"\nupstream = "u"\nauth = "public"\n
[[routes]]\npath = "/**"\nupstream = "u"\nauth = "required"\n""")
    p = spawn([binary, "serve", "--config", cfg], env={**os.environ, "RUST_LOG": "warn"}); wait_port(gp)
    st, body = request(f"http://127.0.0.1:{gp}/auth/login", method="POST",
                       body=json.dumps({"username": "bench", "password": "bench-password"}).encode())
    assert st == 200, body
    tok = json.loads(body)["access_token"]
    return {f"{label} public": (f"http://127.0.0.1:{gp}/public/x", None, [p.pid]),
            f"{label} protected": (f"http://127.0.0.1:{gp}/x", tok, [p.pid])}


def main(a, b):
    up, ngx = port(), port()
    conf = lambda body, workers=1: write(f"nginx-{port()}.conf", f"""
worker_processes {workers}; pid {run.work}/nginx-{port()}.pid; error_log /dev/null; daemon off;
events {{ worker_connections 4096; }}
http {{ access_log off; {body} }}""")
    spawn(["nginx", "-c", conf(f'server {{ listen 127.0.0.1:{up}; location / {{ return 200 "ok\\n"; }} }}')]); wait_port(up)
    n = spawn(["nginx", "-c", conf(f"""upstream u {{ server 127.0.0.1:{up}; keepalive 64; }}
server {{ listen 127.0.0.1:{ngx}; location / {{ proxy_pass http://u; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}""", WORKERS)]); wait_port(ngx)
    write("secret", run.SECRET)
    import subprocess
    h = subprocess.run([a, "hash-password"], input="bench-password\n", capture_output=True, text=True, check=True).stdout.strip()
    write("users.toml", f'[[user]]\nname = "bench"\npassword_hash = "{h}"\nroles = ["user"]\n')
    rows = {"nginx proxy_pass": (f"http://127.0.0.1:{ngx}/x", None, run.children(n.pid))}
    rows.update(gateway(a, "A", up))
    rows.update(gateway(b, "B", up))
    for name, (url, tok, _) in rows.items():
        st, _ = request(url, tok)
        assert st == 200, f"{name}: {st}"
    results = {name: [] for name in rows}
    for r in range(run.ROUNDS):
        for name in (list(rows) if r % 2 == 0 else list(reversed(rows))):
            url, tok, pids = rows[name]
            t0 = cpu_ticks(pids); res = wrk(url, tok); t1 = cpu_ticks(pids)
            assert res["errors"] == 0, f"{name}: {res['errors']} non-2xx"
            res["cpu_us"] = (t1 - t0) * 1e6 / TICK / max(res["reqs"], 1)
            results[name].append(res)
            print(f"round {r + 1} {name}: {res['rps']:.0f} req/s", file=sys.stderr)
    med = lambda name, key: statistics.median(x[key] for x in results[name])
    base = med("nginx proxy_pass", "rps")
    print(f"\nA = {a}\nB = {b}\nwrk -t{run.THREADS} -c{run.CONNS} -d{run.DURATION}s, {run.ROUNDS} interleaved rounds, medians\n")
    print("| scenario | req/s | p50 ms | p99 ms | CPU us/req | vs nginx |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in rows:
        print(f"| {name} | {med(name, 'rps'):,.0f} | {med(name, 'p50'):.2f} | {med(name, 'p99'):.2f} | {med(name, 'cpu_us'):.1f} | {med(name, 'rps') / base:.2f}x |")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    try:
        main(os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2]))
    finally:
        run.cleanup()
