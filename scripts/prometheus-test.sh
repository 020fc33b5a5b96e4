#!/usr/bin/env bash
# Real-Prometheus test of the observability artefacts (deploy/, grafana/).
#
#  1. Installs Prometheus (Debian package `prometheus`: prometheus + promtool) when missing.
#  2. Static checks: promtool check config / check rules / test rules; YAML syntax of deploy/
#     and grafana/provisioning; dashboards are up to date with grafana/generate.py and follow
#     the expected schema; every metric an expression names is declared in METRICS
#     (src/telemetry.rs) and every label value used is one the server exports.
#  3. Builds the server and the load generator (release), starts the server on 127.0.0.1 with
#     a temporary data dir, and a real Prometheus (temporary storage) scraping it every 1 s and
#     loading deploy/alerts.yml.
#  4. Runs a short, bounded loadgen run, then through Prometheus' HTTP API checks that every
#     dashboard expression and every alert expression evaluates without error, that every rule
#     is healthy, and that the core series have data.
#
# Everything listens on 127.0.0.1 only; every wait has a timeout; every process started here
# is stopped on exit. Exit code 0 only if every check passed.
#
# Environment: PROMTEST_PLAYERS (default 20), PROMTEST_SECONDS (loadgen duration, default 20),
# PROMTEST_KEEP=1 keeps the work directory, CARGO_TARGET_DIR is honoured.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PLAYERS="${PROMTEST_PLAYERS:-20}"
SECONDS_RUN="${PROMTEST_SECONDS:-20}"
BUILD_TIMEOUT="${PROMTEST_BUILD_TIMEOUT:-2400}"

log() { printf '[prometheus-test] %s\n' "$*" >&2; }
fail() {
  log "FAIL: $*"
  exit 1
}

WORK="$(mktemp -d "${TMPDIR:-/tmp}/zonehost-promtest.XXXXXX")"
SERVER_PID=""
PROM_PID=""
LOADGEN_PID=""

