#!/usr/bin/env bash
# The Kubernetes deployment (deploy/k8s): renders the base and every overlay with
# kustomize, validates each rendering against the Kubernetes API schemas of the oldest
# and a recent supported version (kubernetes-validate, strict: unknown fields fail),
# checks what the manifests must get right (references, probes, ports, GPU limits only
# in the GPU overlay, the shell the pods run), and makes sure the validator rejects
# broken manifests, so the test cannot pass by validating nothing.
#
#   bash tests/deploy/k8s.sh          (from any directory; needs kubectl or kustomize)
set -euo pipefail
cd "$(dirname "$0")/../.."

VALIDATOR_VERSION=1.37.0
K8S_VERSIONS=(1.30.0 1.34.0)
KUSTOMIZATIONS=(deploy/k8s/base deploy/k8s/overlays/cpu deploy/k8s/overlays/gpu)
VENV=.venv

fail() {
  echo "k8s: FAIL: $*" >&2
  exit 1
}

start=$SECONDS

if command -v kubectl >/dev/null; then
  render() { kubectl kustomize "$1"; }
  renderer="kubectl kustomize ($(kubectl version --client 2>/dev/null | grep -i kustomize || true))"
elif command -v kustomize >/dev/null; then
  render() { kustomize build "$1"; }
  renderer="kustomize build ($(kustomize version 2>/dev/null || true))"
else
  fail "neither kubectl nor kustomize is on PATH; install one to render deploy/k8s"
fi

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" || fail "cannot create the venv $VENV"
if [ "$("$VENV/bin/kubernetes-validate" --version 2>/dev/null || true)" != "$VALIDATOR_VERSION" ]; then
  echo "k8s: installing kubernetes-validate==$VALIDATOR_VERSION into $VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$VALIDATOR_VERSION" \
    || fail "cannot install kubernetes-validate==$VALIDATOR_VERSION from PyPI"
fi

# Validates one multi-document YAML file against every version; prints only failures.
validate() {
  local v
  for v in "${K8S_VERSIONS[@]}"; do
    "$VENV/bin/kubernetes-validate" --strict --quiet --kubernetes-version "$v" "$1" || return 1
  done
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The token is the operator's: none is committed, and without one nothing renders. The
# renderings below use a copy of deploy/k8s with a generated token.
if git rev-parse --git-dir >/dev/null 2>&1 && git ls-files --error-unmatch deploy/k8s/base/auth.env >/dev/null 2>&1; then
  fail "deploy/k8s/base/auth.env is committed: the token must be the operator's"
fi
# So are the TLS certificate and key: none committed, nothing renders without them.
if git rev-parse --git-dir >/dev/null 2>&1 && [ -n "$(git ls-files deploy/k8s/base/tls)" ]; then
  fail "deploy/k8s/base/tls is committed: the learner's key must be the operator's"
fi
mkdir -p "$tmp/k8s"
cp -r deploy/k8s/base deploy/k8s/overlays "$tmp/k8s/"
rm -rf "$tmp/k8s/base/auth.env" "$tmp/k8s/base/tls"
qd=target/release/qd
if [ -x "$qd" ]; then
  "$qd" tls init --out "$tmp/k8s/base/tls" --name qd-learner >/dev/null || fail "qd tls init failed"
else
  mkdir -p "$tmp/k8s/base/tls"
  for f in ca.pem learner.pem learner-key.pem; do echo "placeholder ($qd not built)" >"$tmp/k8s/base/tls/$f"; done
fi
if render "$tmp/k8s/base" >/dev/null 2>&1; then
  fail "the base renders without auth.env: a deployment could start without a token"
fi
echo "QD__AUTH__TOKEN=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$tmp/k8s/base/auth.env"
mv "$tmp/k8s/base/tls" "$tmp/tls"
if render "$tmp/k8s/base" >/dev/null 2>&1; then
  fail "the base renders without tls/: a deployment could start without TLS"
fi
mv "$tmp/tls" "$tmp/k8s/base/tls"

for k in "${KUSTOMIZATIONS[@]}"; do
  out="$tmp/$(basename "$k").yaml"
  render "$tmp/${k#deploy/}" >"$out" || fail "$k does not render"
  n=$(grep -c '^kind:' "$out" || true)
  [ "$n" -gt 0 ] || fail "$k renders no objects"
  validate "$out" || fail "$k does not validate against the Kubernetes schemas"
  echo "k8s: $k: $n objects, valid against Kubernetes ${K8S_VERSIONS[*]} (strict)"
done

# What the schemas cannot see. The pods' shell scripts run against a stub `qd`.
"$VENV/bin/python" - "$tmp" <<'PY' || fail "manifest checks (above)"
import os, re, subprocess, sys, tomllib
from pathlib import Path

import yaml

tmp = Path(sys.argv[1])
problems = []


def check(ok, what):
    if not ok:
        problems.append(what)
    return ok


def load(name):
    return [d for d in yaml.safe_load_all((tmp / f"{name}.yaml").read_text()) if d]


def workloads(docs):
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "Job"}


