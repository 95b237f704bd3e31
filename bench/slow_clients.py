#!/usr/bin/env python3
"""Slow clients against an app server with few workers: is a normal client still served?

    bench/slow_clients.py [LABEL=]path/to/authgate [[LABEL=]other/authgate ...]
    BUDGET=30 TRICKLERS=50 READERS=50 REQUESTS=40 bench/slow_clients.py target/release/authgate
    bench/slow_clients.py --memory 150 target/release/authgate   # RSS and overflows, readers only

The upstream is gunicorn (from target/webapps-venv; scripts/webapps-setup.sh is run when it is
missing) with 2 sync workers on 127.0.0.1 serving a WSGI app written to a temp dir:
GET /big answers 1 MiB with a Content-Length, POST /upload reads its body, GET /fast answers a
few bytes. Each front gets a fresh gunicorn and is measured alone, one after the other:

  * gunicorn direct (no front: the problem),
  * nginx (Debian's, one worker, default proxy buffering and client_body_buffer_size; only the
    temp paths are moved into the work dir),
  * each authgate given (release build, one public route, workers = 1, buffering defaults).

For each: TRICKLERS clients send a POST /upload whose 2,048-byte body trickles at 10 bytes/s
(one byte every 0.1 s, the connection kept), READERS clients GET /big and read it at 10 KiB/s
(recv of 1 KiB every 0.1 s, SO_RCVBUF 4 KiB so the kernel does not read ahead for them); after
2 s of that, a normal client makes REQUESTS sequential GET /fast (a new connection each, 0.2 s
apart, 3 s timeout each). Reported: the normal client's median / p90 / max latency (a failed
request counts at the time it took, i.e. the timeout), how many failed (error, timeout or not
200) and how many were not sent because the front's BUDGET (seconds) ran out; what the slow
clients achieved; the front's resident memory at the end. Every process is started in its own
process group and killed with it (try/finally), and the temp dir is removed.
"""
import http.client, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECONDS = int(os.environ.get("BUDGET", "30"))
TRICKLERS = int(os.environ.get("TRICKLERS", "50"))
READERS = int(os.environ.get("READERS", "50"))
REQUESTS = int(os.environ.get("REQUESTS", "40"))
BODY = 2048
TIMEOUT = 3.0
PAUSE = 0.2
RAMP = 2.0
VENV = os.path.join(ROOT, "target/webapps-venv")