stop_pid() { # stop_pid PID NAME: SIGTERM, wait up to 15 s, then SIGKILL
  local pid="$1" name="$2" i
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name (pid $pid) did not stop in 15 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_pid "$LOADGEN_PID" loadgen
  stop_pid "$PROM_PID" prometheus
  stop_pid "$SERVER_PID" zonehost
  if [ "$rc" -ne 0 ]; then
    for f in server.log prometheus.log loadgen.log; do
      if [ -s "$WORK/$f" ]; then
        log "---- last lines of $f ----"
        tail -n 40 "$WORK/$f" >&2 || true
      fi
    done
  fi
  if [ "${PROMTEST_KEEP:-0}" = 1 ]; then
    log "work directory kept: $WORK"
  else
    rm -rf "$WORK"
  fi
  if [ "$rc" -eq 0 ]; then log "PASS"; else log "FAILED (exit $rc)"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

command -v python3 >/dev/null || fail "python3 is required"

# ------------------------------------------------------------------ 1. Prometheus tools
APT_UPDATED=0
apt_install() { # apt_install WHAT PACKAGE...: as root (or passwordless sudo), bounded in time
  local what="$1" sudo=""
  shift
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
      sudo="sudo -n"
    else
      fail "$what missing and installing it needs root: run as root or install the Debian package(s) $* (apt-get install -y $*)"
    fi
  fi
  command -v apt-get >/dev/null || fail "$what missing and apt-get is not available: install $* yourself"
  export DEBIAN_FRONTEND=noninteractive
  if [ "$APT_UPDATED" = 0 ]; then
    log "apt-get update"
    timeout 600 $sudo apt-get -o DPkg::Lock::Timeout=120 update -q >>"$WORK/apt.log" 2>&1 ||
      { tail -n 20 "$WORK/apt.log" >&2; fail "apt-get update failed"; }
    APT_UPDATED=1
  fi
  log "apt-get install $*"
  timeout 900 $sudo apt-get -o DPkg::Lock::Timeout=120 install -y -q --no-install-recommends "$@" >>"$WORK/apt.log" 2>&1 ||
    { tail -n 20 "$WORK/apt.log" >&2; fail "apt-get install $* failed"; }
}
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  apt_install "prometheus/promtool" prometheus
fi
command -v prometheus >/dev/null && command -v promtool >/dev/null ||
  fail "prometheus/promtool still not on PATH after installing"
log "using $(prometheus --version 2>&1 | head -n 1)"

# ------------------------------------------------------------------ helper (python)
cat >"$WORK/check.py" <<'PY'
"""Helpers of scripts/prometheus-test.sh. Standard library plus PyYAML when present."""
import glob, json, os, re, socket, sys, time, urllib.error, urllib.parse, urllib.request

ROOT = os.getcwd()

def die(msg):
    print(f"[prometheus-test] FAIL: {msg}", file=sys.stderr)
    sys.exit(1)

def info(msg):
    print(f"[prometheus-test] {msg}", file=sys.stderr)

# ---------------------------------------------------------------- catalog
def catalog():
    text = open(os.path.join(ROOT, "src/telemetry.rs"), encoding="utf-8").read()
    start = text.index("pub const METRICS")
    body = text[start:text.index("];", start)]
    out = {}
    for m in re.finditer(r'm\(\s*"([a-z0-9_]+)"\s*,\s*(Counter|Gauge|Histogram)\s*,\s*&\[([^\]]*)\]', body):
        out[m.group(1)] = (m.group(2).lower(), re.findall(r'"([a-z0-9_]+)"', m.group(3)))
    if not out:
        die("no metrics parsed from METRICS in src/telemetry.rs")
    return out, text

def label_values(telemetry_text):
    """Known values per label name: the label enums of telemetry.rs, RejectCode::as_str,
    and literal `"label" => "value"` pairs."""
    vals = {}
    enums = {}
    for m in re.finditer(r'label_enum!\s*\{.*?\b([A-Z][A-Za-z]+)\s*\{(.*?)\n\s*\}\s*\n\}', telemetry_text, re.S):
        enums[m.group(1)] = re.findall(r'=>\s*"([a-z0-9_]+)"', m.group(2))
    cause = set(enums.get("DropCause", [])) | set(enums.get("DisconnectCause", []))
    if cause:
        vals["cause"] = cause
    msg = open(os.path.join(ROOT, "protocol/src/message.rs"), encoding="utf-8").read()
    codes = set(re.findall(r'RejectCode::[A-Za-z]+\s*=>\s*"([a-z0-9_]+)"', msg))
    if codes:
        vals["code"] = codes
    for m in re.finditer(r'"([a-z_]+)"\s*=>\s*"([a-z0-9_]+)"', telemetry_text):
        vals.setdefault(m.group(1), set()).add(m.group(2))
    return vals

# ---------------------------------------------------------------- expressions
def dashboard_exprs():
    """[(where, expr)] of every dashboard target, plus the instance variable query."""
    out = []
    for path in sorted(glob.glob(os.path.join(ROOT, "grafana/dashboards/*.json"))):
        d = json.load(open(path, encoding="utf-8"))
        name = os.path.basename(path)
        for p in d.get("panels", []):
            for t in p.get("targets", []):
                out.append((f"{name}: {p.get('title')} [{t.get('refId')}]", t["expr"]))
        for v in d.get("templating", {}).get("list", []):
            if v.get("type") == "query":
                q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
                m = re.fullmatch(r'\s*label_values\((.*),\s*([a-zA-Z_]+)\)\s*', q)
                if not m:
                    die(f"{name}: variable {v['name']}: unsupported query {q!r}")
                out.append((f"{name}: variable ${v['name']}", f"group by ({m.group(2)}) ({m.group(1)})"))
    return out

def alert_exprs():
    import yaml
    rules = yaml.safe_load(open(os.path.join(ROOT, "deploy/alerts.yml"), encoding="utf-8"))
    out = []
    for g in rules["groups"]:
        for r in g["rules"]:
            out.append((f"alerts.yml: {r.get('alert') or r.get('record')}", r["expr"]))
    return out

def configmap_toml():
    import yaml
    path = os.path.join(ROOT, "deploy/k8s/configmap.yaml")
    if not os.path.exists(path):
        return None
    for doc in yaml.safe_load_all(open(path, encoding="utf-8")):
        if doc and doc.get("kind") == "ConfigMap" and "zonehost.toml" in doc.get("data", {}):
            return doc["data"]["zonehost.toml"]
    return None

def substitute(expr):
    e = expr
    for var, val in (("__rate_interval", "1m"), ("__interval", "15s"), ("__range", "5m"),
                     ("instance", ".+"), ("job", "zonehost")):
        e = e.replace("${%s}" % var, val).replace("$" + var, val)
    if "$" in e:
        die(f"unsubstituted Grafana variable in {expr!r}")
    return e

# ---------------------------------------------------------------- static checks
def static():
    import yaml
    cat, ttext = catalog()
    known_vals = label_values(ttext)
    # YAML syntax of everything deployable.
    files = sorted(set(glob.glob(os.path.join(ROOT, "deploy/**/*.yml"), recursive=True)
                       + glob.glob(os.path.join(ROOT, "deploy/**/*.yaml"), recursive=True)
                       + glob.glob(os.path.join(ROOT, "grafana/provisioning/**/*.yml"), recursive=True)))
    for f in files:
        try:
            list(yaml.safe_load_all(open(f, encoding="utf-8")))
        except yaml.YAMLError as e:
            die(f"{os.path.relpath(f, ROOT)}: invalid YAML: {e}")
    info(f"YAML syntax ok: {len(files)} files")
    # Shipped zonehost.toml files use only options `Config` knows (deny_unknown_fields).
    import tomllib
    cfg = open(os.path.join(ROOT, "src/config.rs"), encoding="utf-8").read()
    body = cfg[cfg.index("pub struct Config"):]
    body = body[:body.index("\n}")]
    options = set(re.findall(r'^\s*pub ([a-z0-9_]+):', body, re.M))
    tomls = [("deploy/k8s/configmap.yaml", configmap_toml())]
    for f in sorted(glob.glob(os.path.join(ROOT, "deploy/**/*.toml"), recursive=True)):
        tomls.append((os.path.relpath(f, ROOT), open(f, encoding="utf-8").read()))
    for where, text in tomls:
        if text is None:
            continue
        try:
            keys = set(tomllib.loads(text))
        except tomllib.TOMLDecodeError as e:
            die(f"{where}: invalid TOML: {e}")
        unknown = sorted(keys - options)
        if unknown:
            die(f"{where}: unknown zonehost options {unknown} (see src/config.rs)")
    info(f"zonehost.toml options ok: {len(tomls)} files")
    # Dashboard schema.
    boards = sorted(glob.glob(os.path.join(ROOT, "grafana/dashboards/*.json")))
    if not boards:
        die("no dashboards in grafana/dashboards")
    for path in boards:
        name = os.path.basename(path)
        d = json.load(open(path, encoding="utf-8"))
        if d.get("schemaVersion", 0) < 38:
            die(f"{name}: schemaVersion {d.get('schemaVersion')} < 38")
        vars_ = {v["name"]: v for v in d.get("templating", {}).get("list", [])}
        ds = vars_.get("datasource")
        if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
            die(f"{name}: needs a `datasource` variable of type datasource with query prometheus")
        ids = set()
        for p in d["panels"]:
            if p["type"] not in ("timeseries", "stat", "text"):
                die(f"{name}: panel {p.get('title')!r} has type {p['type']}")
            if p["id"] in ids:
                die(f"{name}: duplicate panel id {p['id']}")
            ids.add(p["id"])
            if p["type"] != "text":
                if p.get("datasource", {}).get("uid") != "${datasource}" or not p.get("targets"):
                    die(f"{name}: panel {p.get('title')!r} must use ${{datasource}} and have targets")
                for t in p["targets"]:
                    if not t.get("expr") or t.get("datasource", {}).get("uid") != "${datasource}":
                        die(f"{name}: panel {p.get('title')!r}: target without expr or datasource")
    info(f"dashboard schema ok: {len(boards)} dashboards")
    # Metric names and label values.
    allowed = {"up"}
    for name, (kind, _) in cat.items():
        allowed.add(name)
        if kind == "histogram":
            allowed.update({name + "_bucket", name + "_sum", name + "_count"})
    exprs = dashboard_exprs() + alert_exprs()
    used = set()
    for where, expr in exprs:
        e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # drop string literals
        names = set(re.findall(r'\bzonehost_[a-z0-9_]+', e))
        names |= set(re.findall(r'\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{', e))
        for n in names:
            if n not in allowed:
                die(f"{where}: metric {n!r} is not declared in METRICS (src/telemetry.rs)")
            used.add(re.sub(r'_(bucket|sum|count)$', '', n) if n not in cat else n)
        for lbl, op, val in re.findall(r'\b([a-z_]+)\s*(=~|!~|=|!=)\s*"([^"]*)"', expr):
            if lbl not in known_vals:
                continue
            alts = val.split("|") if op in ("=~", "!~") else [val]
            for a in alts:
                if re.fullmatch(r'[a-z0-9_]+', a) and a not in known_vals[lbl]:
                    die(f"{where}: {lbl}={a!r} is not a value the server exports "
                        f"(known: {', '.join(sorted(known_vals[lbl]))})")
    unused = sorted(set(cat) - used)
    info(f"metric names ok: {len(exprs)} expressions over {len(used & set(cat))} of {len(cat)} catalog metrics"
         + (f"; not on any dashboard or alert: {', '.join(unused)}" if unused else ""))

# ---------------------------------------------------------------- HTTP
def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode("utf-8", "replace")

def wait_http(url, timeout, want=200):
    deadline = time.time() + float(timeout)
    last = None
    while time.time() < deadline:
        try:
            status, _ = http_get(url, timeout=2)
            if status == int(want):
                return
            last = f"HTTP {status}"
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}"
            if e.code == int(want):
                return
        except Exception as e:  # connection refused while starting
            last = str(e)
        time.sleep(0.25)
    die(f"{url} did not answer {want} within {timeout} s (last: {last})")

