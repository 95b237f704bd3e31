#!/usr/bin/env python3
"""An app that only understands HTTP authentication (REMOTE_USER style), for authgate's
`[identity] pass_basic_auth = true` (tests/apps/README.md). Standard library only.

Usage: python3 tests/apps/remote_user_app.py PORT

Every path: without `Authorization: Basic ...` the answer is 401 with
`WWW-Authenticate: Basic realm="remote-user-app"`; with it, 200 text/plain
`user=<name>` (the part before the first ':'), plus `password-empty=yes|no` on a second line.
`/whoami.json` answers the same as JSON with the request's X-Auth-User and X-Forwarded-Prefix.
"""
import base64
import binascii
import json
import sys
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


def basic_user(environ):
    auth = environ.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep or not user:
        return None
    return user, password


def app(environ, start_response):
    creds = basic_user(environ)
    if creds is None:
        body = b"authentication required\n"
        start_response("401 Unauthorized", [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("WWW-Authenticate", 'Basic realm="remote-user-app", charset="UTF-8"'),
            ("Content-Length", str(len(body))),
        ])
        return [body]
    user, password = creds
    if environ.get("PATH_INFO", "") == "/whoami.json":
        body = json.dumps({
            "user": user,
            "password_empty": password == "",
            "x_auth_user": environ.get("HTTP_X_AUTH_USER"),
            "x_forwarded_prefix": environ.get("HTTP_X_FORWARDED_PREFIX"),
            "path": environ.get("PATH_INFO", ""),
        }).encode()
        ctype = "application/json"
    else:
        body = f"user={user}\npassword-empty={'yes' if password == '' else 'no'}\n".encode()
        ctype = "text/plain; charset=utf-8"
    start_response("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):
        sys.stderr.write("%s - %s\n" % (self.address_string(), format % args))


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: remote_user_app.py PORT")
    port = int(sys.argv[1])
    with make_server("127.0.0.1", port, app, server_class=ThreadingWSGIServer,
                     handler_class=QuietHandler) as httpd:
        print(f"remote_user_app listening on http://127.0.0.1:{port}", file=sys.stderr, flush=True)
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
