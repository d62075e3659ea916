#!/usr/bin/env bash
# Checks the Prometheus configs (compose and Kubernetes), the alert rules (promtool unit
# tests) and the Grafana dashboard against a real Prometheus scraping two real runs with
# tiny models on loopback: run `rl` (a learner, two actors, an evaluator, a third actor
# beyond the learner's weight-stream limit, and two clients the learner refuses: a wrong
# token, another architecture) and run `rl2` (a learner and one actor). With the run
# variable on `rl`, every dashboard query must show data the run produced (a non-zero
# value; only the short MAY_STAY_ZERO list below may stay at 0); with both runs selected,
# every learner panel must show each run's series apart (the run label); every alert
# rule must evaluate without error, and only the dropped-trajectories alert may become
# active.
#
#   tests/deploy/prometheus.sh          (from the repository root; QD=path/to/qd to override)
#
# Installs Debian's prometheus package when prometheus/promtool are missing and it runs
# as root; otherwise they must be on PATH. prometheus-k8s.yml needs a promtool with
# Kubernetes service discovery, which Debian bookworm's lacks: see k8s_promtool below
# (PROMTOOL_K8S=path/to/promtool to override). Fails, naming what to install, when a check
# cannot run.
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$PWD
QD=${QD:-$ROOT/target/release/qd}
# (Overridable so that the test can be shown to fail on a broken copy.)
PROM_DIR=${PROM_DIR:-$ROOT/deploy/prometheus}
DASHBOARD=${DASHBOARD:-$ROOT/deploy/grafana/dashboards/qd.json}
DEADLINE_S=${DEADLINE_S:-90}
# What $__rate_interval stands for: several 1 s scrapes, like Grafana's 4 × scrape interval.
RATE_INTERVAL=15s

say() { printf '==> %s\n' "$*"; }
fail() {
    printf 'FAIL: %s\n' "$*" >&2
    exit 1
}

# --- tools -------------------------------------------------------------------------------
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        say "installing Debian's prometheus package"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y --no-install-recommends prometheus >/dev/null ||
            { apt-get update >/dev/null && apt-get install -y --no-install-recommends prometheus >/dev/null; }
        # The package may start its own service on :9090; this test uses its own port and
        # config, so stop that one rather than leave it running.
        if command -v invoke-rc.d >/dev/null; then
            invoke-rc.d prometheus stop >/dev/null 2>&1 || true
        fi
    else
        fail "prometheus and promtool are needed: install them (Debian/Ubuntu: apt-get install prometheus) or put them on PATH"
    fi
