#!/usr/bin/env python3
"""Runs the side-by-side benchmark: see bench/run.sh and docs/benchmarks.md.

Every process listens on 127.0.0.1 only, gets one worker, and is stopped by pid at the end.
"""
import base64, json, os, re, shutil, signal, socket, statistics, subprocess, sys, tempfile, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mint  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "2"))
DURATION = int(os.environ.get("DURATION", "10"))
CONNS = int(os.environ.get("CONNECTIONS", "64"))
THREADS = int(os.environ.get("THREADS", "2"))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AUTHGATE = os.environ.get("AUTHGATE") or os.path.join(ROOT, "target/release/authgate")
SECRET = "bench-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
TICK = os.sysconf("SC_CLK_TCK")
procs = []
work = tempfile.mkdtemp(prefix="authgate-bench-")


def port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def wait_port(p, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", p), 0.2).close(); return
        except OSError:
            time.sleep(0.05)
    log = open(os.path.join(work, f"proc-{len(procs)}.log"), errors="replace").read()[-2000:]
    raise SystemExit(f"nothing listens on {p}; the last process started said:\n{log}")


def spawn(args, **kw):
    log = open(os.path.join(work, f"proc-{len(procs) + 1}.log"), "w")
    p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, **kw)
    procs.append(p); return p


def cleanup(*_):
    for p in procs:
        try: p.send_signal(signal.SIGTERM)
        except Exception: pass
    for p in procs:
        try: p.wait(5)
        except Exception: p.kill()
    shutil.rmtree(work, ignore_errors=True)


def write(name, text):
    path = os.path.join(work, name); open(path, "w").write(text); return path


TLS_CONTEXT = None  # the bench CA, once made (the TLS rows' correctness gate)
CLOSE_LUA = 'wrk.headers["Connection"] = "close"\n'  # a new connection (and TLS handshake) per request


def request(url, token=None, method="GET", body=None):
    req = urllib.request.Request(url, method=method, data=body)
    if token: req.add_header("Authorization", auth_value(token))
    if body: req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=5, context=TLS_CONTEXT if url.startswith("https") else None) as r: return r.status, r.read()
    except urllib.error.HTTPError as e: return e.code, e.read()


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        total += int(f[11]) + int(f[12])
    return total


def peak_rss_kib(pids):
    total = 0
    for pid in pids:
        m = re.search(r"VmHWM:\s+(\d+)", open(f"/proc/{pid}/status").read())
        total += int(m.group(1)) if m else 0
    return total


def children(pid):
    out = [pid]
    try:
        for c in open(f"/proc/{pid}/task/{pid}/children").read().split(): out += children(int(c))
    except OSError: pass
    return out


def auth_value(token):
    # A token, an API key (both Bearer), or a whole "Basic ..." value.
    return token if token.startswith("Basic ") else f"Bearer {token}"


def wrk(url, token, script=None, conns=None):
    args = ["wrk", f"-t{THREADS}", f"-c{conns or CONNS}", f"-d{DURATION}s", "--latency", url]
    if token: args[1:1] = ["-H", f"Authorization: {auth_value(token)}"]
    if script: args[1:1] = ["-s", script]
    out = subprocess.run(args, capture_output=True, text=True, timeout=DURATION + 30).stdout
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    def ms(label):
        m = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)\b", out)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
    return dict(reqs=reqs, rps=rps, p50=ms("50"), p99=ms("99"), errors=int(non2xx.group(1)) if non2xx else 0)


def rss_now_kib(pid):
    m = re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{pid}/status").read())
    return int(m.group(1)) if m else 0


IDLE_CONNS = int(os.environ.get("IDLE_CONNECTIONS", "8000"))


