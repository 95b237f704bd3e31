#!/usr/bin/env python3
"""Soak: two gateways sharing a Sentinel-managed Redis under load for SOAK_SECONDS (default
600), while the primary fails over twice and the configs reload every 30 s. Reports requests
served, revoked tokens admitted (must be 0), and RSS and open file descriptors of each gateway
at the start and the end. See bench/soak.sh; not part of CI.

Everything listens on 127.0.0.1 only and is stopped by pid at the end.
"""
import json, os, re, shutil, signal, socket, subprocess, sys, tempfile, threading, time, urllib.request

SECONDS = int(os.environ.get("SOAK_SECONDS", "600"))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AUTHGATE = os.path.join(ROOT, "target/release/authgate")
work = tempfile.mkdtemp(prefix="authgate-soak-")
procs = {}


def port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def wait_port(p, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", p), 0.2).close(); return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {p}")


def spawn(name, args):
    log = open(os.path.join(work, f"{name}.log"), "w")
    procs[name] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    return procs[name]


def stop(name, sig=signal.SIGTERM):
    p = procs.pop(name, None)
    if p:
        p.send_signal(sig)
        try: p.wait(5)
        except Exception: p.kill()


def cleanup(*_):
    for name in list(procs):
        stop(name)
    shutil.rmtree(work, ignore_errors=True)


def request(url, token=None, method="GET", body=None):
    req = urllib.request.Request(url, method=method, data=body)
    if token: req.add_header("Authorization", f"Bearer {token}")
    if body: req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=5) as r: return r.status, r.read()
    except urllib.error.HTTPError as e: return e.code, e.read()
    except OSError: return 0, b""


def cli(p, *args):
    return subprocess.run(["redis-cli", "-p", str(p), *args], capture_output=True, text=True).stdout


def redis_node(name, p, replica_of=None):
    d = os.path.join(work, name); os.makedirs(d, exist_ok=True)
    args = ["redis-server", "--port", str(p), "--bind", "127.0.0.1", "--dir", d, "--save", "", "--appendonly", "no"]
    if replica_of: args += ["--replicaof", "127.0.0.1", str(replica_of)]
    spawn(name, args); wait_port(p)


def master_port(sentinel):
    out = cli(sentinel, "sentinel", "get-master-addr-by-name", "mymaster").split()
    return int(out[1]) if len(out) == 2 else None