def expect_status(url, want):
    try:
        status, body = http_get(url)
    except urllib.error.HTTPError as e:
        status, body = e.code, ""
    if status != int(want):
        die(f"{url}: HTTP {status}, expected {want}")

def free_port(kind):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port

class Prom:
    def __init__(self, base):
        self.base = base.rstrip("/")

    def api(self, path, **params):
        url = f"{self.base}/api/v1/{path}"
        data = urllib.parse.urlencode(params).encode() if params else None
        try:
            with urllib.request.urlopen(url, data=data, timeout=15) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:
            try:
                body = json.load(e)
            except Exception:
                return {"status": "error", "error": f"HTTP {e.code}"}
        return body

    def query(self, expr):
        return self.api("query", query=expr)

    def value(self, expr):
        """Scalar of a one-series instant vector (or None if empty)."""
        r = self.query(expr)
        if r.get("status") != "success":
            die(f"query {expr!r} failed: {r.get('error')}")
        res = r["data"]["result"]
        if r["data"]["resultType"] == "scalar":
            return float(res[1])
        if not res:
            return None
        return sum(float(s["value"][1]) for s in res)

def wait_value(prom, expr, cond, timeout, what):
    deadline = time.time() + float(timeout)
    v = None
    while time.time() < deadline:
        v = prom.value(expr)
        if v is not None and cond(v):
            return v
        time.sleep(0.5)
    die(f"{what}: `{expr}` = {v} after {timeout} s")