def rss_probe(up):
    """Idle RSS of a fresh gateway, then RSS with IDLE_CONNS open keep-alive connections: each
    opened in turn, one request answered, then left idle (clients arriving over a few seconds,
    as in issue 24's 8,000 keep-alive clients). A connection quiet for a tick (500 ms) is
    parked, its buffers freed; the freed memory goes back to the system at the next trim
    (every 5 s), so the figure is taken after 7 s."""
    gp, ap = port(), port()
    cfg = write("authgate-rss.toml", f"""
[server]\nlisten = "127.0.0.1:{gp}"\nworkers = 1\n[log]\nformat = "json"\n[admin]\nlisten = "127.0.0.1:{ap}"
[tokens]\nalgorithm = "HS256"\nsecret_file = "secret"\n[users]\nfile = "users.toml"
[[upstreams]]\nname = "u"\nurl = "http://127.0.0.1:{up}"\n[[routes]]\npath = "/**"\nupstream = "u"\nauth = "public"\n""")
    p = spawn([AUTHGATE, "serve", "--config", cfg], env={**os.environ, "RUST_LOG": "warn"}); wait_port(gp)
    time.sleep(0.5)
    idle = rss_now_kib(p.pid)
    conns = []
    for _ in range(IDLE_CONNS):
        c = socket.create_connection(("127.0.0.1", gp))
        c.sendall(b"GET /x HTTP/1.1\r\nHost: b\r\n\r\n")
        assert c.recv(4096).startswith(b"HTTP/1.1 200")
        conns.append(c)
    time.sleep(7)
    loaded = rss_now_kib(p.pid)
    # Parked connections still serve: a second request on each of the first hundred.
    for c in conns[:100]:
        c.sendall(b"GET /x HTTP/1.1\r\nHost: b\r\n\r\n")
        assert c.recv(4096).startswith(b"HTTP/1.1 200"), "a parked connection did not answer"
    for c in conns:
        c.close()
    return idle / 1024, loaded / 1024


# Many users: distinct valid tokens cycled by wrk (rows named "..., 20k tokens"), compared
# with the one-token rows of the same configuration: MANY_BASE (wrk -H, as every other row)
# and MANY_ONE, one token through the same wrk script, which isolates the gateway's cost of
# many users from wrk's (its Lua picks the request; wrk shares the 2 cores with the gateway).
# MANY_TOKENS="20000 200000" by default: the first fits the default cache (100k), the second
# does not.
MANY_BASE = "authgate protected EdDSA memory"
MANY_ONE = f"{MANY_BASE}, 1 token scripted"
MANY_TOKENS = [int(n) for n in os.environ.get("MANY_TOKENS", "20000 200000").split()]


def many_name(n):
    return MANY_ONE if n == 1 else f"{MANY_BASE}, {n // 1000}k tokens"