def main_container(w):
    (c,) = [c for c in w["spec"]["template"]["spec"]["containers"] if c["name"] == "qd"]
    return c


def env(c):
    return {e["name"]: e.get("value") for e in c.get("env", [])}


EXPECTED = {
    ("Namespace", "qd"), ("PersistentVolumeClaim", "qd-state"), ("Job", "qd-bootstrap"),
    ("Service", "qd-learner"), ("Job", "qd-learner"), ("Job", "qd-actor"),
    ("Job", "qd-evaluator"), ("ConfigMap", "qd-config"), ("Secret", "qd-auth"),
    ("Secret", "qd-tls"), ("PersistentVolumeClaim", "qd-eval"),
    ("NetworkPolicy", "qd-learner"), ("NetworkPolicy", "qd-workers"),
}
HEALTH = ["qd", "health", "grpcs://127.0.0.1:50051", "--ca", "/etc/qd-tls/ca.pem"]
ROLES = {"qd-learner": "learner", "qd-actor": "actor", "qd-evaluator": "evaluator"}
BOOTSTRAP_ARGS = ("QD_PRETRAIN_ARGS", "QD_EMBEDDER_ARGS", "QD_JUDGE_ARGS")
GPU_ENV = {"qd-learner": ("QD__LEARNER__DEVICE",), "qd-actor": ("QD__ACTOR__DEVICE",), "qd-bootstrap": BOOTSTRAP_ARGS}

