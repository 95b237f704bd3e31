"""Mints many distinct access tokens the way the gateway issues them, signed with a running
gateway's own key: EdDSA with the PEM it generated (needs Python's `cryptography`), or HS256
with its secret (standard library only). For the many-users rows of bench/run.py and for
bench/cache_memory.py; a login per token would cost an argon2 hash each.
"""
import base64, hashlib, hmac, json, os, time, urllib.request


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=")


def rid():
    """128 random bits as 22 base64url characters, like the gateway's jti and sid."""
    return b64(os.urandom(16)).decode()


def signer(alg, key):
    """A function signing bytes: `key` is the PEM path (EdDSA) or the secret (HS256)."""
    if alg == "HS256":
        secret = key.encode() if isinstance(key, str) else key
        return lambda msg: hmac.new(secret, msg, hashlib.sha256).digest()
    if alg == "EdDSA":
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        # The gateway writes PKCS#8 v2 (with the public key), which `cryptography` refuses:
        # the seed is the OCTET STRING inside the privateKey OCTET STRING.
        pem = open(key).read()
        der = base64.b64decode("".join(l for l in pem.splitlines() if not l.startswith("-----")))
        at = der.index(b"\x04\x22\x04\x20") + 4
        return Ed25519PrivateKey.from_private_bytes(der[at:at + 32]).sign
    raise SystemExit(f"mint.py: {alg} is not supported")


def kid_of(base_url):
    """The `kid` the gateway's JWKS publishes (None with HS256: no JWKS)."""
    try:
        with urllib.request.urlopen(f"{base_url}/.well-known/jwks.json", timeout=5) as r:
            return json.loads(r.read())["keys"][0]["kid"]
    except Exception:
        return None


def mint(alg, key, n, users=None, kid=None, ttl=3600, roles=("user",), iss="authgate", aud="authgate"):
    """`n` distinct access tokens of `users` users (default: one user per token), valid from
    now for `ttl` seconds (the gateway must have started before now: the revocation store
    refuses tokens issued before its epoch)."""
    sign = signer(alg, key)
    header = {"alg": alg, "typ": "JWT"}
    if kid:
        header["kid"] = kid
    head = b64(json.dumps(header, separators=(",", ":")).encode())
    users = users or n
    now = int(time.time())
    out = []
    for i in range(n):
        claims = {"iss": iss, "aud": aud, "sub": f"user-{i % users:06d}", "iat": now, "nbf": now,
                  "exp": now + ttl, "jti": rid(), "sid": rid(), "type": "access", "roles": list(roles)}
        msg = head + b"." + b64(json.dumps(claims, separators=(",", ":")).encode())
        out.append((msg + b"." + b64(sign(msg))).decode())
    return out