# ---------------------------------------------------------------- live checks
def live(base):
    prom = Prom(base)
    cat, _ = catalog()
    failures = []
    # Core series have data.
    core = [
        ('max(max_over_time(zonehost_sessions_active{job="zonehost"}[10m]))', lambda v: v > 0,
         "players were connected during the run"),
        ('sum(increase(zonehost_ticks_total{job="zonehost"}[30s]))', lambda v: v > 0,
         "ticks_total increases"),
        ('sum(zonehost_datagrams_received_total{job="zonehost"})', lambda v: v > 0,
         "datagrams were received"),
        ('sum(zonehost_datagrams_sent_total{job="zonehost"})', lambda v: v > 0,
         "snapshot datagrams were sent"),
        ('sum(zonehost_tick_duration_seconds_count{job="zonehost"})', lambda v: v > 0,
         "tick duration histogram has observations"),
        ('min(up{job="zonehost"})', lambda v: v == 1, "the server target is up"),
    ]
    for expr, cond, what in core:
        v = prom.value(expr)
        ok = v is not None and cond(v)
        info(f"{'ok  ' if ok else 'FAIL'} {what}: {expr} = {v}")
        if not ok:
            failures.append(what)
    # Every dashboard and alert expression evaluates.
    exprs = dashboard_exprs() + alert_exprs()
    empty, broken = [], 0
    for where, expr in exprs:
        q = substitute(expr)
        r = prom.query(q)
        if r.get("status") != "success":
            failures.append(where)
            broken += 1
            info(f"FAIL {where}: {r.get('errorType')}: {r.get('error')}\n       {q}")
            continue
        if not r["data"]["result"]:
            empty.append(where)
    info(f"{len(exprs) - broken} of {len(exprs)} dashboard/alert expressions evaluate"
         f" ({len(exprs) - len(empty)} with data)")
    quiet = [w for w in empty if not w.startswith("alerts.yml")]
    for w in quiet:
        info(f"     no data (no such events in this run): {w}")
    if len(empty) > len(quiet):
        info(f"     {len(empty) - len(quiet)} alert expressions return nothing (their conditions do not hold)")
    # The rules Prometheus loaded are healthy (evaluated at least once, without error).
    deadline = time.time() + 30
    while True:
        groups = prom.api("rules")["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        pending = [r for r in rules if r.get("lastEvaluation", "").startswith("0001-")]
        if not pending or time.time() > deadline:
            break
        time.sleep(1)
    bad = [r for r in rules if r.get("health") != "ok"]
    for r in bad:
        failures.append(f"rule {r['name']}")
        info(f"FAIL rule {r['name']}: health {r.get('health')}: {r.get('lastError')}")
    if not rules:
        failures.append("no rules loaded")
    info(f"{len(rules) - len(bad)} of {len(rules)} alert rules healthy")
    firing = [a for a in prom.api("alerts")["data"]["alerts"]]
    for a in firing:
        info(f"     alert {a['labels'].get('alertname')} is {a['state']} (informational)")
    # Catalog against what the server exported.
    r = prom.query('group by (__name__) ({job="zonehost", __name__=~"zonehost_.+"})')
    exported = {s["metric"]["__name__"] for s in r["data"]["result"]}
    missing = []
    for name, (kind, _) in sorted(cat.items()):
        if (name + "_bucket" if kind == "histogram" else name) not in exported:
            missing.append(name)
    if missing:
        failures.append("declared but not exported: " + ", ".join(missing))
        info("FAIL declared in METRICS but not exported during the run: " + ", ".join(missing))
    base_names = {re.sub(r'_(bucket|sum|count)$', '', n) for n in exported}
    undeclared = sorted(n for n in base_names if n not in cat and n + "_total" not in cat)
    if undeclared:
        info("note: exported but not declared in METRICS (dashboards cannot use them yet): " + ", ".join(undeclared))
    if failures:
        die(f"{len(failures)} live check(s) failed: " + "; ".join(failures))

if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "static":
        static()
    elif cmd == "free-port":
        print(free_port(args[0]))
    elif cmd == "wait-http":
        wait_http(*args)
    elif cmd == "expect-status":
        expect_status(*args)
    elif cmd == "wait-value":
        base, expr, minimum, timeout, what = args
        v = wait_value(Prom(base), expr, lambda v: v >= float(minimum), timeout, what)
        info(f"ok   {what}: {v}")
    elif cmd == "live":
        live(args[0])
    elif cmd == "configmap-toml":
        text = configmap_toml()
        if text is None:
            die("no zonehost.toml in deploy/k8s/configmap.yaml")
        open(args[0], "w", encoding="utf-8").write(text)
    elif cmd == "strip-annotations":
        import yaml
        r = yaml.safe_load(open(args[0], encoding="utf-8"))
        for g in r["groups"]:
            for x in g["rules"]:
                x.pop("annotations", None)
        yaml.safe_dump(r, open(args[1], "w", encoding="utf-8"), sort_keys=False)
    else:
        die(f"unknown helper command {cmd}")
PY
check() { python3 "$WORK/check.py" "$@"; }

if ! python3 -c 'import yaml' 2>/dev/null; then
  # Debian's python3 finds python3-yaml; another python3 (e.g. /usr/local) needs pip.
  if [ "$(command -v python3)" = /usr/bin/python3 ] && command -v apt-get >/dev/null; then
    apt_install "PyYAML (python3-yaml)" python3-yaml
  fi
  if ! python3 -c 'import yaml' 2>/dev/null; then
    log "installing PyYAML with pip"
    timeout 300 python3 -m pip install -q --user pyyaml >>"$WORK/apt.log" 2>&1 ||
      timeout 300 python3 -m pip install -q --user --break-system-packages pyyaml >>"$WORK/apt.log" 2>&1 || true
  fi
  python3 -c 'import yaml' 2>/dev/null || fail "python3 cannot import yaml (PyYAML): install python3-yaml or pyyaml"
fi
python3 -c 'import tomllib' 2>/dev/null || fail "python3 >= 3.11 is required (tomllib)"

# ------------------------------------------------------------------ 2. static checks
log "promtool check config / rules / test rules"
promtool check config deploy/prometheus.yml >"$WORK/promtool.log" 2>&1 ||
  { cat "$WORK/promtool.log" >&2; fail "promtool check config deploy/prometheus.yml"; }
promtool check rules deploy/alerts.yml >"$WORK/promtool.log" 2>&1 ||
  { cat "$WORK/promtool.log" >&2; fail "promtool check rules deploy/alerts.yml"; }
if [ -f deploy/alerts.test.yml ]; then
  mkdir -p "$WORK/ruletest"
  cp deploy/alerts.test.yml "$WORK/ruletest/"
  check strip-annotations deploy/alerts.yml "$WORK/ruletest/alerts.yml"
  promtool test rules "$WORK/ruletest/alerts.test.yml" >"$WORK/promtool.log" 2>&1 ||
    { cat "$WORK/promtool.log" >&2; fail "promtool test rules deploy/alerts.test.yml"; }
fi
if [ -f grafana/generate.py ]; then
  python3 grafana/generate.py --check || fail "dashboards are stale: run python3 grafana/generate.py"
fi
check static

# ------------------------------------------------------------------ 3. build, server, Prometheus
log "building zonehost and loadgen (release)"
timeout "$BUILD_TIMEOUT" cargo build --release -p zonehost -p zonehost-loadgen ||
  fail "cargo build --release -p zonehost -p zonehost-loadgen failed"
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
SERVER_BIN="$TARGET_DIR/release/zonehost"
LOADGEN_BIN="$TARGET_DIR/release/loadgen"
[ -x "$SERVER_BIN" ] || fail "$SERVER_BIN not built"
[ -x "$LOADGEN_BIN" ] || fail "$LOADGEN_BIN not built"

QUIC_PORT="$(check free-port udp)"
METRICS_PORT="$(check free-port tcp)"
PROM_PORT="$(check free-port tcp)"
while [ "$PROM_PORT" = "$METRICS_PORT" ]; do PROM_PORT="$(check free-port tcp)"; done
DATA="$WORK/data"
mkdir -p "$DATA" "$WORK/prom-data"

# The server runs with the Kubernetes ConfigMap's zonehost.toml (so the shipped config is
# proven to load), with the addresses and data dir overridden for this test.
check configmap-toml "$WORK/zonehost.toml"
log "starting zonehost (config deploy/k8s/configmap.yaml): QUIC 127.0.0.1:$QUIC_PORT, metrics 127.0.0.1:$METRICS_PORT"
RUST_LOG="${RUST_LOG:-info}" "$SERVER_BIN" serve --config "$WORK/zonehost.toml" \
  --listen "127.0.0.1:$QUIC_PORT" --data-dir "$DATA" \
  --metrics-listen "127.0.0.1:$METRICS_PORT" --log-format human >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
check wait-http "http://127.0.0.1:$METRICS_PORT/healthz" 30
check expect-status "http://127.0.0.1:$METRICS_PORT/readyz" 200
for f in cert.der dev-signing.key; do
  for _ in $(seq 1 100); do [ -s "$DATA/$f" ] && break; sleep 0.1; done
  [ -s "$DATA/$f" ] || fail "the server did not create $DATA/$f"
done
kill -0 "$SERVER_PID" 2>/dev/null || fail "zonehost exited during start-up"

mkdir -p "$WORK/prom-config"
cp deploy/alerts.yml "$WORK/prom-config/alerts.yml"
cat >"$WORK/prom-config/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - alerts.yml
scrape_configs:
  - job_name: zonehost
    scrape_interval: 1s
    scrape_timeout: 1s
    static_configs:
      - targets: ["127.0.0.1:$METRICS_PORT"]
EOF
promtool check config "$WORK/prom-config/prometheus.yml" >"$WORK/promtool.log" 2>&1 ||
  { cat "$WORK/promtool.log" >&2; fail "generated Prometheus config is invalid"; }

log "starting Prometheus on 127.0.0.1:$PROM_PORT"
prometheus --config.file="$WORK/prom-config/prometheus.yml" \
  --storage.tsdb.path="$WORK/prom-data" \
  --web.listen-address="127.0.0.1:$PROM_PORT" \
  --storage.tsdb.retention.time=1h \
  --log.level=warn >"$WORK/prometheus.log" 2>&1 &
PROM_PID=$!
PROM="http://127.0.0.1:$PROM_PORT"
check wait-http "$PROM/-/ready" 60
check wait-value "$PROM" 'sum(up{job="zonehost"})' 1 30 "Prometheus scrapes the server"

# ------------------------------------------------------------------ 4. load, then queries
log "loadgen: $PLAYERS players of every behaviour (scenario smoke) for ${SECONDS_RUN}s"
# The smoke scenario's latency objectives are not what this test checks (the observability
# pipeline is): only "no bot failed" decides.
timeout "$((SECONDS_RUN + 90))" "$LOADGEN_BIN" --scenario smoke --players "$PLAYERS" --duration "${SECONDS_RUN}s" --slo "failures=0" \
  --server "127.0.0.1:$QUIC_PORT" --cert "$DATA/cert.der" --token-key "$DATA/dev-signing.key" \
  --report "$WORK/loadgen.json" >"$WORK/loadgen.log" 2>&1 &
LOADGEN_PID=$!
check wait-value "$PROM" 'sum(zonehost_sessions_active{job="zonehost"})' 1 "$((SECONDS_RUN + 30))" \
  "players online while the load runs"
LOADGEN_RC=0
wait "$LOADGEN_PID" || LOADGEN_RC=$?
LOADGEN_PID=""
[ "$LOADGEN_RC" -eq 0 ] || { tail -n 40 "$WORK/loadgen.log" >&2; fail "loadgen exited with $LOADGEN_RC"; }
tail -n 15 "$WORK/loadgen.log" >&2 || true
kill -0 "$SERVER_PID" 2>/dev/null || fail "zonehost died during the load run"
sleep 3 # a final scrape and a rule evaluation after the load
check live "$PROM"

# ------------------------------------------------------------------ 5. drain under load
# SIGTERM while bots play: every connected bot must get a Goaway, and the process must exit 0
# well within the 30 s that k8s/systemd/compose allow.
log "SIGTERM under load: every bot gets Goaway, the server drains and exits 0 within 25 s"
# --recover-deadline 0s: a bot's loss is final here (no reconnection to a server that is gone).
"$LOADGEN_BIN" --scenario smoke --players "$PLAYERS" --duration 60s --ramp-up 2s --slo "failures=0" \
  --recover-deadline 0s --server "127.0.0.1:$QUIC_PORT" --cert "$DATA/cert.der" --token-key "$DATA/dev-signing.key" \
  --report "$WORK/drain.json" >"$WORK/drain.log" 2>&1 &
LOADGEN_PID=$!
check wait-value "$PROM" 'sum(zonehost_sessions_active{job="zonehost"})' "$((PLAYERS * 3 / 4))" 30 \
  "every drain-test bot online"
kill -TERM "$SERVER_PID"
for _ in $(seq 1 250); do
  kill -0 "$SERVER_PID" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$SERVER_PID" 2>/dev/null; then
  fail "zonehost still running 25 s after SIGTERM (stop timeouts in deploy/ are 30 s)"
fi
SERVER_RC=0
wait "$SERVER_PID" || SERVER_RC=$?
SERVER_PID=""
[ "$SERVER_RC" -eq 0 ] || fail "zonehost exited with $SERVER_RC after SIGTERM"
# The drain linger (drain_linger_ms in the ConfigMap) kept /metrics up long enough for
# Prometheus to record the planned stop, which keeps ZonehostDown quiet.
check wait-value "$PROM" 'max(last_over_time(zonehost_draining{job="zonehost"}[2m]))' 1 5 \
  "Prometheus scraped zonehost_draining 1 before the server exited"
wait "$LOADGEN_PID" || true
LOADGEN_PID=""
python3 - "$WORK/drain.json" "$PLAYERS" <<'PY' || fail "bots did not all end with a Goaway (see drain.log)"
import json, sys
r = json.load(open(sys.argv[1]))
failures = r.get("failures", {})
goaway = sum(f.get("count", 0) for k, f in failures.items() if "goaway" in k) if isinstance(failures, dict) else 0
other = {k: f for k, f in failures.items() if "goaway" not in k}
print(f"[prometheus-test] drain: {goaway} bots ended with Goaway, other failures: {other}", file=sys.stderr)
# Churners may be between sessions at the SIGTERM: they then see a refused reconnect, not a Goaway.
sys.exit(0 if goaway >= int(sys.argv[2]) * 3 // 4 and all("goaway" in k or "connect" in k for k in other) else 1)
PY
log "zonehost drained and exited cleanly"