for name, tag in (("base", "qd"), ("cpu", "qd:cpu"), ("gpu", "qd:cuda")):
    docs = load(name)
    at = f"[{name}]"
    objects = {(d["kind"], re.sub(r"-[a-z0-9]{10}$", "", d["metadata"]["name"])
                if d["kind"] in ("ConfigMap", "Secret") else d["metadata"]["name"]) for d in docs}
    check(objects == EXPECTED, f"{at} objects {sorted(objects)} != {sorted(EXPECTED)}")
    # The learner's gRPC port is open to qd's pods only, every metrics port to the
    # monitoring namespace only, and every pod of a workload is covered by a policy.
    policies = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}
    rules = [(pname, r) for pname, p in policies.items() for r in p.get("ingress", [])]
    for pname, r in rules:
        ports = {p["port"] for p in r["ports"]}
        peers = r["from"]
        if 50051 in ports:
            check(ports == {50051} and peers == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "qd"}}}],
                  f"{at} {pname}: gRPC must be open to qd's pods only, got {r}")
        else:
            check(ports <= {9100, 9101, 9102} and all(set(p) == {"namespaceSelector"} for p in peers),
                  f"{at} {pname}: metrics ports must be open to the monitoring namespace only, got {r}")
    for wname, w in workloads(docs).items():
        labels = w["spec"]["template"]["metadata"]["labels"]
        covered = [pn for pn, p in policies.items()
                   if all(labels.get(k) == v for k, v in p["podSelector"].get("matchLabels", {}).items())
                   and all(labels.get(e["key"]) in e["values"] for e in p["podSelector"].get("matchExpressions", []))]
        check(len(covered) == 1, f"{at} {wname}: covered by NetworkPolicies {covered}, expected exactly one")
    for d in docs:
        if d["kind"] != "Namespace":
            check(d["metadata"].get("namespace") == "qd", f"{at} {d['kind']}/{d['metadata']['name']} not in namespace qd")
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    (config,) = [d for d in docs if d["kind"] == "ConfigMap"]
    (secret,) = [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].startswith("qd-auth")]
    check(set(secret.get("data", {})) == {"QD__AUTH__TOKEN"}, f"{at} the qd-auth Secret must hold QD__AUTH__TOKEN only")
    (tls,) = [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].startswith("qd-tls")]
    check(set(tls.get("data", {})) == {"ca.pem", "learner.pem", "learner-key.pem"},
          f"{at} the qd-tls Secret must hold ca.pem, learner.pem and learner-key.pem")
    toml = tomllib.loads(config["data"]["qd.toml"])
    (svc,) = [d for d in docs if d["kind"] == "Service"]
    svc_ports = {p["name"]: p["port"] for p in svc["spec"]["ports"]}
    check(svc_ports == {"grpc": 50051, "metrics": 9100}, f"{at} qd-learner Service ports {svc_ports}")
    check(svc["spec"].get("clusterIP") == "None", f"{at} qd-learner must be headless (it resolves to the learner's pod)")
    check(toml["learner"]["listen"] == "0.0.0.0:50051", f"{at} learner.listen must be 0.0.0.0:50051")
    check(toml["client"]["learner"] == f"https://{svc['metadata']['name']}:{svc_ports['grpc']}",
          f"{at} client.learner {toml['client']['learner']!r} does not name the Service over TLS")

    ws = workloads(docs)
    for wname, w in ws.items():
        check(w["spec"].get("ttlSecondsAfterFinished") == 86400,
              f"{at} {wname}: a finished Job stays a day (ttlSecondsAfterFinished: 86400)")
        pod = w["spec"]["template"]
        spec = pod["spec"]
        labels = pod["metadata"]["labels"]
        check(labels.get("app.kubernetes.io/name") == "qd", f"{at} {wname}: label app.kubernetes.io/name=qd")
        sel = w["spec"].get("selector", {}).get("matchLabels", {})
        check(all(labels.get(k) == v for k, v in sel.items()), f"{at} {wname}: selector does not match its pods")
        check(spec["securityContext"].get("runAsNonRoot") is True and spec["securityContext"].get("runAsUser") == 10001,
              f"{at} {wname}: must run as non-root uid 10001")
        vols = {v["name"]: v for v in spec.get("volumes", [])}
        for c in spec.get("initContainers", []) + spec["containers"]:
            check(c["image"] == tag, f"{at} {wname}/{c['name']}: image {c['image']!r}, expected {tag!r}")
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            check(c.get("workingDir") == "/var/lib/qd"
                  and vols.get(mounts.get("/var/lib/qd"), {}).get("persistentVolumeClaim", {}).get("claimName") == "qd-state",
                  f"{at} {wname}/{c['name']}: must work in /var/lib/qd, the qd-state volume")
            for ef in c.get("envFrom", []):
                check(("Secret", ef["secretRef"]["name"]) in names, f"{at} {wname}: envFrom names a missing Secret")
        for v in vols.values():
            if "configMap" in v:
                check(("ConfigMap", v["configMap"]["name"]) in names, f"{at} {wname}: volume names a missing ConfigMap")
        c = main_container(w)
        req = c.get("resources", {}).get("requests", {})
        check("cpu" in req and "memory" in req, f"{at} {wname}: needs cpu and memory requests")
        gpu = c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
        if name == "gpu" and wname in GPU_ENV:
            check(str(gpu) == "1", f"{at} {wname}: needs an nvidia.com/gpu: 1 limit")
            for key in GPU_ENV[wname]:
                value = env(c).get(key) or ""
                check(value == "cuda" or "--device cuda" in value, f"{at} {wname}: {key} must select cuda, got {value!r}")
            check(spec.get("nodeSelector") and spec.get("tolerations"), f"{at} {wname}: needs a GPU nodeSelector and toleration")
        else:
            check(gpu is None, f"{at} {wname}: asks for a GPU outside the GPU overlay")
            check(not any("cuda" in (v or "") for v in env(c).values()), f"{at} {wname}: selects cuda outside the GPU overlay")

        role = ROLES.get(wname)
        if role is None:
            continue
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        check(vols.get(mounts.get("/etc/qd"), {}).get("configMap") is not None, f"{at} {wname}: config not mounted at /etc/qd")
        check([ef.get("secretRef", {}).get("name") for ef in c.get("envFrom", [])] == [secret["metadata"]["name"]],
              f"{at} {wname}: must take QD__AUTH__TOKEN from the qd-auth Secret")
        # The image's entrypoint is qd.
        check(c.get("args") == [role, "--config", "/etc/qd/qd.toml"] and "command" not in c,
              f"{at} {wname}: must run `qd {role} --config /etc/qd/qd.toml`")
        check([i["name"] for i in spec.get("initContainers", [])] == ["wait-for-bootstrap"],
              f"{at} {wname}: must wait for the bootstrap job")
        ann = pod["metadata"].get("annotations", {})
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        listen = toml[role]["metrics_listen"]
        check(labels.get("app.kubernetes.io/component") == role, f"{at} {wname}: component label {role}")
        check(ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/path") == "/metrics",
              f"{at} {wname}: Prometheus scrape annotations")
        check(ann.get("prometheus.io/port") == str(ports.get("metrics")) and listen == f"0.0.0.0:{ports.get('metrics')}",
              f"{at} {wname}: annotation port, containerPort and {role}.metrics_listen ({listen}) disagree")
        # TLS: the learner serves the Secret's certificate; every client verifies it with
        # the CA and mounts nothing else of the Secret.
        tls_vols = {v["name"]: v["secret"] for v in spec["volumes"] if v.get("secret", {}).get("secretName") == tls["metadata"]["name"]}
        tls_mounts = [m for m in c["volumeMounts"] if m["name"] in tls_vols]
        check(len(tls_mounts) == 1 and tls_mounts[0]["mountPath"] == "/etc/qd-tls" and tls_mounts[0].get("readOnly"),
              f"{at} {wname}: the qd-tls Secret must be mounted read-only at /etc/qd-tls")
        check(env(c).get("QD__AUTH__TLS_CA") == "/etc/qd-tls/ca.pem", f"{at} {wname}: QD__AUTH__TLS_CA must name the Secret's ca.pem")
        if role == "learner":
            check(env(c).get("QD__AUTH__TLS_CERT") == "/etc/qd-tls/learner.pem"
                  and env(c).get("QD__AUTH__TLS_KEY") == "/etc/qd-tls/learner-key.pem",
                  f"{at} {wname}: the learner must serve the Secret's certificate and key")
        else:
            items = [i["key"] for v in tls_vols.values() for i in v.get("items", [])]
            check(items == ["ca.pem"], f"{at} {wname}: must mount the CA only, not the learner's key (got {items})")
            # Nothing an actor or the evaluator can write is read by the learner.
            for cc in spec.get("initContainers", []) + spec["containers"]:
                st = [m for m in cc.get("volumeMounts", []) if m["mountPath"] == "/var/lib/qd"]
                check(st and st[0].get("readOnly") is True, f"{at} {wname}/{cc['name']}: the state volume must be read-only")
        if role == "evaluator":
            res = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}.get("/var/lib/qd-eval")
            check(env(c).get("QD__EVALUATOR__RESULTS_DIR") == "/var/lib/qd-eval"
                  and vols.get(res, {}).get("persistentVolumeClaim", {}).get("claimName") == "qd-eval",
                  f"{at} {wname}: eval.jsonl must go to the qd-eval volume")
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            p = c.get(probe)
            if role == "learner":
                cmd = (p or {}).get("exec", {}).get("command", [])
                check(cmd[:len(HEALTH)] == HEALTH, f"{at} {wname}: {probe} must be `qd health` over TLS, got {cmd}")
            else:
                check(p is not None and p.get("httpGet", {}).get("path") == "/metrics", f"{at} {wname}: {probe} on /metrics")

    # A run is Jobs that complete: the roles exit 0 at its end, a crash restarts the
    # container in its pod, and learner and evaluator never run two pods at once.
    for wname in ROLES:
        w = ws[wname]
        check(w["apiVersion"] == "batch/v1" and w["kind"] == "Job"
              and w["spec"]["template"]["spec"].get("restartPolicy") == "OnFailure",
              f"{at} {wname}: must be a batch/v1 Job with restartPolicy OnFailure")
    for wname in ("qd-learner", "qd-evaluator"):
        spec = ws[wname]["spec"]
        check(spec.get("completions") == 1 and spec.get("parallelism") == 1
              and spec.get("podReplacementPolicy") == "Failed",
              f"{at} {wname}: one pod, replaced only once the old one has terminated")
    learner = ws["qd-learner"]
    check(learner["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30) >= 60,
          f"{at} the learner needs >= 60 s to checkpoint on SIGTERM")
    # deploy/scale-actors.sh patches spec.parallelism of a Job of interchangeable workers.
    actor = ws["qd-actor"]
    check(isinstance(actor["spec"].get("parallelism"), int) and "completions" not in actor["spec"]
          and "HorizontalPodAutoscaler" not in {d["kind"] for d in docs},
          f"{at} the actors must be a Job with spec.parallelism and no completion count")

# The bootstrap job's script, run by /bin/sh with a stub of the image's qd-bootstrap
# that logs its calls.
docs = load("cpu")
ws = workloads(docs)
stub = tmp / "bin"
stub.mkdir()
(stub / "qd-bootstrap").write_text(
    "#!/bin/sh\n"
    'echo "qd-bootstrap $QD_PRETRAIN_ARGS" >> "$QD_CALLS"\n'
    "mkdir -p runs\n"
    '[ -z "${STUB_FAIL:-}" ] || exit 3\n')
(stub / "qd-bootstrap").chmod(0o755)


def run_pod(c, cwd, extra):
    calls = tmp / "calls"
    calls.write_text("")
    e = dict(os.environ, PATH=f"{stub}:{os.environ['PATH']}", QD_CALLS=str(calls),
             **{k: v for k, v in env(c).items() if v is not None}, **extra)
    r = subprocess.run(["sh", "-c", c["command"][2]], cwd=cwd, env=e, capture_output=True, text=True)
    return r.returncode, calls.read_text().splitlines()


boot = main_container(ws["qd-bootstrap"])
state = tmp / "state"
state.mkdir()
done = state / "runs/bootstrap.done"
rc, calls = run_pod(boot, state, {"STUB_FAIL": "1"})
check(rc != 0 and not done.exists(), "a failed qd-bootstrap must fail the job and leave no runs/bootstrap.done")
rc, calls = run_pod(boot, state, {})
check(rc == 0 and calls == ["qd-bootstrap --device cpu --threads 2 --no-progress"] and done.is_file(),
      f"the bootstrap job ran {calls} (exit {rc}); it must run qd-bootstrap on the CPU, then mark runs/bootstrap.done")
rc, calls = run_pod(boot, state, {})
check(rc == 0 and calls == [], f"a finished bootstrap must not run again, ran {calls}")
for wname in ROLES:
    (wait,) = ws[wname]["spec"]["template"]["spec"]["initContainers"]
    r = subprocess.run(wait["command"], cwd=state, capture_output=True, timeout=30)
    check(r.returncode == 0, f"{wname}: wait-for-bootstrap must end once runs/bootstrap.done exists")

for p in problems:
    print(f"k8s: {p}", file=sys.stderr)
sys.exit(1 if problems else 0)
PY
echo "k8s: manifest checks passed (objects, references, probes, ports, GPU only in overlays/gpu, pod scripts)"

# The effective settings of each role as the pods would load them, when qd is built.
if [ -x "$qd" ]; then
  "$VENV/bin/python" - "$tmp" "$qd" "$tmp/k8s/base/auth.env" <<'PY' || fail "qd refuses the pods' settings (above)"
import os, subprocess, sys
from pathlib import Path

import yaml

tmp, qd, auth = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
secret = dict(l.split("=", 1) for l in auth.read_text().splitlines() if l and not l.startswith("#"))
bad = False
for overlay in ("cpu", "gpu"):
    docs = [d for d in yaml.safe_load_all((tmp / f"{overlay}.yaml").read_text()) if d]
    toml = tmp / "qd.toml"
    toml.write_text(next(d for d in docs if d["kind"] == "ConfigMap")["data"]["qd.toml"])
    for w in docs:
        if w["kind"] != "Job" or w["metadata"]["name"] == "qd-bootstrap":
            continue
        (c,) = w["spec"]["template"]["spec"]["containers"]
        e = {k: v for k, v in os.environ.items() if not k.startswith("QD__")}
        e.update(secret)
        e.update({x["name"]: x["value"] for x in c.get("env", []) if "value" in x and x["name"].startswith("QD__")})
        e["QD__ACTOR__SEED"] = "12345"
        r = subprocess.run([qd, "config", "--config", str(toml)], env=e, capture_output=True, text=True)
        if r.returncode != 0:
            bad = True
            print(f"k8s: [{overlay}] {w['metadata']['name']}: {r.stderr.strip()}", file=sys.stderr)
sys.exit(1 if bad else 0)
PY
  echo "k8s: qd config accepts qd.toml with every pod's QD__ environment (cpu, gpu)"
else
  echo "k8s: skipped the qd config check ($qd not built)"
fi

# Negative checks: the same validation must reject an unknown field and a wrong type.
"$VENV/bin/python" - "$tmp" <<'PY'
import sys
from pathlib import Path

import yaml

tmp = Path(sys.argv[1])
docs = [d for d in yaml.safe_load_all((tmp / "cpu.yaml").read_text()) if d]
actor = next(d for d in docs if d["kind"] == "Job" and d["metadata"]["name"] == "qd-actor")
actor["spec"]["parallelizm"] = actor["spec"].pop("parallelism")
(tmp / "broken-field.yaml").write_text(yaml.safe_dump_all(docs))
docs = [d for d in yaml.safe_load_all((tmp / "cpu.yaml").read_text()) if d]
learner = next(d for d in docs if d["kind"] == "Job" and d["metadata"]["name"] == "qd-learner")
learner["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "fifty"
(tmp / "broken-type.yaml").write_text(yaml.safe_dump_all(docs))
PY
for broken in broken-field broken-type; do
  if validate "$tmp/$broken.yaml" >"$tmp/$broken.log" 2>&1; then
    fail "the validator accepted $broken.yaml; validation is not checking anything"
  fi
  grep -q "did not validate" "$tmp/$broken.log" || fail "$broken.yaml failed for another reason: $(cat "$tmp/$broken.log")"
done
echo "k8s: the validator rejects a misspelled field and a wrong type"

# --- kube-prometheus-stack: overlays/monitoring --------------------------------------------
# The CPU overlay plus a PodMonitor, a PrometheusRule and the dashboard ConfigMap. The
# custom resources are validated against the Prometheus operator's CRD schemas (strict:
# an unknown field fails), taken from the crates.io package `kopium`, whose tests ship
# the operator's CRDs of release $CRD_OPERATOR_VERSION (descriptions stripped); the
# package is checked against its crates.io checksum and kept under .cache/tools/.
CRD_CRATE=kopium-0.24.1
CRD_CRATE_SHA256=15cc3a0ffd281ea6e36696c9a2d3a6a7a9e6ea1cf0d35b5dab54c021dade6fc9
CRD_OPERATOR_VERSION=0.89.0
CRD_DIR=.cache/tools/$CRD_CRATE
CRDS=(servicemonitors podmonitors prometheusrules)
if [ ! -f "$CRD_DIR/prometheusrules.yaml" ]; then
  echo "k8s: downloading the Prometheus operator's CRDs ($CRD_CRATE from crates.io) into $CRD_DIR"
  curl -sSfL -o "$tmp/$CRD_CRATE.crate" "https://static.crates.io/crates/${CRD_CRATE%-*}/$CRD_CRATE.crate" \
    || fail "cannot download $CRD_CRATE from static.crates.io"
  echo "$CRD_CRATE_SHA256  $tmp/$CRD_CRATE.crate" | sha256sum -c --quiet - || fail "$CRD_CRATE.crate: checksum mismatch"
  tar -xzf "$tmp/$CRD_CRATE.crate" -C "$tmp" || fail "cannot unpack $CRD_CRATE.crate"
  mkdir -p "$CRD_DIR"
  for c in "${CRDS[@]}"; do
    cp "$tmp/$CRD_CRATE/tests/$c.monitoring.coreos.com.yaml" "$CRD_DIR/$c.yaml" || fail "$CRD_CRATE has no $c CRD"
  done
fi

# The overlay takes the dashboard from deploy/grafana, beside deploy/k8s.
mkdir -p "$tmp/grafana" && cp -r deploy/grafana/. "$tmp/grafana/"
out=$tmp/monitoring.yaml
render "$tmp/k8s/overlays/monitoring" >"$out" || fail "deploy/k8s/overlays/monitoring does not render"
"$VENV/bin/python" - "$out" "$tmp/monitoring-builtin.yaml" <<'PY'
import sys
import yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
yaml.safe_dump_all([d for d in docs if "monitoring.coreos.com" not in d["apiVersion"]], open(sys.argv[2], "w"))
PY
validate "$tmp/monitoring-builtin.yaml" || fail "overlays/monitoring does not validate against the Kubernetes schemas"

# The custom resources against the CRDs, the checks the schemas cannot make, and the
# same validation shown to reject a misspelled field and a wrong type.
"$VENV/bin/python" - "$tmp" "$CRD_DIR" deploy/prometheus/rules/qd.rules.yml deploy/grafana/dashboards/qd.json \
  deploy/k8s/overlays/monitoring/prometheusrule.sh deploy/k8s/overlays/monitoring/prometheusrule.yaml <<'PY' \
  || fail "overlays/monitoring checks (above)"
import copy, json, subprocess, sys
from pathlib import Path

import jsonschema
import yaml

tmp, crd_dir, rules_file, dashboard, generator, generated = map(Path, sys.argv[1:])
problems = []


def check(ok, what):
    if not ok:
        problems.append(what)


def strict(schema):
    """The CRD's structural schema with unknown fields refused, as the API server's
    field validation (kubectl apply --validate=strict) does."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema.setdefault("additionalProperties", False)
    elif isinstance(schema, list):
        schema = [strict(v) for v in schema]
    return schema


validators = {}
for f in sorted(crd_dir.glob("*.yaml")):
    crd = yaml.safe_load(f.read_text())
    for v in crd["spec"]["versions"]:
        if v["served"]:
            schema = strict(v["schema"]["openAPIV3Schema"])
            key = (f"{crd['spec']['group']}/{v['name']}", crd["spec"]["names"]["kind"])
            validators[key] = jsonschema.Draft7Validator(schema)


def errors(doc):
    v = validators.get((doc["apiVersion"], doc["kind"]))
    if v is None:
        return [f"no CRD for {doc['apiVersion']} {doc['kind']}"]
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in v.iter_errors(doc)]


docs = [d for d in yaml.safe_load_all((tmp / "monitoring.yaml").read_text()) if d]
cpu = [d for d in yaml.safe_load_all((tmp / "cpu.yaml").read_text()) if d]
custom = [d for d in docs if d["apiVersion"].startswith("monitoring.coreos.com/")]
kinds = sorted(d["kind"] for d in custom)
check(kinds == ["PodMonitor", "PrometheusRule"], f"custom resources {kinds}, expected a PodMonitor and a PrometheusRule")
for d in custom:
    for e in errors(d):
        problems.append(f"{d['kind']}/{d['metadata']['name']}: {e}")
    check(d["metadata"].get("labels", {}).get("release"),
          f"{d['kind']}: needs the release label kube-prometheus-stack selects by")

# Everything of the CPU overlay is there, unchanged; the dashboard ConfigMap is added.
key = lambda d: (d["kind"], d["metadata"]["name"])
rest = {key(d): d for d in docs if d not in custom}
dash = rest.pop(("ConfigMap", "qd-grafana-dashboard"), None)
check(rest == {key(d): d for d in cpu}, "overlays/monitoring must hold the CPU overlay's objects unchanged")
check(dash is not None and dash["metadata"]["labels"].get("grafana_dashboard") == "1"
      and json.loads(dash["data"]["qd.json"]) == json.loads(dashboard.read_text()),
      "the qd-grafana-dashboard ConfigMap must hold deploy/grafana/dashboards/qd.json, labelled grafana_dashboard=1")

# The PodMonitor scrapes exactly the learner, actor and evaluator pods, on a port they
# name, with the job names the rules and the dashboard use.
pm = next((d for d in custom if d["kind"] == "PodMonitor"), None)
if pm:
    sel = pm["spec"]["selector"]
    def selected(labels):
        return all(labels.get(k) == v for k, v in sel.get("matchLabels", {}).items()) and all(
            labels.get(e["key"]) in e["values"] for e in sel.get("matchExpressions", []))
    jobs = {d["metadata"]["name"]: d["spec"]["template"] for d in cpu if d["kind"] == "Job"}
    chosen = sorted(n for n, t in jobs.items() if selected(t["metadata"]["labels"]))
    check(chosen == ["qd-actor", "qd-evaluator", "qd-learner"], f"the PodMonitor selects {chosen}")
    (ep,) = pm["spec"]["podMetricsEndpoints"]
    for n in chosen:
        ports = {p["name"] for c in jobs[n]["spec"]["containers"] for p in c.get("ports", [])}
        check(ep["port"] in ports, f"{n}: no container port named {ep['port']!r}")
    job = [r for r in ep.get("relabelings", []) if r.get("targetLabel") == "job"]
    check(job and job[0]["sourceLabels"] == ["__meta_kubernetes_pod_label_app_kubernetes_io_component"]
          and job[0]["replacement"] == "qd-$1", "the PodMonitor must name the jobs qd-<component>")

# The PrometheusRule is the rule file, and is what prometheusrule.sh writes now.
pr = next((d for d in custom if d["kind"] == "PrometheusRule"), None)
check(pr is not None and pr["spec"] == yaml.safe_load(rules_file.read_text()),
      f"the PrometheusRule's spec differs from {rules_file}")
subprocess.run(["bash", str(generator), str(tmp / "prometheusrule.yaml")], check=True)
check((tmp / "prometheusrule.yaml").read_text() == generated.read_text(),
      f"{generated} is out of date: run {generator}")

# The validation refuses what it should.
if pm:
    broken = copy.deepcopy(pm)
    broken["spec"]["podMetricEndpoints"] = broken["spec"].pop("podMetricsEndpoints")
    check(errors(broken), "the CRD validation accepted a misspelled PodMonitor field")
    broken = copy.deepcopy(pm)
    broken["spec"]["podMetricsEndpoints"][0]["relabelings"][0]["sourceLabels"] = "not-a-list"
    check(errors(broken), "the CRD validation accepted a wrong type")
if pr:
    broken = copy.deepcopy(pr)
    broken["spec"]["groups"][0]["rules"][0]["expresion"] = "up"
    check(errors(broken), "the CRD validation accepted a misspelled rule field")

for p in problems:
    print(f"k8s: [monitoring] {p}", file=sys.stderr)
sys.exit(1 if problems else 0)
PY
echo "k8s: deploy/k8s/overlays/monitoring: the CPU overlay, a PodMonitor and a PrometheusRule valid against" \
  "the Prometheus operator's CRDs ($CRD_OPERATOR_VERSION, strict), the dashboard ConfigMap; the CRD validation rejects broken ones"

echo "k8s: ok: ${#KUSTOMIZATIONS[@]} kustomizations rendered with $renderer," \
  "kubernetes-validate $VALIDATOR_VERSION, $((SECONDS - start)) s"