def stats(pid):
    rss = int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{pid}/status").read()).group(1)) / 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def main():
    signal.signal(signal.SIGTERM, cleanup)
    up = port()
    spawn("upstream", ["nginx", "-c", write("nginx.conf", f"""
worker_processes 1; pid {work}/nginx.pid; error_log /dev/null; daemon off;
events {{ worker_connections 4096; }}
http {{ access_log off; server {{ listen 127.0.0.1:{up}; location / {{ return 200 "ok\\n"; }} }} }}""")]); wait_port(up)
    ports = {"r0": port(), "r1": port()}
    redis_node("r0", ports["r0"])
    redis_node("r1", ports["r1"], replica_of=ports["r0"])
    sentinels = []
    for i in range(3):
        sp = port(); d = os.path.join(work, f"s{i}"); os.makedirs(d)
        conf = write(f"s{i}/sentinel.conf", f"port {sp}\nbind 127.0.0.1\ndir {d}\n"
                     f"sentinel monitor mymaster 127.0.0.1 {ports['r0']} 2\n"
                     "sentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 5000\n")
        spawn(f"sentinel{i}", ["redis-sentinel", conf]); wait_port(sp); sentinels.append(sp)
    users = "[[user]]\nname = \"soak\"\npassword_hash = \"%s\"\nroles = [\"user\"]\n" % subprocess.run(
        [AUTHGATE, "hash-password"], input="soak-password\n", capture_output=True, text=True, check=True).stdout.strip()
    write("users.toml", users)
    write("secret", "soak-secret-0123456789-abcdefghijklmnopqrstuvwxyz")
    nodes = ", ".join(f'"redis://127.0.0.1:{s}"' for s in sentinels)
    gws = []
    for i in range(2):
        gp, ap = port(), port()
        def config(extra_route, gp=gp, ap=ap):
            return f"""
[server]\nlisten = "127.0.0.1:{gp}"\nworkers = 1\n[log]\nformat = "json"\n[admin]\nlisten = "127.0.0.1:{ap}"\nready_requires_store = false
[tokens]\nalgorithm = "HS256"\nsecret_file = "secret"\naccess_ttl = "30m"\n[users]\nfile = "users.toml"
[revocation]\nbackend = "redis"\ntimeout = "300ms"\nsentinel = {{ master_name = "mymaster", nodes = [{nodes}] }}
[login]\nmax_failures_per_ip = 1000000\n
[[upstreams]]\nname = "u"\nurl = "http://127.0.0.1:{up}"\n
{extra_route}
[[routes]]\npath = "/**"\nupstream = "u"\nauth = "required"\n"""
        path = write(f"gw{i}.toml", config(""))
        p = spawn(f"gw{i}", [AUTHGATE, "serve", "--config", path]); wait_port(gp)
        gws.append(dict(port=gp, admin=ap, pid=p.pid, path=path, config=config))
    login = lambda gw: json.loads(request(f"http://127.0.0.1:{gw['port']}/auth/login", method="POST",
                                          body=json.dumps({"username": "soak", "password": "soak-password"}).encode())[1])
    valid = login(gws[0])["access_token"]
    revoked = []

    def revoke_one():
        t = login(gws[1])["access_token"]
        st, _ = request(f"http://127.0.0.1:{gws[1]['port']}/auth/logout", t, method="POST")
        if st == 204:
            revoked.append(t)

    revoke_one()
    start = {i: stats(g["pid"]) for i, g in enumerate(gws)}
    print(f"start: " + ", ".join(f"gw{i} RSS {r:.1f} MiB, {f} fds" for i, (r, f) in start.items()), file=sys.stderr)

    # Load: one wrk per gateway for the whole run.
    wrks = [subprocess.Popen(["wrk", "-t1", "-c32", f"-d{SECONDS}s", "-H", f"Authorization: Bearer {valid}",
                              f"http://127.0.0.1:{g['port']}/x"], stdout=subprocess.PIPE, text=True) for g in gws]
    admitted = [0]; probes = [0]; stop_flag = threading.Event()

    def probe_revoked():
        while not stop_flag.is_set():
            for t in list(revoked):
                for g in gws:
                    st, _ = request(f"http://127.0.0.1:{g['port']}/x", t)
                    probes[0] += 1
                    if st == 200:
                        admitted[0] += 1
            time.sleep(0.2)

    threading.Thread(target=probe_revoked, daemon=True).start()
    t0 = time.time(); failovers = []; reloads = 0; next_reload = 30
    failover_at = [SECONDS * 0.3, SECONDS * 0.65]
    while time.time() - t0 < SECONDS:
        el = time.time() - t0
        if failover_at and el >= failover_at[0]:
            failover_at.pop(0)
            old = master_port(sentinels[0])
            # Revocations written just before are replicated before the kill (async replication).
            revoke_one(); time.sleep(0.5)
            name = "r0" if old == ports["r0"] else "r1"
            stop(name, signal.SIGKILL)
            f0 = time.time()
            while master_port(sentinels[0]) == old and time.time() - f0 < 60:
                time.sleep(0.2)
            failovers.append(time.time() - f0)
            print(f"failover {len(failovers)}: {old} -> {master_port(sentinels[0])} in {failovers[-1]:.1f} s", file=sys.stderr)
            redis_node(name, ports[name], replica_of=master_port(sentinels[0]))  # back as a replica
        if el >= next_reload:
            next_reload += 30; reloads += 1
            route = '[[routes]]\npath = "/soak-%d/**"\nupstream = "u"\nauth = "public"\n' % reloads
            for g in gws:
                open(g["path"], "w").write(g["config"](route))
            revoke_one()
        time.sleep(0.5)
    stop_flag.set()
    served = 0; errors = 0
    for w in wrks:
        out = w.communicate()[0]
        served += int(re.search(r"(\d+) requests in", out).group(1))
        m = re.search(r"Non-2xx or 3xx responses: (\d+)", out); errors += int(m.group(1)) if m else 0
    end = {i: stats(g["pid"]) for i, g in enumerate(gws)}
    ok_reloads = []
    for g in gws:
        _, text = request(f"http://127.0.0.1:{g['admin']}/metrics")
        m = re.search(r'authgate_config_reloads_total\{result="ok"\} (\d+)', text.decode())
        ok_reloads.append(int(m.group(1)) if m else 0)
    print(f"\nsoak: {SECONDS} s, two gateways, one Sentinel-managed Redis (1 primary, 1 replica, 3 sentinels)\n")
    print("| measure | value |\n|---|---:|")
    print(f"| requests served (wrk, both gateways) | {served:,} |")
    print(f"| of which non-2xx (503 while the primary was away) | {errors:,} |")
    print(f"| revoked tokens | {len(revoked)} |")
    print(f"| revoked-token probes | {probes[0]:,} |")
    print(f"| revoked tokens admitted | {admitted[0]} |")
    print(f"| failovers (seconds until the sentinels named a new primary) | {', '.join(f'{f:.1f}' for f in failovers)} |")
    print(f"| config rewrites / reloads counted per gateway | {reloads} / {', '.join(map(str, ok_reloads))} |")
    for i in range(2):
        print(f"| gw{i} RSS start -> end (MiB) | {start[i][0]:.1f} -> {end[i][0]:.1f} |")
        print(f"| gw{i} open fds start -> end | {start[i][1]} -> {end[i][1]} |")
    if admitted[0]:
        raise SystemExit("a revoked token was admitted")


def write(name, text):
    path = os.path.join(work, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "w").write(text); return path


if __name__ == "__main__":
    try:
        main()
    finally:
        cleanup()
