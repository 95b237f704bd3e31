#!/usr/bin/env python3
"""The many-users row round by round: one gateway (EdDSA, memory store, default cache) behind
which wrk cycles N distinct tokens with bench/run.py's script; after a warm-up pass, ROUNDS
rounds of 6 s, each printing req/s, the token cache's hit ratio (from the admin port's
authgate_token_cache_lookups_total) and the gateway's CPU a request. PERF=r4 records a
`perf` profile of round 4 and keeps the work directory that holds it.

    N=200000 ROUNDS=6 python3 bench/hit_ratio.py        # after bench/run.sh built the release binary

Needs nginx, wrk and Python's `cryptography` (what bench/run.sh installs). Everything it
starts, it stops.
"""
import os, re, shutil, socket, subprocess, sys, tempfile, time, urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import mint  # noqa: E402

AUTHGATE = os.environ.get("AUTHGATE", os.path.join(HERE, "..", "target", "release", "authgate"))
N = int(os.environ.get("N", "200000"))
ROUNDS = int(os.environ.get("ROUNDS", "6"))


def port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def wait(p):
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", p), 0.2).close(); return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on {p}")


def main():
    work = tempfile.mkdtemp(prefix="authgate-hit-ratio-")
    up, gp, ap = port(), port(), port()
    with open(f"{work}/nginx.conf", "w") as f:
        f.write(f"worker_processes 1; pid {work}/nginx.pid; error_log {work}/err.log; daemon off;\n"
                f"events {{}}\nhttp {{ access_log off; server {{ listen 127.0.0.1:{up}; "
                f"location / {{ return 200 'ok'; }} }} }}\n")
    open(f"{work}/users.toml", "w").close()
    with open(f"{work}/authgate.toml", "w") as f:
        f.write(f"""[server]\nlisten = "127.0.0.1:{gp}"\nworkers = 1\n[admin]\nlisten = "127.0.0.1:{ap}"
[tokens]\nalgorithm = "EdDSA"\nsigning_key_file = "ed.pem"\ngenerate_missing_key = true
[revocation]\nbackend = "memory"\n[users]\nfile = "users.toml"
[[upstreams]]\nname = "u"\nurl = "http://127.0.0.1:{up}"
[[routes]]\npath = "/**"\nupstream = "u"\nauth = "required"\n""")
    nginx = subprocess.Popen(["nginx", "-c", f"{work}/nginx.conf", "-p", work])
    gw = subprocess.Popen([AUTHGATE, "serve", "--config", f"{work}/authgate.toml"],
                          env={**os.environ, "RUST_LOG": "error"})
    try:
        wait(gp); wait(up)
        time.sleep(1.2)  # tokens from before the revocation store's epoch are refused
        toks = mint.mint("EdDSA", f"{work}/ed.pem", N, kid=mint.kid_of(f"http://127.0.0.1:{gp}"))
        with open(f"{work}/tokens.txt", "w") as f:
            f.write("\n".join(toks) + "\n")
        with open(os.path.join(HERE, "run.py")) as f:
            lua = f.read().split('CYCLE_LUA = """')[1].split('"""')[0]
        with open(f"{work}/cycle.lua", "w") as f:
            f.write(lua.replace("TOKENS", f"{work}/tokens.txt").replace("THREADS", "2"))

        def lookups():
            m = urllib.request.urlopen(f"http://127.0.0.1:{ap}/metrics", timeout=5).read().decode()
            total = lambda r: sum(float(x) for x in re.findall(
                r'authgate_token_cache_lookups_total\{[^}]*result="' + r + r'"[^}]*\} (\S+)', m))
            return total("hit"), total("miss")

        def cpu_ticks():
            with open(f"/proc/{gw.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])

        tick = os.sysconf("SC_CLK_TCK")
        rounds = [("warm-up", max(3, -(-N // 15000)))] + [(f"r{i}", 6) for i in range(1, ROUNDS + 1)]
        for label, seconds in rounds:
            (h0, m0), c0 = lookups(), cpu_ticks()
            prof = None
            if label == os.environ.get("PERF"):
                prof = subprocess.Popen(["perf", "record", "-F", "2000", "-g", "-o", f"{work}/perf.data",
                                         "-p", str(gw.pid), "--", "sleep", str(seconds - 1)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            out = subprocess.run(["wrk", "-t2", "-c64", f"-d{seconds}s", "-s", f"{work}/cycle.lua",
                                  f"http://127.0.0.1:{gp}/x"], capture_output=True, text=True,
                                 timeout=seconds + 60).stdout
            if prof:
                prof.wait()
                print(f"perf profile: {work}/perf.data")
            (h1, m1), c1 = lookups(), cpu_ticks()
            n = max((h1 - h0) + (m1 - m0), 1)
            rps = re.search(r"Requests/sec:\s+(\S+)", out).group(1)
            print(f"{label}: {float(rps):,.0f} req/s, hit ratio {(h1 - h0) / n:.3f}, "
                  f"CPU {(c1 - c0) * 1e6 / tick / n:.1f} us/req", flush=True)
    finally:
        gw.terminate(); nginx.terminate()
        gw.wait(timeout=10); nginx.wait(timeout=10)
        if not os.environ.get("PERF"):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
