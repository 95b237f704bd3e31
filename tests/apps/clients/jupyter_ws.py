#!/usr/bin/env python3
"""Does what JupyterLab's page does to run a cell and save a notebook, without a browser: reads
the _xsrf cookie, POST /api/kernels with X-XSRFToken, runs `print(6*7)` over the kernel's
WebSocket, PUTs a notebook, deletes the kernel. Directly or through the gateway.

Usage: target/webapps-venv/bin/python tests/apps/clients/jupyter_ws.py BASE_URL [HEADER ...]
  BASE_URL  Jupyter's public root, e.g. http://127.0.0.1:8888 or http://127.0.0.1:GW/jupyter
  HEADER    extra request headers, e.g. "Cookie: authgate_access=..."
Prints one line per step and exits non-zero on the first failure.
"""
import json
import sys
import uuid
from urllib.parse import urlsplit

import requests
import websocket


def main():
    base = sys.argv[1].rstrip("/")
    hdrs = dict(h.split(": ", 1) for h in sys.argv[2:])
    parts = urlsplit(base)
    origin = f"{parts.scheme}://{parts.netloc}"
    s = requests.Session()
    r = s.get(base + "/lab", headers=hdrs)
    xsrf = s.cookies.get("_xsrf")
    print("lab", r.status_code, "xsrf cookie:", bool(xsrf))
    if r.status_code != 200 or not xsrf:
        sys.exit("no lab page or no _xsrf cookie")
    post = {**hdrs, "X-XSRFToken": xsrf, "Origin": origin}
    r = s.post(base + "/api/kernels", json={"name": "python3"}, headers=post)
    print("start kernel", r.status_code)
    if r.status_code != 201:
        sys.exit(r.text[:200])
    kid = r.json()["id"]
    cookie = "; ".join([f"{c.name}={c.value}" for c in s.cookies] +
                       [v for k, v in hdrs.items() if k.lower() == "cookie"])
    ws_hdrs = [f"{k}: {v}" for k, v in hdrs.items() if k.lower() != "cookie"] + [f"Cookie: {cookie}"]
    ws_url = ("wss" if parts.scheme == "https" else "ws") + base[len(parts.scheme):]
    ws = websocket.create_connection(f"{ws_url}/api/kernels/{kid}/channels?session_id=smoke",
                                     header=ws_hdrs, origin=origin, timeout=60)
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "username": "", "session": "smoke", "msg_type": "execute_request",
                   "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": "print(6*7)", "silent": False, "store_history": True,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
    }))
    while True:
        m = json.loads(ws.recv())
        if m.get("msg_type") == "stream" and m["parent_header"].get("msg_id") == msg_id:
            out = m["content"]["text"].strip()
            break
    ws.close()
    print("cell output", out)
    if out != "42":
        sys.exit("wrong cell output")
    nb = {"type": "notebook", "content": {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}}
    r = s.put(base + "/api/contents/smoke.ipynb", json=nb, headers=post)
    print("save notebook", r.status_code)
    if r.status_code not in (200, 201):
        sys.exit(r.text[:200])
    r = s.delete(base + f"/api/kernels/{kid}", headers=post)
    print("delete kernel", r.status_code)
    print("ok")


if __name__ == "__main__":
    main()
