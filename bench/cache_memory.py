#!/usr/bin/env python3
"""RSS of the verified-token cache: starts the release gateway (one worker, EdDSA, memory
revocation store, default `tokens.cache_capacity`) in front of nginx `return 200`, mints N
distinct access tokens with the gateway's own key (bench/mint.py), sends one protected
request per token and prints RSS before and after, from /proc/<pid>/status.

    cargo build --release --bin authgate
    python3 bench/cache_memory.py                     # N=100000 tokens, one user each
    N=100000 USERS=25000 python3 bench/cache_memory.py
    AUTHGATE=/path/to/authgate ALG=HS256 python3 bench/cache_memory.py

Goal (issue 24): after 100,000 distinct tokens, RSS <= idle + 24 MiB.
"""
import http.client, json, os, re, shutil, signal, socket, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mint  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AUTHGATE = os.environ.get("AUTHGATE", os.path.join(ROOT, "target/release/authgate"))
N = int(os.environ.get("N", "100000"))
USERS = int(os.environ.get("USERS", str(N)))
ALG = os.environ.get("ALG", "EdDSA")
CONNS = int(os.environ.get("CONNECTIONS", "4"))
SECRET = "bench-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
work = tempfile.mkdtemp(prefix="authgate-cache-mem-")
procs = []


def port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def wait_port(p, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", p), 0.2).close(); return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {p}; see {work}")


def spawn(args, name, **kw):
    p = subprocess.Popen(args, stdout=open(os.path.join(work, f"{name}.log"), "w"), stderr=subprocess.STDOUT, **kw)
    procs.append(p); return p


def write(name, text):
    path = os.path.join(work, name); open(path, "w").write(text); return path


def status(pid, field):
    m = re.search(rf"{field}:\s+(\d+)", open(f"/proc/{pid}/status").read())
    return int(m.group(1)) / 1024 if m else 0.0


def lookups(admin):
    """authgate_token_cache_lookups_total {hit, miss}."""
    c = http.client.HTTPConnection("127.0.0.1", admin, timeout=5); c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    return {r: int(float(m.group(1))) if (m := re.search(rf'token_cache_lookups_total\{{result="{r}"\}} ([\d.e+]+)', text)) else 0
            for r in ("hit", "miss")}


def send_all(gp, tokens):
    """One GET per token, over CONNS keep-alive connections in turn; every answer must be 200."""
    conns = [http.client.HTTPConnection("127.0.0.1", gp, timeout=10) for _ in range(CONNS)]
    for i, tok in enumerate(tokens):
        c = conns[i % CONNS]
        c.request("GET", "/x", headers={"Authorization": f"Bearer {tok}"})
        r = c.getresponse(); r.read()
        if r.status != 200:
            raise SystemExit(f"token {i}: {r.status}")
    for c in conns: c.close()


def main():
    if not os.access(AUTHGATE, os.X_OK):
        raise SystemExit(f"{AUTHGATE} not found: cargo build --release --bin authgate (or set AUTHGATE)")
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if not nginx:
        raise SystemExit("nginx is needed as the upstream (apt-get install nginx-light)")
    up, gp, ap = port(), port(), port()
    spawn([nginx, "-c", write("nginx.conf", f"""worker_processes 1; pid {work}/nginx.pid; error_log /dev/null; daemon off;
events {{ worker_connections 1024; }}
http {{ access_log off; server {{ listen 127.0.0.1:{up}; location / {{ return 200 "ok\\n"; }} }} }}""")], "nginx")
    wait_port(up)
    hashed = subprocess.run([AUTHGATE, "hash-password"], input="bench-password\n", capture_output=True, text=True, check=True).stdout.strip()
    write("users.toml", f'[[user]]\nname = "bench"\npassword_hash = "{hashed}"\nroles = ["user"]\n')
    write("secret", SECRET)
    key = 'secret_file = "secret"' if ALG == "HS256" else 'signing_key_file = "ed.pem"\ngenerate_missing_key = true'
    cfg = write("authgate.toml", f"""
[server]\nlisten = "127.0.0.1:{gp}"\nworkers = 1\n[log]\nformat = "json"\n[admin]\nlisten = "127.0.0.1:{ap}"
[tokens]\nalgorithm = "{ALG}"\n{key}\n[revocation]\nbackend = "memory"\n[users]\nfile = "users.toml"
[[upstreams]]\nname = "u"\nurl = "http://127.0.0.1:{up}"\n
[[routes]]\npath = "/**"\nupstream = "u"\nauth = "required"\n""")
    g = spawn([AUTHGATE, "serve", "--config", cfg], "authgate", env={**os.environ, "RUST_LOG": "warn"})
    wait_port(gp); wait_port(ap)
    time.sleep(1)  # the memory store refuses tokens issued before its epoch (whole seconds)
    idle = status(g.pid, "VmRSS")
    t0 = time.time()
    tokens = mint.mint(ALG, SECRET if ALG == "HS256" else os.path.join(work, "ed.pem"), N, USERS,
                       kid=mint.kid_of(f"http://127.0.0.1:{gp}"))
    t1 = time.time()
    send_all(gp, tokens[:1])
    one = status(g.pid, "VmRSS")
    send_all(gp, tokens)
    t2 = time.time()
    time.sleep(0.5)
    after, peak = status(g.pid, "VmRSS"), status(g.pid, "VmHWM")
    before = lookups(ap)
    sample = tokens[-1000:]
    send_all(gp, sample)
    again = lookups(ap)
    hits = again["hit"] - before["hit"]
    size = sum(map(len, tokens)) / len(tokens)
    print(f"authgate {ALG}, default tokens.cache_capacity, 1 worker; {N:,} distinct tokens of {USERS:,} users "
          f"(~{size:.0f} characters each; minted in {t1 - t0:.1f} s, sent in {t2 - t1:.1f} s)")
    print(f"RSS idle {idle:.1f} MiB; after one token {one:.1f} MiB; after {N:,} tokens {after:.1f} MiB "
          f"(peak {peak:.1f}): +{after - idle:.1f} MiB over idle = {(after - idle) * 1048576 / N:.0f} B per token")
    print(f"the last {len(sample):,} tokens again: {hits} cache hits of {len(sample)}")


def cleanup(*_):
    for p in procs:
        try: p.send_signal(signal.SIGTERM)
        except Exception: pass
    for p in procs:
        try: p.wait(5)
        except Exception: p.kill()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, cleanup)
    try:
        main()
    finally:
        cleanup()