fi
command -v python3 >/dev/null || fail "python3 is needed"
say "$(prometheus --version 2>&1 | sed -n 1p)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/qd-prometheus.XXXXXX")
PIDS=()
cleanup() {
    local rc=$?
    # SIGTERM first (the learner finishes its step and checkpoints), SIGKILL after 15 s.
    local pid end=$((SECONDS + 15))
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < end)); do sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ $rc -ne 0 ]]; then
        for log in "$WORK"/*.log; do
            [[ -f $log ]] || continue
            printf -- '--- last lines of %s\n' "$(basename "$log")" >&2
            tail -n 15 "$log" >&2
        done
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Polls `cmd` until it succeeds or `secs` pass.
wait_for() {
    local what=$1 secs=$2
    shift 2
    local end=$((SECONDS + secs))
    until "$@"; do
        ((SECONDS < end)) || fail "timed out after ${secs}s waiting for $what"
        sleep 0.2
    done
}

# --- a promtool with Kubernetes service discovery ------------------------------------------
# prometheus-k8s.yml finds its targets with kubernetes_sd_configs. Debian bookworm's
# prometheus package (2.42) is built without Kubernetes service discovery (Debian took it
# out in 1.5.0 for the size of its client library), so its promtool rejects the file
# ("field kubernetes_sd_configs not found"); Debian trixie's `promtool` package (2.53)
# has it, and checks such a config offline. Where one comes from, in order:
#   1. $PROMTOOL_K8S;
#   2. the promtool on PATH, if it has Kubernetes service discovery;
#   3. one unpacked before under .cache/tools/promtool-k8s/;
#   4. Debian's `promtool` package of $PROMTOOL_K8S_SUITE (trixie), downloaded with
#      apt-get from the Debian mirror this machine's apt already uses (private package
#      lists: the machine's apt sources and installed packages stay as they are;
#      signatures checked by apt as usual) and unpacked into .cache/tools/promtool-k8s/
#      (a Go binary that links only libc), not installed.
# None of these: FAIL, naming what to install.
PROMTOOL_K8S_SUITE=${PROMTOOL_K8S_SUITE:-trixie}
PROMTOOL_K8S_CACHE=$ROOT/.cache/tools/promtool-k8s
has_k8s_sd() {
    printf 'scrape_configs:\n  - job_name: probe\n    kubernetes_sd_configs: [{role: pod}]\n' \
        >"$WORK/k8s-sd-probe.yml"
    "$1" check config "$WORK/k8s-sd-probe.yml" >/dev/null 2>&1
}
fetch_promtool_k8s() {
    command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || return 1
    local codename mirror apt=$WORK/apt
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    # The mirror of the machine's own Debian release, main component.
    mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' 'Identifier: Packages' 2>/dev/null |
        awk -v c="$codename" '$2 == c && $3 == "main" { print $1; exit }')
    [[ -n $mirror ]] || { echo "no Debian mirror for '$codename' main in this machine's apt sources" >&2; return 1; }
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/deb"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $PROMTOOL_K8S_SUITE main" \
        >"$apt/sources.list"
    local opts=(-o Dir::Etc::SourceList="$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o Dir::State::Lists="$apt/lists" -o Dir::Cache="$apt/cache" -o APT::Sandbox::User=root
        -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false
        -o Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false
        -o Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false
        -o Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false
        -o Acquire::IndexTargets::deb::Contents-udeb::DefaultEnabled=false)
    say "downloading Debian $PROMTOOL_K8S_SUITE's promtool package (Kubernetes service discovery) into $PROMTOOL_K8S_CACHE" >&2
    apt-get "${opts[@]}" -qq update >&2 &&
        (cd "$apt/deb" && apt-get "${opts[@]}" -qq download promtool >&2) || return 1
    rm -rf "$PROMTOOL_K8S_CACHE.tmp" && mkdir -p "$PROMTOOL_K8S_CACHE.tmp" &&
        dpkg-deb -x "$apt"/deb/promtool_*.deb "$PROMTOOL_K8S_CACHE.tmp" || return 1
    rm -rf "$PROMTOOL_K8S_CACHE" && mv "$PROMTOOL_K8S_CACHE.tmp" "$PROMTOOL_K8S_CACHE"
}
k8s_promtool() {
    if [[ -n ${PROMTOOL_K8S:-} ]]; then
        has_k8s_sd "$PROMTOOL_K8S" && { echo "$PROMTOOL_K8S"; return; }
        echo "PROMTOOL_K8S=$PROMTOOL_K8S does not check a config with kubernetes_sd_configs" >&2
        return 1
    fi
    local cached=$PROMTOOL_K8S_CACHE/usr/bin/promtool
    if has_k8s_sd promtool; then command -v promtool; return; fi
    if [[ -x $cached ]] && has_k8s_sd "$cached"; then echo "$cached"; return; fi
    fetch_promtool_k8s && [[ -x $cached ]] && has_k8s_sd "$cached" && echo "$cached"
}

# --- static checks -----------------------------------------------------------------------
say "promtool: compose and Kubernetes configs, rules, rule unit tests"
PROMTOOL_K8S_BIN=$(k8s_promtool) || fail "prometheus-k8s.yml (kubernetes_sd_configs) cannot be checked: \
no promtool with Kubernetes service discovery ($(command -v promtool) is $(promtool --version 2>&1 | sed -n 1p); \
Debian bookworm's prometheus package is built without it), and none could be found or downloaded. Install one: \
Debian trixie's (or later) \`promtool\` package, or promtool from an upstream Prometheus release, and \
put it on PATH or set PROMTOOL_K8S=/path/to/promtool"
# The configs read rules from the container's mount point; point them at the repository.
# The compose config with the promtool of the compose image's Prometheus (Debian's); the
# Kubernetes one with a promtool that has Kubernetes service discovery.
for config in prometheus.yml prometheus-k8s.yml; do
    tool=promtool
    [[ $config == prometheus-k8s.yml ]] && tool=$PROMTOOL_K8S_BIN
    sed "s#/etc/prometheus/rules/#$PROM_DIR/rules/#" "$PROM_DIR/$config" >"$WORK/check-$config"
    say "$config: $tool ($("$tool" --version 2>&1 | sed -n 1p))"
    out=$("$tool" check config "$WORK/check-$config" 2>&1) || fail "promtool check config $config: $out"
    echo "$out"
done
promtool check rules "$PROM_DIR"/rules/*.yml
promtool test rules "$PROM_DIR"/tests/*.yml

say "dashboard: valid JSON, datasource uid, metric names documented"
python3 - "$DASHBOARD" "$ROOT/docs/metrics.md" "$PROM_DIR"/rules/*.yml <<'EOF' ||
import json, re, sys
dash_path, metrics_md, *rules = sys.argv[1:]
dash = json.load(open(dash_path))
assert dash.get("schemaVersion", 0) >= 36, "schemaVersion too old"
bad = []
for p in dash["panels"]:
    if p["type"] == "row":
        continue
    if p.get("datasource", {}).get("uid") != "${datasource}":
        bad.append(f"panel {p['title']!r}: datasource is not the dashboard's variable")
    for t in p.get("targets", []):
        if "qd_" in t["expr"] and 'run=~"$run"' not in t["expr"]:
            bad.append(f"panel {p['title']!r}: {t['expr']} does not select the run variable")
    if not p.get("targets"):
        bad.append(f"panel {p['title']!r}: no queries")
    # Every panel says its unit; a rate is drawn per second, not as a bare number.
    unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit")
    if not unit:
        bad.append(f"panel {p['title']!r}: no unit")
    rates = [t["expr"] for t in p.get("targets", [])
             if t["expr"].startswith(("rate(", "sum by", "sum(")) and "rate(" in t["expr"]
             and "_sum" not in t["expr"] and "histogram_quantile" not in t["expr"]]
    per_second = unit and (unit.endswith("/s") or unit in ("ops", "reqps", "percentunit", "Bps", "binBps"))
    if rates and not per_second and p["type"] != "heatmap":
        bad.append(f"panel {p['title']!r}: rates ({rates[0]}) in unit {unit!r}, not per second")
names = {v["name"] for v in dash.get("templating", {}).get("list", [])}
if names != {"datasource", "run"}:
    bad.append(f"dashboard variables {sorted(names)}, expected datasource and run")
ids = [p["id"] for p in dash["panels"]]
if len(ids) != len(set(ids)):
    bad.append("panel ids repeat")
documented = set(re.findall(r"`(qd_[a-z_]+)", open(metrics_md).read()))
text = open(dash_path).read() + "".join(open(r).read() for r in rules)
for name in sorted(set(re.findall(r"\bqd_[a-z_]+", text))):
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    if name not in documented and base not in documented:
        bad.append(f"{name} is not in docs/metrics.md")
if bad:
    sys.exit("\n".join(bad))
EOF
    fail "dashboard checks"

# --- a tiny service ----------------------------------------------------------------------
[[ -x $QD ]] || fail "$QD not found: build it first (make setup, or cargo build --release)"
say "tiny models on a fixture corpus"
RAW=$WORK/raw
for c in essenFolksong oneills1850 ryansMammoth airdsAirs miscFolk; do mkdir -p "$RAW/$c"; done
{
    p=(C D E F G A B c)
    for i in $(seq 0 39); do
        notes="CDEF${p[i / 8]}${p[i % 8]}Bc"
        printf 'X:%d\nT:Lied %d\nO:Europa, Mitteleuropa, Deutschland\nR:Liebeslied]\nM:2/4\nL:1/16\nK:G\n%s|%s|]\n\n' \
            "$i" "$i" "$notes" "$notes"
    done
} >"$RAW/essenFolksong/kinder0.abc"
{
    a=(d e f g a) b=(B A G F)
    for i in $(seq 0 19); do
        printf 'X: %d\nT: The %d Reel\nN: "Lively" "collected by F. O'"'"'Neill"\nM:C|\nL:1/8\nK:D\n%s%sAF D2 %s2|(3ABc d>e f2 e2:|\n\n' \
            "$i" "$i" "${a[i % 5]}" "${b[i / 5]}" "${a[i % 5]}"
    done
} >"$RAW/oneills1850/0001-0050.abc"
run_qd() {
    local log=$WORK/$1.log
    shift
    "$QD" "$@" >"$log" 2>&1 || fail "qd $* failed (see $log)"
}
COMMON=(--data "$WORK/folk" --batch-size 8 --no-progress --threads 1)
run_qd prepare data prepare --raw "$RAW" --out "$WORK/folk"
run_qd pretrain pretrain --preset tiny --steps 30 --lr 0.01 --context 64 --out "$WORK/pt" "${COMMON[@]}"
run_qd embedder embedder train --steps 3 --out "$WORK/emb.safetensors" "${COMMON[@]}"
run_qd judge judge train --steps 3 --out "$WORK/judge.safetensors" "${COMMON[@]}"

# A token: calls without it are refused and counted (the auth-failures panel).
# limits.max_watchers = 3: the two actors and the evaluator; a third actor's weight
# stream is refused (watcher_limit) and it keeps reconnecting (the refusals and
# reconnects panels).
# max_staleness = 0: with two actors and a version every step, some trajectories are
# always a version behind, so the stale-drop path runs and the dropped-by-reason panel
# shows drops that grow (qd exports every reason's counter at 0 from the start, so its
# series alone would prove nothing).
# beta = 1: the policy-gradient term is at work, so its gradient norm leaves 0.
TOKEN=qd-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
sed "s|@DIR@|$WORK|g" "$ROOT/tests/support/service.toml" >"$WORK/qd.toml"
export QD__AUTH__TOKEN=$TOKEN QD__LIMITS__MAX_WATCHERS=3 QD__LEARNER__BETA=1.0 \
    QD__LEARNER__MAX_STALENESS=0 QD__LEARNER__CHECKPOINT_EVERY=1000

start() {
    local name=$1
    shift
    RUST_LOG=info "$QD" "$@" --config "$WORK/qd.toml" --ready-file "$WORK/$name.json" \
        >"$WORK/$name.log" 2>&1 </dev/null &
    PIDS+=($!)
}
# `host:port` of a ready file's field, once written.
endpoint() {
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]] or "")' "$WORK/$1.json" "$2" 2>/dev/null
}
ready() { [[ -n $(endpoint "$1" metrics) ]]; }

say "learner, 2 actors and an evaluator on loopback"
start learner learner
wait_for "the learner to listen" 60 ready learner
GRPC=$(endpoint learner grpc)
start actor-1 actor --set "client.learner=http://$GRPC" --set actor.seed=1
start actor-2 actor --set "client.learner=http://$GRPC" --set actor.seed=2
start evaluator evaluator --set "client.learner=http://$GRPC"
for n in actor-1 actor-2 evaluator; do wait_for "$n to serve metrics" 60 ready "$n"; done
# Each weight stream counts once it is open; the third actor comes after the first three.
connected() { [[ $(curl -s "http://$(endpoint learner metrics)/metrics" |
    awk '/^qd_learner_clients_connected/ { n += $NF } END { print n + 0 }') -ge 3 ]]; }
wait_for "the learner to hold three weight streams" 60 connected
start actor-3 actor --set "client.learner=http://$GRPC" --set actor.seed=3
wait_for "actor-3 to serve metrics" 60 ready actor-3

# A second run, rl2, for the overlay of two runs. Every role names its metrics' run
# after its own paths.run_dir, so the actor is told the run folder too.
start learner-2 learner --set "paths.run_dir=$WORK/rl2"
wait_for "the second learner to listen" 60 ready learner-2
start actor-4 actor --set "client.learner=http://$(endpoint learner-2 grpc)" --set actor.seed=4 \
    --set "paths.run_dir=$WORK/rl2"
wait_for "actor-4 to serve metrics" 60 ready actor-4

# --- Prometheus --------------------------------------------------------------------------
PROM_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
PROM=http://127.0.0.1:$PROM_PORT
cat >"$WORK/prometheus.yml" <<EOF
# Job names as in deploy/prometheus/prometheus.yml, static loopback targets.
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $PROM_DIR/rules/*.yml
scrape_configs:
  - job_name: qd-learner
    static_configs: [{targets: ["$(endpoint learner metrics)", "$(endpoint learner-2 metrics)"]}]
  - job_name: qd-actor
    static_configs:
      - targets: ["$(endpoint actor-1 metrics)", "$(endpoint actor-2 metrics)", "$(endpoint actor-3 metrics)",
                  "$(endpoint actor-4 metrics)"]
  - job_name: qd-evaluator
    static_configs: [{targets: ["$(endpoint evaluator metrics)"]}]
EOF
promtool check config "$WORK/prometheus.yml" >/dev/null
say "prometheus on $PROM"
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
    --web.listen-address="127.0.0.1:$PROM_PORT" >"$WORK/prometheus.log" 2>&1 &
PIDS+=($!)
prom_ready() { python3 -c 'import urllib.request,sys; urllib.request.urlopen(sys.argv[1] + "/-/ready", timeout=2)' "$PROM" 2>/dev/null; }
wait_for "prometheus to be ready" 30 prom_ready

# Calls the learner refuses, made every 2 s while Prometheus watches (curl speaks enough
# of gRPC's HTTP/2 framing): Register with a wrong token (an authentication failure), and
# Register with the token but an empty message (protocol version 0, no role: a refused
# registration).
printf '\0\0\0\0\0' >"$WORK/empty.grpc"
register() {
    curl -s -o /dev/null --http2-prior-knowledge -X POST "http://$GRPC/qd.v1.Learner/Register" \
        -H 'content-type: application/grpc' -H 'te: trailers' --data-binary @"$WORK/empty.grpc" "$@"
}
(while sleep 2; do
    register -H "authorization: Bearer not-the-token-0123456789" || true
    register -H "authorization: Bearer $TOKEN" || true
done) &
PIDS+=($!)

# --- every dashboard query returns data; rules and targets healthy ------------------------
say "polling every dashboard query (deadline ${DEADLINE_S}s)"
python3 - "$PROM" "$DASHBOARD" "$DEADLINE_S" "$RATE_INTERVAL" "${PIDS[@]}" <<'EOF' ||
import json, math, re, sys, time, urllib.parse, urllib.request

prom, dash_path, deadline_s, rate_interval, *pids = sys.argv[1:]
deadline = time.monotonic() + float(deadline_s)

def api(path, **params):
    url = f"{prom}/api/v1/{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{path}: {body}")
    return body["data"]

def alive():
    # An exited child stays a zombie until bash reaps it, so read its state.
    for pid in pids:
        try:
            state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            state = "gone"
        if state in ("Z", "X", "gone"):
            sys.exit(f"process {pid} exited early")

# Grafana's variables, as Grafana would expand them for a short time range, with the
# run variable set to this run (its folder's name): a series without the run label
# shows nothing.
def expand(title, expr, run):
    subst = {"$__rate_interval": rate_interval, "$__interval": "1s", "$__range": "5m", "$run": run}
    for k in sorted(subst, key=len, reverse=True):
        expr = expr.replace(k, subst[k])
    if "$" in expr:
        sys.exit(f"panel {title!r}: unexpanded variable in {expr}")
    return expr

targets = [(p["title"], t.get("legendFormat", ""), t["expr"])
           for p in json.load(open(dash_path))["panels"] for t in p.get("targets", [])]
queries = [(title, legend, expand(title, expr, "rl")) for title, legend, expr in targets]

# Data the run produced: qd exports every counter (each label value included) and the
# connection gauges at 0 from the start, so a series that exists proves nothing. A query
# counts when, at some poll during the run, it returns a finite non-zero value: a rate or
# increase above 0 (the counter or histogram grew during the run), a histogram quantile
# or mean that is not NaN and not 0, a gauge set to a non-zero value.
#
# MAY_STAY_ZERO: the only queries (panel title, legend) for which a finite sample, even 0,
# is enough (the series exists; every one but the last is a gauge qd sets only once it has
# a value). Each is 0 on a healthy run for a reason named here; keep the list short, and
# never put a counter on it that this run can make grow.
MAY_STAY_ZERO = frozenset({
    # max_staleness = 0: every trajectory trained on comes from the current policy, so
    # every importance ratio is 1 and none is clipped.
    ("Importance weights", "{{run}} clipped share"),
    # Tiny models after 30 steps of pre-training write no bar that fits the meter:
    # validity 0, and quality = adherence × validity. (Adherence, diversity and the
    # evaluated version must still leave 0, so an evaluation has to have happened.)
    ("Evaluated quality", "{{run}} validity"),
    ("Evaluated quality", "{{run}} quality"),
    # Actors and the evaluator follow the broadcast stream and load every published
    # version within milliseconds: on a fast machine each scrape finds them at the
    # learner's version, and a lag of 0 is the healthy reading. (Both versions are
    # checked to leave 0 in the "Policy version" panel.)
    ("Policy lag", "{{run}} {{job}} {{instance}}"),
    # Trajectories are lost in flight only when a connection drops with a batch sent and
    # not yet acknowledged; no connection of a live actor drops here (the refused third
    # actor never opens a trajectory stream); tests/service/training.rs checks the accounting.
    ("Trajectories", "{{run}} lost in flight"),
})
keys = {(t, l) for t, l, _ in queries}
if MAY_STAY_ZERO - keys:
    sys.exit(f"MAY_STAY_ZERO names queries the dashboard does not have: {sorted(MAY_STAY_ZERO - keys)}")

def state(expr):
    values = [float(r["value"][1]) for r in api("query", query=expr)["result"]]
    finite = [v for v in values if math.isfinite(v)]
    if any(v != 0 for v in finite):
        return "non-zero"
    return "only 0" if finite else "no data"

last, when = {}, {}
def shown(q):
    last[q] = state(q[2])
    ok = last[q] == "non-zero" or (last[q] == "only 0" and q[:2] in MAY_STAY_ZERO)
    if ok:
        when[q] = time.monotonic() - started
    return ok

pending = list(queries)
started = time.monotonic()
while True:
    alive()
    pending = [q for q in pending if not shown(q)]
    if not pending or time.monotonic() > deadline:
        break
    time.sleep(1)
zero = sorted(f"[{q[0]}] {q[1]}" for q in queries if last.get(q) == "only 0" and q[:2] in MAY_STAY_ZERO)
print(f"{len(queries) - len(pending)}/{len(queries)} dashboard queries show data the run produced"
      f" (after {time.monotonic() - started:.0f}s"
      + (f"; the last: [{max(when, key=when.get)[0]}] {max(when, key=when.get)[1]})" if when and not pending else ")")
      + (f"; {len(zero)} at 0, as MAY_STAY_ZERO allows: {', '.join(zero)}" if zero else ""))
if pending:
    for title, legend, expr in pending:
        print(f"  {last[(title, legend, expr)]}: [{title}] {legend}: {expr}", file=sys.stderr)
    sys.exit("some dashboard queries showed no data produced by the run "
             "(\"only 0\": the series exists but never left 0)")

# Every field override of the dashboard matches a series it was written for: each
# panel's legends are rendered from its queries' results as Grafana renders them
# ({{label}} replaced by the series' label value), and every byName / byRegexp matcher
# must match one of them (an override that matches nothing silently draws its series on
# the wrong axis or in the wrong unit).
def legends(legend, expr):
    out = []
    for r in api("query", query=expr)["result"]:
        labels = r["metric"]
        out.append(re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), legend))
    return out
unmatched = []
for panel in json.load(open(dash_path))["panels"]:
    names = [n for t in panel.get("targets", [])
             for n in legends(t.get("legendFormat", ""), expand(panel["title"], t["expr"], "rl"))]
    for o in panel.get("fieldConfig", {}).get("overrides", []):
        kind, pattern = o["matcher"]["id"], o["matcher"].get("options", "")
        if kind == "byName":
            hit = pattern in names
        elif kind == "byRegexp":
            hit = any(re.search(pattern, n) for n in names)
        else:
            continue
        if not hit:
            unmatched.append(f"[{panel['title']}] {kind} {pattern!r} matches none of {sorted(set(names))}")
if unmatched:
    sys.exit("dashboard overrides that match no series:\n  " + "\n  ".join(unmatched))
print("every dashboard override matches a series the run produced")

# Two runs overlay: with both selected (Grafana's multi-value variable expands to
# "rl|rl2"), every query about a role both runs have (all but the evaluator's) shows a
# series of each run, told apart by the run label (queries without it, like `up`, are
# about the targets and skipped).
both = {"rl", "rl2"}
overlay = [(title, legend, expand(title, expr, "rl|rl2")) for title, legend, expr in targets
           if 'job="qd-evaluator"' not in expr]
def runs_shown(expr):
    return {r["metric"].get("run") for r in api("query", query=expr)["result"]} - {None}
missing = {}
while True:
    alive()
    missing = {q: runs_shown(q[2]) for q in overlay}
    missing = {q: seen for q, seen in missing.items() if seen and seen != both}
    if not missing or time.monotonic() > deadline:
        break
    time.sleep(1)
if missing:
    for (title, legend, expr), seen in missing.items():
        print(f"  runs {sorted(seen)}: [{title}] {legend}: {expr}", file=sys.stderr)
    sys.exit("with both runs selected, some queries do not show each run")
print(f"{len(overlay)} dashboard queries overlay runs rl and rl2 (each run its own series)")

targets = api("targets")["activeTargets"]
down = [f"{t['labels']['job']} {t['scrapeUrl']}: {t.get('lastError')}" for t in targets if t["health"] != "up"]
if down or len(targets) != 7:
    sys.exit(f"expected 7 healthy targets (2 learners, 4 actors, an evaluator), got {len(targets)}; down: {down}")

# The rules load and evaluate without error against real series. With max_staleness = 0
# most trajectories go stale, so QdTrajectoriesDropped{reason="stale"} must become active
# (pending: its `for` is longer than this test); nothing else may be.
def active():
    groups = api("rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    bad = [f"{r['name']}: {r.get('lastError')}" for r in rules if r.get("health") not in ("ok", "unknown")]
    if bad:
        sys.exit("alert rules fail to evaluate:\n  " + "\n  ".join(bad))
    alerts = {(a["labels"]["alertname"], a["labels"].get("reason", "")): a["state"]
              for r in rules for a in r.get("alerts", [])}
    return groups, rules, alerts
while True:
    alive()
    groups, rules, alerts = active()
    evaluated = rules and all(r.get("health") == "ok" for r in rules)
    if evaluated and ("QdTrajectoriesDropped", "stale") in alerts:
        break
    if time.monotonic() > deadline:
        sys.exit(f"QdTrajectoriesDropped did not become active on stale drops; active: {alerts}")
    time.sleep(1)
others = {k: v for k, v in alerts.items() if k[0] != "QdTrajectoriesDropped"}
if others:
    sys.exit(f"alerts active on a healthy service: {others}")
print(f"{len(rules)} alert rules in {[g['name'] for g in groups]} evaluate cleanly; "
      f"active: {', '.join(f'{n}{{reason={r}}} ({s})' for (n, r), s in alerts.items())}")
EOF
    fail "Prometheus checks against the running service"

say "OK (${SECONDS}s)"
