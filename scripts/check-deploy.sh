#!/usr/bin/env bash
# Checks what can be checked without a Docker engine or a cluster: the manifests parse, the
# probes point at paths the admin listener serves, the Dockerfile names the binary Cargo
# builds, and the ConfigMap's authgate.toml passes `authgate check-config`.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c "import yaml" 2>/dev/null || pip install -q pyyaml >/dev/null
cargo build --locked --quiet --bin authgate
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$tmp" <<'PY'
import sys, yaml, re, pathlib
tmp = pathlib.Path(sys.argv[1])
docs = list(yaml.safe_load_all(open("deploy/k8s/sidecar.yaml")))
kinds = sorted(d["kind"] for d in docs)
assert kinds == ["ConfigMap", "Deployment", "Service"], kinds
admin_src = open("src/admin.rs").read()
dep = next(d for d in docs if d["kind"] == "Deployment")
gw = next(c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "authgate")
for probe in ("readinessProbe", "livenessProbe"):
    path = gw[probe]["httpGet"]["path"]
    assert f'"{path}"' in admin_src, f"{probe} path {path} is not served by src/admin.rs"
ports = {p["name"]: p["containerPort"] for p in gw["ports"]}
cfg = next(d for d in docs if d["kind"] == "ConfigMap")["data"]["authgate.toml"]
assert f':{ports["https"]}"' in cfg and f':{ports["admin"]}"' in cfg, "container ports differ from the config's listeners"
docker = open("Dockerfile").read()
assert "target/release/authgate" in docker and 'name = "authgate"' in open("Cargo.toml").read()
# Point the config's absolute paths into the temp dir so check-config can load them.
(tmp / "etc").mkdir()
cfg = cfg.replace("/etc/authgate/", str(tmp) + "/etc/")
(tmp / "authgate.toml").write_text(cfg)
print("manifests OK:", ", ".join(kinds))
PY
mkdir -p "$tmp/etc/keys" "$tmp/etc/users" "$tmp/etc/tls"
./target/debug/authgate keygen --alg EdDSA --out "$tmp/etc/keys/signing.pem" 2>/dev/null
cp config/users.toml "$tmp/etc/users/users.toml"
python3 - "$tmp" <<'PY'
import sys, subprocess
# A throwaway self-signed pair made by the gateway's own dependency (rcgen) is not exposed as a
# command; openssl is not assumed either, so generate with Python's cryptography if present,
# else skip the TLS block.
tmp = sys.argv[1]
try:
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    import datetime
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key()) \
        .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256())
    open(f"{tmp}/etc/tls/tls.crt", "wb").write(cert.public_bytes(serialization.Encoding.PEM))
    open(f"{tmp}/etc/tls/tls.key", "wb").write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
except ImportError:
    text = open(f"{tmp}/authgate.toml").read()
    start = text.index("[server.tls]"); end = text.index("[log]")
    open(f"{tmp}/authgate.toml", "w").write(text[:start] + text[end:])
PY
AUTHGATE_REDIS_URL=redis://127.0.0.1:6379/0 ./target/debug/authgate check-config --config "$tmp/authgate.toml" >/dev/null
echo "sidecar config OK (authgate check-config)"