def warm_seconds(n):
    """A scripted row's warm-up: long enough that every token was asked for once (at 15k
    requests/s, slower than any row's misses here), so that the rows measure a warm cache,
    not its filling: 3 s, or 14 s for 200k tokens."""
    return max(3, -(-n // 15000))
CYCLE_LUA = """
-- Cycles through the tokens in TOKENS, one per request; each wrk thread starts at its own
-- part of the list (so that two threads do not ask for the same token back to back). The
-- requests are formatted once in init: per request, the script only picks one.
local reqs, i, n = {}, 0, 0
function setup(thread) thread:set("part", n); n = n + 1 end
function init(args)
  for line in io.lines("TOKENS") do
    reqs[#reqs + 1] = wrk.format(nil, nil, { ["Authorization"] = "Bearer " .. line })
  end
  i = math.floor(#reqs * (part or 0) / THREADS)
end
function request()
  i = i % #reqs + 1
  return reqs[i]
end
"""


def many_users(up, hosts, pids, sizes):
    """A gateway per many-users row (the EdDSA memory configuration, default cache), so that
    one row's tokens do not evict another's; its tokens signed with its own key (mint.py).
    Returns {row name: wrk script}."""
    only = os.environ.get("ROWS")
    rows = {many_name(n): n for n in MANY_TOKENS}
    rows = {name: n for name, n in rows.items() if not only or re.search(only, name)}
    if not rows:
        return {}
    rows = {MANY_ONE: 1, **rows}
    try:
        import cryptography  # noqa: F401  (EdDSA signing in mint.py)
    except ImportError:
        print("python3-cryptography missing: the many-users rows are skipped", file=sys.stderr)
        return {}
    scripts = {}
    for name, n in rows.items():
        gp, ap = port(), port()
        cfg = write(f"authgate-many-{n}.toml", f"""
[server]\nlisten = "127.0.0.1:{gp}"\nworkers = 1\n[log]\nformat = "json"\n[admin]\nlisten = "127.0.0.1:{ap}"
[tokens]\nalgorithm = "EdDSA"\nsigning_key_file = "ed-{n}.pem"\ngenerate_missing_key = true\n[revocation]\nbackend = "memory"\n[users]\nfile = "users.toml"
[[upstreams]]\nname = "u"\nurl = "http://127.0.0.1:{up}"\n
[[routes]]\npath = "/**"\nupstream = "u"\nauth = "required"\n""")
        p = spawn([AUTHGATE, "serve", "--config", cfg], env={**os.environ, "RUST_LOG": "warn"}); wait_port(gp)
        time.sleep(1)  # tokens from before the revocation store's epoch (whole seconds) are refused
        toks = mint.mint("EdDSA", os.path.join(work, f"ed-{n}.pem"), n, kid=mint.kid_of(f"http://127.0.0.1:{gp}"))
        path = write(f"tokens-{n}.txt", "\n".join(toks) + "\n")
        scripts[name] = write(f"tokens-{n}.lua", CYCLE_LUA.replace("TOKENS", path).replace("THREADS", str(THREADS)))
        hosts[name] = (f"http://127.0.0.1:{gp}/x", toks[0], True); pids[name] = [p.pid]; sizes[name] = n
        print(f"{name}: {n:,} tokens minted", file=sys.stderr)
    return scripts


def logins(hosts, pids):
    """Login throughput against raw argon2id on the same cores, and proxied p99 under a login
    storm; both in ROUNDS interleaved rounds, medians (a single pair varies by +-20% here)."""
    url, tok, _ = hosts["authgate protected HS256 memory"]
    base = url.rsplit("/", 1)[0]
    lua = write("login.lua", 'wrk.method = "POST"\nwrk.body = \'{"username":"bench","password":"bench-password"}\'\n'
                'wrk.headers["Content-Type"] = "application/json"\n')
    raws, logs, quiets, louds = [], [], [], []
    for _ in range(ROUNDS):
        raws.append(float(subprocess.run([os.path.join(ROOT, "target/release/examples/argon2_throughput"), str(DURATION)],
                                         capture_output=True, text=True, check=True).stdout))
        login = wrk(f"{base}/auth/login", None, lua, conns=8)
        assert login["errors"] == 0, f"login: {login['errors']} non-2xx"
        logs.append(login["rps"])
        quiets.append(wrk(url, tok))
        storm = subprocess.Popen(["wrk", "-t1", "-c8", f"-d{DURATION + 2}s", "-s", lua, f"{base}/auth/login"], stdout=subprocess.DEVNULL)
        time.sleep(1)
        louds.append(wrk(url, tok))
        storm.wait()
    med = statistics.median
    raw, login = med(raws), med(logs)
    quiet_p99, loud_p99 = med(r["p99"] for r in quiets), med(r["p99"] for r in louds)
    print(f"\nlogin: {login:.1f} logins/s vs raw argon2id {raw:.1f} verifications/s on the same cores = {login / raw:.2f}x "
          f"(medians of {ROUNDS}: logins {', '.join(f'{x:.1f}' for x in logs)}; raw {', '.join(f'{x:.1f}' for x in raws)})")
    print(f"proxied p99 (protected HS256 memory): {quiet_p99:.2f} ms quiet, {loud_p99:.2f} ms during a login storm = "
          f"{loud_p99 / quiet_p99:.2f}x; req/s {med(r['rps'] for r in quiets):,.0f} -> {med(r['rps'] for r in louds):,.0f}")


def main():
    signal.signal(signal.SIGTERM, cleanup)
    up = port()
    nginx_conf = lambda body: write(f"nginx-{port()}.conf", f"""
worker_processes 1; pid {work}/nginx-{port()}.pid; error_log /dev/null; daemon off;
events {{ worker_connections 4096; }}
http {{ access_log off; {body} }}""")
    spawn(["nginx", "-c", nginx_conf(f'server {{ listen 127.0.0.1:{up}; location / {{ return 200 "ok\\n"; }} }}')]); wait_port(up)
    ngx = port()
    spawn(["nginx", "-c", nginx_conf(f"""upstream u {{ server 127.0.0.1:{up}; keepalive 64; }}
server {{ listen 127.0.0.1:{ngx}; location / {{ proxy_pass http://u; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}""")]); wait_port(ngx)
    redis_port = port()
    spawn(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]); wait_port(redis_port)

    hosts = {"upstream direct": (f"http://127.0.0.1:{up}/x", None, None), "nginx proxy_pass": (f"http://127.0.0.1:{ngx}/x", None, None)}
    pids = {"upstream direct": [], "nginx proxy_pass": []}
    for p in procs[:2]: pids["upstream direct" if p is procs[0] else "nginx proxy_pass"] = children(p.pid)

    # authgate: four instances (HS256/EdDSA x memory/redis); the public route of the first.
    users = write("users.toml", "[[user]]\nname = \"bench\"\npassword_hash = \"%s\"\nroles = [\"user\"]\n" % subprocess.run(
        [AUTHGATE, "hash-password"], input="bench-password\n", capture_output=True, text=True, check=True).stdout.strip())
    write("secret", SECRET)
    if os.environ.get("MEMORY_ONLY"):
        idle, loaded = rss_probe(up)
        print(f"authgate RSS: idle {idle:.1f} MiB; with {IDLE_CONNS:,} idle keep-alive connections {loaded:.1f} MiB"
              f" ({(loaded - idle) * 1024 / IDLE_CONNS:.1f} KiB a connection)")
        return
    tokens = {}
    api_key = None
    for alg in ("HS256", "EdDSA"):
        for backend in ("memory", "redis", "redis-mirror"):
            gp, ap = port(), port()
            key = 'secret_file = "secret"' if alg == "HS256" else f'signing_key_file = "ed.pem"\ngenerate_missing_key = true'
            rev = {
                "memory": 'backend = "memory"',
                "redis": f'backend = "redis"\nredis_url = "redis://127.0.0.1:{redis_port}/0"',
                "redis-mirror": f'backend = "redis"\nredis_url = "redis://127.0.0.1:{redis_port}/0"\nmirror = true',
            }[backend]
            cfg = write(f"authgate-{alg}-{backend}.toml", f"""
[server]\nlisten = "127.0.0.1:{gp}"\nworkers = 1\n[log]\nformat = "json"\n[admin]\nlisten = "127.0.0.1:{ap}"
[tokens]\nalgorithm = "{alg}"\n{key}\n[revocation]\n{rev}\n[users]\nfile = "users.toml"
[login]\nmax_failures_per_ip = 1000000\nmax_failures_per_user = 1000000\n
[[upstreams]]\nname = "u"\nurl = "http://127.0.0.1:{up}"\n
[[routes]]\npath = "/public/**"\nupstream = "u"\nauth = "public"\n
[[routes]]\npath = "/key/**"\nupstream = "u"\napi_keys = true\n
[[routes]]\npath = "/basic/**"\nupstream = "u"\nbasic = true\n
[[routes]]\npath = "/**"\nupstream = "u"\nauth = "required"\n""")
            if not api_key:
                api_key = subprocess.run([AUTHGATE, "keys", "create", "--name", "bench", "--roles", "user", "--config", cfg],
                                         capture_output=True, text=True, check=True).stdout.strip()
            p = spawn([AUTHGATE, "serve", "--config", cfg], env={**os.environ, "RUST_LOG": "warn"}); wait_port(gp)
            st, body = request(f"http://127.0.0.1:{gp}/auth/login", method="POST", body=json.dumps({"username": "bench", "password": "bench-password"}).encode())
            assert st == 200, body
            tok = json.loads(body)["access_token"]; tokens[alg] = tok
            name = f"authgate protected {alg} {backend}"
            hosts[name] = (f"http://127.0.0.1:{gp}/x", tok, True); pids[name] = [p.pid]
            if alg == "HS256" and backend == "memory":
                hosts["authgate public"] = (f"http://127.0.0.1:{gp}/public/x", None, None); pids["authgate public"] = [p.pid]
                # Machine clients: an API key (should match a cached token) and HTTP Basic with
                # a cached verification (within 1.2x of a token route).
                hosts["authgate api key memory"] = (f"http://127.0.0.1:{gp}/key/x", api_key, True); pids["authgate api key memory"] = [p.pid]
                basic = "Basic " + base64.b64encode(b"bench:bench-password").decode()
                hosts["authgate basic (cached) memory"] = (f"http://127.0.0.1:{gp}/basic/x", basic, True); pids["authgate basic (cached) memory"] = [p.pid]

    many_sizes = {}
    scripts = many_users(up, hosts, pids, many_sizes)

    # The public route to an HTTPS upstream (private CA) and to two hosts (round robin).
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", f"{work}/ca.key", "-out", f"{work}/ca.pem", "-days", "2", "-subj", "/CN=bench-ca",
                    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", f"{work}/up.key", "-out", f"{work}/up.csr", "-subj", "/CN=localhost"], check=True, capture_output=True)
    write("san.ext", "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    subprocess.run(["openssl", "x509", "-req", "-in", f"{work}/up.csr", "-CA", f"{work}/ca.pem", "-CAkey", f"{work}/ca.key",
                    "-CAcreateserial", "-out", f"{work}/up.pem", "-days", "2", "-extfile", f"{work}/san.ext"], check=True, capture_output=True)
    ups, up2 = port(), port()
    spawn(["nginx", "-c", nginx_conf(f"""server {{ listen 127.0.0.1:{ups} ssl; ssl_certificate {work}/up.pem; ssl_certificate_key {work}/up.key;
  keepalive_requests 100000; location / {{ return 200 "ok\\n"; }} }}
server {{ listen 127.0.0.1:{up2}; location / {{ return 200 "ok\\n"; }} }}""")]); wait_port(ups); wait_port(up2)
    # Over TLS (TLS 1.3, the same P-256 certificate for both): nginx proxy_pass and authgate's
    # public route, on keep-alive connections and with a new connection per request.
    global TLS_CONTEXT
    import ssl
    TLS_CONTEXT = ssl.create_default_context(cafile=f"{work}/ca.pem")
    ngx_tls = port()
    ntls = spawn(["nginx", "-c", nginx_conf(f"""upstream u {{ server 127.0.0.1:{up}; keepalive 64; }}
server {{ listen 127.0.0.1:{ngx_tls} ssl; ssl_certificate {work}/up.pem; ssl_certificate_key {work}/up.key;
  ssl_protocols TLSv1.3; keepalive_requests 100000;
  location / {{ proxy_pass http://u; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}""")]); wait_port(ngx_tls)
    gp, ap = port(), port()
    cfg = write("authgate-tls.toml", f"""
[server]\nlisten = "127.0.0.1:{gp}"\nworkers = 1\ntls = {{ cert = "{work}/up.pem", key = "{work}/up.key" }}\n[log]\nformat = "json"\n[admin]\nlisten = "127.0.0.1:{ap}"
[tokens]\nalgorithm = "HS256"\nsecret_file = "secret"\n[revocation]\nbackend = "memory"\n[users]\nfile = "users.toml"
[[upstreams]]\nname = "u"\nurl = "http://127.0.0.1:{up}"\n
[[routes]]\npath = "/**"\nupstream = "u"\nauth = "public"\n""")
    tp = spawn([AUTHGATE, "serve", "--config", cfg], env={**os.environ, "RUST_LOG": "warn"}); wait_port(gp)
    close = write("close.lua", CLOSE_LUA)
    ngx_tls_pids = children(ntls.pid)
    for suffix, script in (("", None), (", new connection each", close)):
        hosts[f"nginx proxy_pass TLS{suffix}"] = (f"https://localhost:{ngx_tls}/x", None, None); pids[f"nginx proxy_pass TLS{suffix}"] = ngx_tls_pids
        hosts[f"authgate public TLS{suffix}"] = (f"https://localhost:{gp}/x", None, None); pids[f"authgate public TLS{suffix}"] = [tp.pid]
        if script:
            scripts[f"nginx proxy_pass TLS{suffix}"] = script
            scripts[f"authgate public TLS{suffix}"] = script
    for label, upstream in (("https upstream", f'url = "https://localhost:{ups}"\nca_file = "{work}/ca.pem"'),
                            ("two hosts", f'urls = ["http://127.0.0.1:{up}", "http://127.0.0.1:{up2}"]')):
        gp, ap = port(), port()
        cfg = write(f"authgate-{gp}.toml", f"""
[server]\nlisten = "127.0.0.1:{gp}"\nworkers = 1\n[log]\nformat = "json"\n[admin]\nlisten = "127.0.0.1:{ap}"
[tokens]\nalgorithm = "HS256"\nsecret_file = "secret"\n[revocation]\nbackend = "memory"\n[users]\nfile = "users.toml"
[[upstreams]]\nname = "u"\n{upstream}\n
[[routes]]\npath = "/**"\nupstream = "u"\nauth = "public"\n""")
        p = spawn([AUTHGATE, "serve", "--config", cfg], env={**os.environ, "RUST_LOG": "warn"}); wait_port(gp)
        hosts[f"authgate public {label}"] = (f"http://127.0.0.1:{gp}/x", None, None); pids[f"authgate public {label}"] = [p.pid]

    hap_plain, hap_jwt = port(), port()
    hcfg = write("haproxy.cfg", f"""
global\n  nbthread 1\n  maxconn 4096\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n  http-reuse always
backend be\n  server s1 127.0.0.1:{up}
frontend plain\n  bind 127.0.0.1:{hap_plain}\n  default_backend be
frontend jwt\n  bind 127.0.0.1:{hap_jwt}
  http-request set-var(txn.bearer) http_auth_bearer
  http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('$.alg')
  http-request deny deny_status 401 unless {{ var(txn.alg) -m str HS256 }}
  http-request deny deny_status 401 unless {{ var(txn.bearer),jwt_verify(txn.alg,"{SECRET}") -m int 1 }}
  default_backend be
""")
    hp = spawn(["haproxy", "-db", "-f", hcfg]); wait_port(hap_jwt)
    hosts["haproxy plain"] = (f"http://127.0.0.1:{hap_plain}/x", None, None); pids["haproxy plain"] = [hp.pid]
    hosts["haproxy jwt_verify HS256"] = (f"http://127.0.0.1:{hap_jwt}/x", tokens["HS256"], True); pids["haproxy jwt_verify HS256"] = [hp.pid]

    envoy = shutil.which("envoy")
    if envoy:
        k = base64.urlsafe_b64encode(SECRET.encode()).decode().rstrip("=")
        jwks_hs = json.dumps({"keys": [{"kty": "oct", "alg": "HS256", "k": k}]})
        st, jwks_ed = request(f"http://127.0.0.1:{hosts['authgate protected EdDSA memory'][0].split('/')[2].split(':')[1]}/.well-known/jwks.json")
        for label, jwks in (("plain", None), ("jwt_authn HS256", jwks_hs), ("jwt_authn EdDSA", jwks_ed.decode())):
            ep, eadmin = port(), port()
            filt = ""
            if jwks:
                filt = f"""
          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                p:
                  issuer: authgate
                  audiences: [authgate]
                  local_jwks: {{ inline_string: {json.dumps(jwks)} }}
              rules: [{{ match: {{ prefix: "/" }}, requires: {{ provider_name: p }} }}]"""
            ecfg = write(f"envoy-{ep}.yaml", f"""
admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {eadmin} }} }} }}
static_resources:
  listeners:
  - address: {{ socket_address: {{ address: 127.0.0.1, port_value: {ep} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: b
          route_config: {{ virtual_hosts: [{{ name: all, domains: ["*"], routes: [{{ match: {{ prefix: "/" }}, route: {{ cluster: up }} }}] }}] }}
          http_filters:{filt}
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
  - name: up
    type: STATIC
    load_assignment: {{ cluster_name: up, endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {up} }} }} }} }}] }}] }}
""")
            p = spawn([envoy, "-c", ecfg, "--concurrency", "1", "-l", "error", "--base-id", str(ep)])
            try:
                wait_port(ep, 30)
            except SystemExit:
                print(f"envoy {label} did not start; skipped", file=sys.stderr); continue
            alg = label.split()[-1] if jwks else None
            hosts[f"envoy {label}"] = (f"http://127.0.0.1:{ep}/x", tokens.get(alg) if alg else None, bool(jwks)); pids[f"envoy {label}"] = children(p.pid)

    # Forward-auth: the proxy in front asks authgate (judge-only) on every request, each
    # configured with exactly what `authgate explain --forward-auth` prints. CPU per request
    # counts both processes: that is what the deployment spends.
    gp, ap = port(), port()
    judge = write("authgate-judge.toml", f"""
[server]\nlisten = "127.0.0.1:{gp}"\nworkers = 1\ntrusted_proxies = ["127.0.0.1/32"]\n[log]\nformat = "json"\n[admin]\nlisten = "127.0.0.1:{ap}"
[tokens]\nalgorithm = "HS256"\nsecret_file = "secret"\n[revocation]\nbackend = "memory"\n[users]\nfile = "users.toml"
[forward_auth]\nonly = true\n
[[routes]]\npath = "/public/**"\nauth = "public"\n
[[routes]]\npath = "/**"\nauth = "required"\n""")
    jp = spawn([AUTHGATE, "serve", "--config", judge], env={**os.environ, "RUST_LOG": "warn"}); wait_port(gp)
    st, body = request(f"http://127.0.0.1:{gp}/auth/login", method="POST", body=json.dumps({"username": "bench", "password": "bench-password"}).encode())
    assert st == 200, body
    judge_tok = json.loads(body)["access_token"]
    explain = lambda proxy: subprocess.run([AUTHGATE, "explain", "--forward-auth", proxy, "--config", judge],
                                           capture_output=True, text=True, check=True).stdout
    fa = port()
    http_part, server_part = explain("nginx").split("# ---- inside your server { } block ----")
    write("authgate-nginx.conf", server_part)
    fp = spawn(["nginx", "-c", nginx_conf(f"""upstream your_app {{ server 127.0.0.1:{up}; keepalive 64; }}
{http_part}
server {{ listen 127.0.0.1:{fa}; proxy_http_version 1.1; proxy_set_header Connection ""; include {work}/authgate-nginx.conf; }}""")]); wait_port(fa)
    hosts["nginx auth_request -> authgate"] = (f"http://127.0.0.1:{fa}/x", judge_tok, True)
    pids["nginx auth_request -> authgate"] = children(fp.pid) + [jp.pid]
    if envoy:
        fe = port()
        ecfg = explain("envoy").replace("socket_address: { address: 0.0.0.0, port_value: 8080 }",
                                        f"socket_address: {{ address: 127.0.0.1, port_value: {fe} }}") \
                               .replace("{ socket_address: { address: 127.0.0.1, port_value: 3000 } }",
                                        f"{{ socket_address: {{ address: 127.0.0.1, port_value: {up} }} }}")
        p = spawn([envoy, "-c", write("envoy-ext-authz.yaml", ecfg), "--concurrency", "1", "-l", "error", "--base-id", str(fe)])
        try:
            wait_port(fe, 30)
            hosts["envoy ext_authz -> authgate"] = (f"http://127.0.0.1:{fe}/x", judge_tok, True)
            pids["envoy ext_authz -> authgate"] = children(p.pid) + [jp.pid]
        except SystemExit:
            print("envoy ext_authz did not start; skipped", file=sys.stderr)

    only = os.environ.get("ROWS")
    if only:
        keep = {"upstream direct", "nginx proxy_pass", "authgate protected HS256 memory"}
        if scripts:
            keep.update((MANY_BASE, MANY_ONE))
        hosts = {n: v for n, v in hosts.items() if n in keep or re.search(only, n)}

    # Correctness gate per row: a valid token gets 200, a tampered one 401.
    for name, (url, tok, protected) in hosts.items():
        st, _ = request(url, tok)
        assert st == 200, f"{name}: valid request got {st}"
        if protected:
            bad = tok[:-2] + ("AA" if not tok.endswith("AA") else "BB")
            st, _ = request(url, bad)
            assert st == 401, f"{name}: tampered token got {st}"

    memory = rss_probe(up)
    for name, script in scripts.items():
        if name in hosts:  # one pass first: the rows measure a warm cache, not its filling
            n = many_sizes.get(name, 1)
            subprocess.run(["wrk", f"-t{THREADS}", f"-c{CONNS}", f"-d{warm_seconds(n)}s", "-s", script, hosts[name][0]],
                           capture_output=True, timeout=120)
    results = {n: [] for n in hosts}
    for r in range(ROUNDS):
        order = list(hosts) if r % 2 == 0 else list(reversed(hosts))
        for name in order:
            url, tok, _ = hosts[name]
            script = scripts.get(name)
            t0 = cpu_ticks(pids[name]); res = wrk(url, None if script else tok, script); t1 = cpu_ticks(pids[name])
            res["cpu_us"] = (t1 - t0) * 1e6 / TICK / max(res["reqs"], 1)
            assert res["errors"] == 0, f"{name}: {res['errors']} non-2xx responses"
            results[name].append(res)
            print(f"round {r + 1} {name}: {res['rps']:.0f} req/s", file=sys.stderr)
    med = lambda name, key: statistics.median(x[key] for x in results[name])
    base_ngx, base_up = med("nginx proxy_pass", "rps"), med("upstream direct", "rps")
    print(f"\nwrk -t{THREADS} -c{CONNS} -d{DURATION}s, {ROUNDS} interleaved rounds, medians; every server 1 worker; loopback\n")
    print(f"| scenario | req/s | p50 ms | p99 ms | CPU us/req | peak RSS MiB | vs nginx | vs upstream |")
    print(f"|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in hosts:
        rss = peak_rss_kib(pids[name]) / 1024 if pids[name] else 0
        rps = med(name, "rps")
        print(f"| {name} | {rps:,.0f} | {med(name, 'p50'):.2f} | {med(name, 'p99'):.2f} | {med(name, 'cpu_us'):.1f} | {rss:.1f} | {rps / base_ngx:.2f}x | {rps / base_up:.2f}x |")
    if MANY_BASE in hosts:
        for name in scripts:
            if name in hosts and "tokens" in name:
                line = f"{name}: {med(name, 'rps') / med(MANY_BASE, 'rps'):.2f}x the one-token row"
                if MANY_ONE in hosts:
                    line += (f", {med(name, 'rps') / med(MANY_ONE, 'rps'):.2f}x the scripted one-token row"
                             f" (CPU per request {med(name, 'cpu_us') / med(MANY_ONE, 'cpu_us'):.2f}x)")
                print(line)
    logins(hosts, pids)
    print(f"\nauthgate RSS: idle {memory[0]:.1f} MiB; with {IDLE_CONNS:,} idle keep-alive connections {memory[1]:.1f} MiB"
          f" ({(memory[1] - memory[0]) * 1024 / IDLE_CONNS:.1f} KiB a connection)")
    for suffix in ("", ", new connection each"):
        a, n = f"authgate public TLS{suffix}", f"nginx proxy_pass TLS{suffix}"
        if a in hosts and n in hosts:
            print(f"TLS{suffix or ', keep-alive'}: authgate {med(a, 'rps') / med(n, 'rps'):.2f}x nginx's rate at "
                  f"{med(a, 'cpu_us'):.1f} vs {med(n, 'cpu_us'):.1f} us CPU/request ({med(a, 'cpu_us') / max(med(n, 'cpu_us'), 0.01):.2f}x)")

    print("(peak RSS above includes one argon2id login per gateway: m = 19 MiB)")


if __name__ == "__main__":
    try:
        main()
    finally:
        cleanup()