APP = '''
BIG = b"x" * (1 << 20)

def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/big":
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(BIG)))])
        return [BIG]
    if path == "/upload":
        n = int(environ.get("CONTENT_LENGTH") or 0)
        got = len(environ["wsgi.input"].read(n))
        body = b"got %d\\n" % got
    elif path == "/fast":
        body = b"fast\\n"
    else:
        start_response("404 Not Found", [("Content-Length", "0")])
        return [b""]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''

work = tempfile.mkdtemp(prefix="authgate-slow-")
groups = []  # (Popen, stop signal)


def port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def write(name, text):
    path = os.path.join(work, name); open(path, "w").write(text); return path


def spawn(args, name, sig=signal.SIGTERM, **kw):
    log = open(os.path.join(work, f"{name}.log"), "w")
    p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **kw)
    groups.append((p, sig)); return p


def stop(p, sig):
    try: os.killpg(p.pid, sig)
    except ProcessLookupError: return
    try: p.wait(5)
    except subprocess.TimeoutExpired: pass
    try: os.killpg(p.pid, signal.SIGKILL)  # whatever of the group is left (workers included)
    except ProcessLookupError: pass
    try: p.wait(5)
    except subprocess.TimeoutExpired: pass
    groups[:] = [g for g in groups if g[0] is not p]


def wait_port(p, name, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", p), 0.2).close(); return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{name}: nothing listens on {p}:\n" + open(os.path.join(work, f"{name}.log")).read()[-2000:])


def group_rss_mib(pgid):
    total = 0
    for d in os.listdir("/proc"):
        if not d.isdigit(): continue
        try:
            if os.getpgid(int(d)) != pgid: continue
            for line in open(f"/proc/{d}/status"):
                if line.startswith("VmRSS:"): total += int(line.split()[1])
        except (OSError, ValueError):
            pass
    return total / 1024


def gunicorn():
    gp = port()
    p = spawn([os.path.join(VENV, "bin/gunicorn"), "--chdir", work, "-w", "2", "-k", "sync",
               "-b", f"127.0.0.1:{gp}", "--log-level", "warning", "slowapp:app"], "gunicorn",
              sig=signal.SIGINT)  # SIGINT: quick shutdown (SIGTERM waits for the stuck workers)
    wait_port(gp, "gunicorn"); time.sleep(0.5)  # the workers boot after the master binds
    return p, gp


def front_nginx(gp):
    np_ = port()
    for d in ("body", "proxy"):
        os.makedirs(os.path.join(work, "nginx", d), exist_ok=True)
        os.chmod(os.path.join(work, "nginx", d), 0o777)  # the worker runs as nobody under root
    conf = write("nginx.conf", f"""
worker_processes 1; pid {work}/nginx.pid; error_log {work}/nginx-error.log; daemon off;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {work}/nginx/body; proxy_temp_path {work}/nginx/proxy;
  server {{ listen 127.0.0.1:{np_}; location / {{ proxy_pass http://127.0.0.1:{gp}; }} }}
}}""")
    p = spawn(["nginx", "-c", conf], "nginx", sig=signal.SIGTERM)
    wait_port(np_, "nginx")
    return p, np_


def front_authgate(binary, gp, name):
    ap, ap2 = port(), port()
    write("secret", "slow-clients-secret-0123456789-abcdefghijklmnopqrstuvwxyz")
    write("users.toml", "")
    cfg = write(f"{name}.toml", f"""
[server]\nlisten = "127.0.0.1:{ap}"\nworkers = 1\n[admin]\nlisten = "127.0.0.1:{ap2}"
[tokens]\nalgorithm = "HS256"\nsecret_file = "secret"\n[revocation]\nbackend = "memory"\n[users]\nfile = "users.toml"
[[upstreams]]\nname = "app"\nurl = "http://127.0.0.1:{gp}"\n
[[routes]]\npath = "/**"\nupstream = "app"\nauth = "public"\n""")
    p = spawn([binary, "serve", "--config", cfg], name, env={**os.environ, "RUST_LOG": "warn"}, cwd=work)
    wait_port(ap, name)
    return p, ap


def trickler(fp, halt, st, lock):
    s = None
    try:
        s = socket.create_connection(("127.0.0.1", fp), timeout=5)
        s.sendall(f"POST /upload HTTP/1.1\r\nHost: 127.0.0.1:{fp}\r\nContent-Type: application/octet-stream\r\n"
                  f"Content-Length: {BODY}\r\n\r\n".encode())
        sent = 0
        while sent < BODY and not halt.wait(0.1):
            s.send(b"x"); sent += 1
            with lock: st["trickled"] += 1
    except OSError:
        with lock: st["trickle_errors"] += 1
    finally:
        if s: s.close()


def reader(fp, halt, st, lock):
    s = None
    try:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(1.0)
        s.connect(("127.0.0.1", fp))
        s.sendall(f"GET /big HTTP/1.1\r\nHost: 127.0.0.1:{fp}\r\n\r\n".encode())
        first = True
        while not halt.wait(0.1):
            try:
                data = s.recv(1024)
            except socket.timeout:
                continue  # not answered yet (queued behind busy workers)
            if not data:
                break
            with lock:
                if first and data.startswith(b"HTTP/1.1 200"): st["readers_answered"] += 1
                st["read"] += len(data)
            first = False
    except OSError:
        with lock: st["read_errors"] += 1
    finally:
        if s: s.close()


def normal_client(fp, deadline):
    lat, failed, not_sent = [], 0, 0
    for i in range(REQUESTS):
        if time.monotonic() >= deadline:
            not_sent += 1; continue
        t0 = time.monotonic()
        ok = False
        try:
            c = http.client.HTTPConnection("127.0.0.1", fp, timeout=min(TIMEOUT, max(0.1, deadline - t0)))
            c.request("GET", "/fast"); r = c.getresponse(); body = r.read(); c.close()
            ok = r.status == 200 and body == b"fast\n"
        except (OSError, http.client.HTTPException):
            pass
        lat.append(time.monotonic() - t0)
        failed += not ok
        time.sleep(PAUSE)
    return lat, failed, not_sent


def measure(label, start_front):
    g, gp = gunicorn()
    front = None
    try:
        front, fp = start_front(gp) if start_front else (None, gp)
        halt, lock = threading.Event(), threading.Lock()
        st = dict(trickled=0, trickle_errors=0, read=0, readers_answered=0, read_errors=0)
        order = []  # interleaved: trickler, reader, trickler, ...
        for i in range(max(TRICKLERS, READERS)):
            order += [trickler] * (i < TRICKLERS) + [reader] * (i < READERS)
        threads = [threading.Thread(target=k, args=(fp, halt, st, lock), daemon=True) for k in order]
        t_start = time.monotonic()
        for t in threads:
            t.start(); time.sleep(0.01)
        time.sleep(RAMP)
        t0 = time.monotonic()
        lat, failed, not_sent = normal_client(fp, t_start + SECONDS)
        elapsed = time.monotonic() - t_start
        rss = f"{group_rss_mib(front.pid):.1f}" if front else "-"
        with lock: snap = dict(st)
        halt.set()
        for t in threads: t.join(3)
        q = statistics.quantiles(lat, n=10, method="inclusive") if len(lat) > 1 else lat * 9
        return dict(label=label, n=len(lat), median=statistics.median(lat) if lat else float("nan"),
                    p90=q[8] if lat else float("nan"), max=max(lat) if lat else float("nan"),
                    failed=failed, not_sent=not_sent, elapsed=elapsed, rss=rss,
                    trickle_rate=snap["trickled"] / elapsed, read_rate=snap["read"] / elapsed / 1024,
                    answered=snap["readers_answered"], errors=snap["trickle_errors"] + snap["read_errors"],
                    normal_s=time.monotonic() - t0)
    finally:
        if front: stop(front, signal.SIGTERM)
        stop(g, signal.SIGINT)


def ensure_gunicorn():
    if not os.path.exists(os.path.join(VENV, "bin/gunicorn")):
        subprocess.run([os.path.join(ROOT, "scripts/webapps-setup.sh")], check=True, cwd=ROOT)
    if not shutil.which("nginx") and not os.path.exists("/usr/sbin/nginx"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "nginx-light"], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def memory(binary, readers):
    """Only slow readers against one authgate: its RSS and authgate_buffer_overflows_total over
    12 s, to see whether server.max_buffered (64 MiB by default) bounds what they pin."""
    import re, urllib.request
    g, gp = gunicorn()
    try:
        a, fp = front_authgate(binary, gp, "authgate-mem")
        admin = re.search(r'\[admin\]\nlisten = "127.0.0.1:(\d+)"', open(os.path.join(work, "authgate-mem.toml")).read()).group(1)
        halt, lock = threading.Event(), threading.Lock()
        st = dict(read=0, readers_answered=0, read_errors=0)
        threads = [threading.Thread(target=reader, args=(fp, halt, st, lock), daemon=True) for _ in range(readers)]
        for t in threads:
            t.start(); time.sleep(0.01)
        print(f"{readers} readers of 1 MiB at 10 KiB/s, authgate {binary}")
        for i in range(1, 7):
            time.sleep(2)
            m = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5).read().decode()
            ov = re.search(r"^authgate_buffer_overflows_total (\d+)", m, re.M)
            print(f"t={2 * i:2d}s RSS {group_rss_mib(a.pid):6.1f} MiB, answered {st['readers_answered']}/{readers}, "
                  f"authgate_buffer_overflows_total {ov.group(1) if ov else '?'}, readers still reading "
                  f"{sum(t.is_alive() for t in threads)}, errors {st['read_errors']}", flush=True)
        halt.set()
        for t in threads: t.join(3)
    finally:
        for p, sig in list(groups):
            stop(p, sig)


def main(args):
    ensure_gunicorn()
    write("slowapp.py", APP)
    if args[:1] == ["--memory"]:
        return memory(os.path.abspath(args[2]), int(args[1]))
    fronts = [("gunicorn direct (no front)", None), ("nginx proxy_pass (default buffering)", front_nginx)]
    for i, a in enumerate(args):
        label, _, path = a.rpartition("=")
        path = os.path.abspath(path)
        fronts.append((f"authgate {label or path}", lambda gp, path=path, i=i: front_authgate(path, gp, f"authgate{i}")))
    print(f"{TRICKLERS} clients trickling a {BODY}-byte POST body at 10 B/s, {READERS} reading 1 MiB at 10 KiB/s; "
          f"a normal client: {REQUESTS} x GET /fast, {TIMEOUT:.0f} s timeout, {SECONDS} s budget per front\n", flush=True)
    print("| front | normal median | p90 | max | failed | not sent | slow readers answered | read KiB/s (all) | trickled B/s (all) | slow-client errors | front RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|", flush=True)
    for label, start in fronts:
        r = measure(label, start)
        print(f"| {r['label']} | {r['median'] * 1000:,.1f} ms | {r['p90'] * 1000:,.1f} ms | {r['max'] * 1000:,.1f} ms "
              f"| {r['failed']}/{REQUESTS} | {r['not_sent']} | {r['answered']}/{READERS} | {r['read_rate']:,.0f} "
              f"| {r['trickle_rate']:,.0f} | {r['errors']} | {r['rss']} |", flush=True)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    finally:
        for p, sig in list(groups):
            stop(p, sig)
        shutil.rmtree(work, ignore_errors=True)
