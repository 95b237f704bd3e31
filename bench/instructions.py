#!/usr/bin/env python3
"""User-space instructions per proxied request, counted by valgrind's callgrind: a figure that
does not move with the machine's load the way req/s does (+-15% here), so a change of 2% can be
seen. Kernel time (the loopback TCP path, most of the CPU) is not counted.

    bench/instructions.py target/release/authgate [other/authgate ...]

For every binary: the public route and the protected route (HS256, memory revocation, warm token
cache; the token is minted by the measured process, since a memory store refuses tokens issued
before it started) behind an nginx upstream; 3 s of warm-up, then the counters are zeroed, wrk -t1 -c8 runs
6 s, and the counters are dumped. valgrind, wrk and nginx are installed from Debian when absent.
Build first: cargo build --release --bin authgate. CALLGRIND_DIR=dir keeps each profile there as
<target dir name>-<route>.out (e.g. bench-target-public.out) for callgrind_annotate.
"""
import glob, json, os, re, shutil, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402
from run import port, spawn, wait_port, write, request  # noqa: E402


def config(gp, ap, up):
    return write(f"ir-{gp}.toml", f"""
[server]\nlisten = "127.0.0.1:{gp}"\nworkers = 1\n[admin]\nlisten = "127.0.0.1:{ap}"
[tokens]\nalgorithm = "HS256"\nsecret_file = "secret"\n[revocation]\nbackend = "memory"\n[users]\nfile = "users.toml"
[[upstreams]]\nname = "u"\nurl = "http://127.0.0.1:{up}"\n
[[routes]]\npath = "/public/**"\nupstream = "u"\nauth = "public"\n
[[routes]]\npath = "/**"\nupstream = "u"\nauth = "required"\n""")


def wrk(url, token, seconds, load=("-t1", "-c8")):
    args = ["wrk", *load, f"-d{seconds}s", url]
    if token:
        args[1:1] = ["-H", f"Authorization: Bearer {token}"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 30).stdout
    assert "Non-2xx" not in out, out
    return int(re.search(r"(\d+) requests in", out).group(1))


def login(gp):
    st, body = request(f"http://127.0.0.1:{gp}/auth/login", method="POST",
                       body=json.dumps({"username": "bench", "password": "bench-password"}).encode())
    assert st == 200, body
    return json.loads(body)["access_token"]


def measure(binary, up, path, protected):
    gp, ap = port(), port()
    cfg = config(gp, ap, up)
    out = os.path.join(run.work, f"callgrind.{gp}")
    p = spawn(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p", binary, "serve", "--config", cfg],
              env={**os.environ, "RUST_LOG": "warn"})
    wait_port(gp, 120)
    # The token comes from the measured process itself: a memory revocation store refuses tokens
    # issued before it started (its epoch), so a token from another instance would be a 401.
    token = login(gp) if protected else None
    url = f"http://127.0.0.1:{gp}{path}"
    wrk(url, token, 3)
    subprocess.run(["callgrind_control", "-z", str(p.pid)], capture_output=True, check=True)
    n = wrk(url, token, 6)
    subprocess.run(["callgrind_control", "-d", str(p.pid)], capture_output=True, check=True)
    time.sleep(1)
    p.terminate(); p.wait(30)
    dumps = [f for f in glob.glob(f"{out}.{p.pid}.*")]
    dump = max(dumps, key=os.path.getmtime)
    if os.environ.get("CALLGRIND_DIR"):  # keep the profile for callgrind_annotate
        os.makedirs(os.environ["CALLGRIND_DIR"], exist_ok=True)
        shutil.copy(dump, os.path.join(os.environ["CALLGRIND_DIR"],
                                       f"{os.path.basename(os.path.dirname(os.path.dirname(binary)))}-{'protected' if protected else 'public'}.out"))
    text = open(dump).read()
    total = int(re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M).group(1))
    return n, total


def ensure_tools():
    need = [pkg for tool, pkg in (("valgrind", "valgrind"), ("wrk", "wrk"), ("nginx", "nginx-light"))
            if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}")]
    if need:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *need], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def main(binaries):
    ensure_tools()
    up = port()
    conf = write(f"nginx-{up}.conf", f"""
worker_processes 1; pid {run.work}/nginx-{up}.pid; error_log /dev/null; daemon off;
events {{ worker_connections 1024; }}
http {{ access_log off; server {{ listen 127.0.0.1:{up}; location / {{ return 200 "ok\\n"; }} }} }}""")
    spawn(["nginx", "-c", conf]); wait_port(up)
    write("secret", run.SECRET)
    h = subprocess.run([binaries[0], "hash-password"], input="bench-password\n", capture_output=True, text=True, check=True).stdout.strip()
    write("users.toml", f'[[user]]\nname = "bench"\npassword_hash = "{h}"\nroles = ["user"]\n')
    print("| binary | route | requests | instructions | per request |")
    print("|---|---|---:|---:|---:|")
    for b in binaries:
        for label, path, protected in (("public", "/public/x", False), ("protected HS256 memory", "/x", True)):
            n, total = measure(b, up, path, protected)
            print(f"| {b} | {label} | {n:,} | {total:,} | {total // max(n, 1):,} |", flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    try:
        main([os.path.abspath(b) for b in sys.argv[1:]])
    finally:
        run.cleanup()
