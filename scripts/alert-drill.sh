#!/usr/bin/env bash
# Alert drill: the shipped alert rules (deploy/alerts.yml) against a real release server under
# real faults, one after another, evaluated by a real Prometheus (1 s scrape and evaluation).
#
# The rules are loaded with every `for:` and every range window divided by ONE factor,
# DRILL_SCALE (default 10: `for: 1m` -> 6s, `[1m]` -> [6s], `[1h]` -> [6m]); nothing else
# changes (expressions, thresholds, labels). Production timing is "fires within 2 minutes of a
# sustained fault, clears within 2 minutes of recovery", so the drill asserts
#   fires within 120/DRILL_SCALE s + DRILL_SLACK s (default 20) of the fault being felt,
#   clears within 120/DRILL_SCALE s + DRILL_SLACK s of its end.
# DRILL_SCALE=1 runs the rules exactly as shipped (the full drill, ~25 minutes).
#
# Faults, in order (each bounded; the next starts once every alert is quiet again):
#   normal     20 bots of every behaviour at 60 Hz          -> nothing fires
#   bad_token  a burst of logins with tokens of an unknown key -> ZonehostAuthRejectSpike; nothing critical
#   junk_udp   random UDP datagrams at the game port         -> ZonehostJunkDatagrams; nothing critical
#   overload   DRILL_OVERLOAD_PLAYERS bots at 60 Hz (clients must feel move p99 > 100 ms)
#              -> ZonehostPlayerLatencyHigh fires and clears; a critical tick alert only after its warning
#   freeze     SIGSTOP, SIGCONT after the alert               -> ZonehostDown fires, then clears
#   kill       kill -9, restart after the alert               -> ZonehostDown fires, then clears
#   drain      SIGTERM (drain, lingers --drain-linger-ms)     -> nothing critical (ZonehostDown stays quiet)
#
# Everything listens on 127.0.0.1 only; every wait has a timeout; every process started here is
# stopped on exit. Exit code 0 only if every assertion held. The results (times from fault to
# firing and to clearing) are printed as a table and written to $DRILL_RESULTS if set.
#
# Fault durations scale too: max(short form, 180 s / DRILL_SCALE).
# Environment: DRILL_SCALE (10), DRILL_SLACK (20), DRILL_OVERLOAD_PLAYERS (1200),
# DRILL_OVERLOAD_SECONDS (30 at scale 10), DRILL_KEEP=1 keeps the work directory, DRILL_RESULTS=FILE.
# Needs prometheus + promtool (scripts/prometheus-test.sh installs the Debian package) and
# python3 with PyYAML.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SCALE="${DRILL_SCALE:-10}"
SLACK="${DRILL_SLACK:-20}"
# 1200: 800 bots at 60 Hz overloaded the server when this VM ran slow (snapshot round trip
# p99 964 ms) and not at all when it ran fast (49 ms, 2026-12-07); 1200 is past the
# transport floor's own limit at 60 Hz (p99 145-175 ms at 1000 connections).
OVERLOAD_PLAYERS="${DRILL_OVERLOAD_PLAYERS:-1200}"
BUILD_TIMEOUT="${DRILL_BUILD_TIMEOUT:-2400}"
# On a build machine shared with others' compilers, DRILL_NICE=-10 (root) runs the server
# ahead of them, so that the drill measures the alerts, not the neighbours (a starved sim
# thread really does run late and skip ticks, and the tick alerts then rightly fire).
NICE="${DRILL_NICE:-0}"

log() { printf '[alert-drill] %s\n' "$*" >&2; }
fail() {
  log "FAIL: $*"
  exit 1
}

WORK="$(mktemp -d "${TMPDIR:-/tmp}/zonehost-drill.XXXXXX")"
SERVER_PID=""
PROM_PID=""
LOADGEN_PID=""
JUNK_PID=""
WATCH=""
FAILED="" # faults whose assertions failed; the drill goes on and reports them all at the end

stop_pid() { # stop_pid PID NAME: SIGCONT (it may be stopped), SIGTERM, wait up to 20 s, SIGKILL
  local pid="$1" name="$2" i
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -CONT "$pid" 2>/dev/null || true
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 200); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name (pid $pid) did not stop in 20 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_pid "$WATCH" watcher
  stop_pid "$JUNK_PID" junk-sender
  stop_pid "$LOADGEN_PID" loadgen
  stop_pid "$SERVER_PID" zonehost
  stop_pid "$PROM_PID" prometheus
  if [ "$rc" -ne 0 ]; then
    for f in server.log prometheus.log loadgen.log; do
      if [ -s "$WORK/$f" ]; then
        log "---- last lines of $f ----"
        tail -n 30 "$WORK/$f" >&2 || true
      fi
    done
  fi
  if [ "${DRILL_KEEP:-0}" = 1 ]; then
    log "work directory kept: $WORK"
  else
    rm -rf "$WORK"
  fi
  if [ "$rc" -eq 0 ]; then log "PASS"; else log "FAILED (exit $rc)"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

command -v prometheus >/dev/null && command -v promtool >/dev/null ||
  fail "prometheus/promtool not on PATH: run scripts/prometheus-test.sh once (it installs the Debian package) or apt-get install prometheus"
python3 -c 'import yaml' 2>/dev/null || fail "python3 cannot import yaml (install python3-yaml)"

# ------------------------------------------------------------------ helper (python)
cat >"$WORK/drill.py" <<'PY'
"""Helpers of scripts/alert-drill.sh (standard library + PyYAML)."""
import json, os, random, re, socket, sys, time, urllib.error, urllib.parse, urllib.request

def info(msg):
    print(f"[alert-drill] {msg}", file=sys.stderr, flush=True)

def die(msg):
    info(f"FAIL: {msg}")
    sys.exit(1)

UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}

def secs(text):
    total = 0.0
    for n, u in re.findall(r"(\d+)(ms|s|m|h|d)", text):
        total += int(n) * UNIT[u]
    return total

def fmt(seconds):
    ms = max(1, round(seconds * 1000))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"

def scale_rules(src, dst, factor):
    """Divides every `for:` and every range/subquery window of the rules by `factor`."""
    import yaml
    rules = yaml.safe_load(open(src, encoding="utf-8"))
    def window(m):
        rng = fmt(secs(m.group(1)) / factor)
        step = m.group(2)
        if step is None:
            return f"[{rng}]"
        return f"[{rng}:{fmt(secs(step) / factor) if step else ''}]"
    n = 0
    for g in rules["groups"]:
        for r in g["rules"]:
            if "for" in r:
                r["for"] = fmt(secs(str(r["for"])) / factor) if secs(str(r["for"])) else "0s"
            new = re.sub(r"\[((?:\d+(?:ms|s|m|h|d))+)(?::((?:\d+(?:ms|s|m|h|d))*))?\]", window, r["expr"])
            n += new != r["expr"]
            r["expr"] = new
    yaml.safe_dump(rules, open(dst, "w", encoding="utf-8"), sort_keys=False)
    info(f"rules scaled by 1/{factor:g}: every for: and the windows of {n} expressions")

class Prom:
    def __init__(self, base):
        self.base = base.rstrip("/")

    def api(self, path, **params):
        url = f"{self.base}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.load(r)
        except Exception as e:
            return {"status": "error", "error": str(e)}

    def alerts(self):
        """{(alertname, state)} of every pending or firing alert."""
        r = self.api("alerts")
        if r.get("status") != "success":
            return None
        return [(a["labels"].get("alertname"), a["state"], a["labels"].get("severity"), a["labels"])
                for a in r["data"]["alerts"]]

    def query(self, q):
        r = self.api("query", query=q)
        if r.get("status") != "success":
            return None
        return r["data"]["result"]

def state_file(work):
    return os.path.join(work, "results.json")

def load_results(work):
    try:
        return json.load(open(state_file(work)))
    except (OSError, ValueError):
        return []

def record(work, row):
    rows = load_results(work)
    rows.append(row)
    json.dump(rows, open(state_file(work), "w"), indent=1)

def watch(base, work, fault, t0, expect, quiet, fire_within, clear_within, end_file, max_total):
    """Polls the alerts every 0.5 s from t0 (fault start, unix seconds).
    expect: alert names that must fire within fire_within s of t0 and clear within clear_within
            s of the fault's end (the time written to end_file by the shell).
    quiet:  'critical' (no critical alert may fire), 'all' (nothing may fire), or a list of
            names that must not fire.
    Returns when every expected alert fired and cleared (or, with no expected alert, when the
    fault ended and the quiet period passed)."""
    prom = Prom(base)
    fired, cleared, violations = {}, {}, []
    first_seen = {}
    deadline = t0 + max_total
    while True:
        now = time.time()
        al = prom.alerts()
        if al is None:
            al = []
        firing = {(n, sev) for n, st, sev, _ in al if st == "firing"}
        for n, sev in firing:
            first_seen.setdefault(n, now - t0)
            bad = (quiet == "all" and n not in expect) or \
                  (quiet == "critical" and sev == "critical" and n not in expect) or \
                  (isinstance(quiet, list) and n in quiet)
            if bad and n not in [v[0] for v in violations]:
                violations.append((n, round(now - t0, 1)))
                info(f"{fault}: {n} ({sev}) fired {now - t0:.1f} s after the fault started: it must stay quiet")
        names = {n for n, _ in firing}
        for n in expect:
            if n in names and n not in fired:
                fired[n] = now - t0
                info(f"{fault}: {n} firing after {fired[n]:.1f} s")
        end = None
        try:
            end = float(open(end_file).read().strip())
        except (OSError, ValueError):
            pass
        if end is not None:
            for n in expect:
                if n in fired and n not in names and n not in cleared:
                    cleared[n] = max(0.0, now - end)
                    info(f"{fault}: {n} cleared {cleared[n]:.1f} s after the fault ended")
        done_fire = all(n in fired for n in expect)
        done_clear = end is not None and all(n in cleared for n in expect)
        if expect and done_fire and done_clear:
            # Everything else quiet too before the next fault.
            if not names:
                break
        if not expect and end is not None and now - end >= clear_within and not names:
            break
        if now > deadline:
            break
        if end is not None and now - end > clear_within + 30 and done_fire:
            break
        time.sleep(0.5)
    row = {"fault": fault, "expect": expect, "fired_s": {k: round(v, 1) for k, v in fired.items()},
           "cleared_s": {k: round(v, 1) for k, v in cleared.items()},
           "also_fired": {k: round(v, 1) for k, v in first_seen.items() if k not in expect},
           "violations": violations, "fire_within_s": fire_within, "clear_within_s": clear_within}
    problems = []
    for n in expect:
        if n not in fired:
            problems.append(f"{n} never fired (bound {fire_within:.0f} s)")
        elif fired[n] > fire_within:
            problems.append(f"{n} fired after {fired[n]:.1f} s (bound {fire_within:.0f} s)")
        if n in fired and n not in cleared:
            problems.append(f"{n} did not clear (bound {clear_within:.0f} s after the fault ended)")
        elif n in cleared and cleared[n] > clear_within:
            problems.append(f"{n} cleared {cleared[n]:.1f} s after the fault ended (bound {clear_within:.0f} s)")
    problems += [f"{n} fired ({t} s) but must stay quiet" for n, t in violations]
    row["ok"] = not problems
    record(work, row)
    if problems:
        die(f"{fault}: " + "; ".join(problems))
    info(f"ok   {fault}: fired {row['fired_s']} cleared {row['cleared_s']} also fired {row['also_fired']}")

def warn_before_critical(base, since, pairs):
    """For each (warning, critical): if the critical fired since `since` (unix seconds), the
    warning fired before it."""
    prom = Prom(base)
    for warn, crit in pairs:
        def first(name):
            r = prom.api("query_range", query=f'ALERTS{{alertname="{name}", alertstate="firing"}}',
                         start=since, end=time.time(), step="1s")
            if r.get("status") != "success" or not r["data"]["result"]:
                return None
            return min(float(v[0]) for s in r["data"]["result"] for v in s["values"])
        c, w = first(crit), first(warn)
        if c is None:
            info(f"ok   {crit} did not fire in this run (nothing to order)")
            continue
        if w is None or w > c:
            die(f"{crit} (critical) fired at {c} without {warn} (warning) firing before it ({w})")
        info(f"ok   {warn} fired {c - w:.1f} s before {crit}")

def wait_quiet(base, timeout):
    prom = Prom(base)
    deadline = time.time() + float(timeout)
    while time.time() < deadline:
        al = prom.alerts()
        if al is not None and not al:
            return
        time.sleep(0.5)
    die(f"alerts still pending or firing after {timeout} s: {prom.alerts()}")

def wait_value(base, expr, minimum, timeout):
    prom = Prom(base)
    deadline = time.time() + float(timeout)
    last = None
    while time.time() < deadline:
        r = prom.query(expr)
        if r:
            last = float(r[0]["value"][1])
            if last >= float(minimum):
                return
        time.sleep(0.5)
    die(f"{expr} did not reach {minimum} within {timeout} s (last {last})")

def junk(port, rate, seconds):
    """Sends random UDP datagrams (20-1200 B) to 127.0.0.1:port at `rate` per second."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rnd = random.Random(19)
    end = time.time() + float(seconds)
    sent, rate = 0, float(rate)
    start = time.time()
    while time.time() < end:
        due = int((time.time() - start) * rate)
        while sent < due:
            s.sendto(rnd.randbytes(rnd.randint(20, 1200)), ("127.0.0.1", int(port)))
            sent += 1
        time.sleep(0.005)
    info(f"junk: sent {sent} datagrams in {seconds} s")

def free_port(kind):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port

def wait_http(url, timeout):
    deadline = time.time() + float(timeout)
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.25)
    die(f"{url} did not answer within {timeout} s")

def felt(report, threshold_ms):
    r = json.load(open(report))
    lat = r.get("latency", {})
    move = lat.get("move") or r["action_latency"]
    p99 = move["p99_us"] / 1000
    info(f"clients felt move p99 {p99:.0f} ms ({move['count']} samples), action p99 "
         f"{r['action_latency']['p99_us'] / 1000:.0f} ms")
    if p99 <= float(threshold_ms):
        die(f"the overload was not felt: client p99 {p99:.0f} ms <= {threshold_ms} ms; raise DRILL_OVERLOAD_PLAYERS")
    return p99

def server_view(base, since, what):
    """Logs the server's own p99 snapshot round trip and input age since `since`."""
    prom = Prom(base)
    span = max(2, int(time.time() - float(since)))
    out = {}
    for name in ("zonehost_snapshot_round_trip_seconds", "zonehost_input_age_seconds"):
        r = prom.query(f'histogram_quantile(0.99, sum by (le) (increase({name}_bucket{{job="zonehost"}}[{span}s])))')
        out[name] = float(r[0]["value"][1]) * 1000 if r else float("nan")
    info(f"{what}: server p99 snapshot round trip {out['zonehost_snapshot_round_trip_seconds']:.0f} ms, "
         f"p99 input age {out['zonehost_input_age_seconds']:.1f} ms (last {span} s; 5000 ms is the top bucket)")

def table(work, out):
    rows = load_results(work)
    lines = ["| fault | expected alert | fired after | cleared after end | bound fire/clear | also fired | ok |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        exp = ", ".join(r["expect"]) or "(none)"
        f = ", ".join(f"{v:.0f} s" for v in r["fired_s"].values()) or "-"
        c = ", ".join(f"{v:.0f} s" for v in r["cleared_s"].values()) or "-"
        also = ", ".join(f"{k} ({v:.0f} s)" for k, v in r["also_fired"].items()) or "-"
        lines.append(f"| {r['fault']} | {exp} | {f} | {c} | {r['fire_within_s']:.0f}/{r['clear_within_s']:.0f} s | {also} | {'yes' if r['ok'] else 'NO'} |")
    text = "\n".join(lines)
    print(text)
    if out:
        open(out, "w").write(text + "\n")

if __name__ == "__main__":
    cmd, a = sys.argv[1], sys.argv[2:]
    if cmd == "scale":
        scale_rules(a[0], a[1], float(a[2]))
    elif cmd == "watch":
        quiet = a[4] if a[4] in ("all", "critical") else [x for x in a[4].split(",") if x]
        watch(a[0], a[1], a[2], float(a[3]), [x for x in a[5].split(",") if x], quiet,
              float(a[6]), float(a[7]), a[8], float(a[9]))
    elif cmd == "order":
        warn_before_critical(a[0], float(a[1]), [tuple(p.split(":")) for p in a[2:]])
    elif cmd == "wait-quiet":
        wait_quiet(a[0], a[1])
    elif cmd == "wait-value":
        wait_value(*a)
    elif cmd == "junk":
        junk(*a)
    elif cmd == "free-port":
        print(free_port(a[0]))
    elif cmd == "wait-http":
        wait_http(*a)
    elif cmd == "server-view":
        server_view(*a)
    elif cmd == "felt":
        felt(*a)
    elif cmd == "table":
        table(a[0], a[1] if len(a) > 1 else "")
    else:
        die(f"unknown command {cmd}")
PY
drill() { python3 "$WORK/drill.py" "$@"; }

# ------------------------------------------------------------------ build, rules, processes
log "building zonehost and loadgen (release)"
timeout "$BUILD_TIMEOUT" cargo build --release --locked -p zonehost -p zonehost-loadgen ||
  fail "cargo build --release -p zonehost -p zonehost-loadgen failed"
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
SERVER_BIN="$TARGET_DIR/release/zonehost"
LOADGEN_BIN="$TARGET_DIR/release/loadgen"

BOUND=$(python3 -c "print(round(120 / $SCALE + $SLACK))")
log "scale 1/$SCALE: every alert must fire within $BOUND s of its fault and clear within $BOUND s of its end"

QUIC_PORT="$(drill free-port udp)"
METRICS_PORT="$(drill free-port tcp)"
PROM_PORT="$(drill free-port tcp)"
while [ "$PROM_PORT" = "$METRICS_PORT" ]; do PROM_PORT="$(drill free-port tcp)"; done
DATA="$WORK/data"
mkdir -p "$DATA" "$WORK/prom-data" "$WORK/prom-config"
drill scale deploy/alerts.yml "$WORK/prom-config/alerts.yml" "$SCALE"
promtool check rules "$WORK/prom-config/alerts.yml" >"$WORK/promtool.log" 2>&1 ||
  { cat "$WORK/promtool.log" >&2; fail "the scaled rules do not load"; }

start_server() {
  # The drill's scrape interval is 1 s: a 3 s linger shows the drain to Prometheus.
  # Snapshots at 60 Hz (not the default 30): the overload fault below is sized for 60 Hz
  # both ways.
  RUST_LOG="${RUST_LOG:-info}" nice -n "$NICE" "$SERVER_BIN" serve --listen "127.0.0.1:$QUIC_PORT" --data-dir "$DATA" \
    --metrics-listen "127.0.0.1:$METRICS_PORT" --drain-linger-ms 3000 --log-format human \
    --snapshot-rate 60 \
    >>"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  drill wait-http "http://127.0.0.1:$METRICS_PORT/healthz" 30
}
start_server
for f in cert.der dev-signing.key; do
  for _ in $(seq 1 100); do [ -s "$DATA/$f" ] && break; sleep 0.1; done
  [ -s "$DATA/$f" ] || fail "the server did not create $DATA/$f"
done

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
log "starting Prometheus on 127.0.0.1:$PROM_PORT"
prometheus --config.file="$WORK/prom-config/prometheus.yml" --storage.tsdb.path="$WORK/prom-data" \
  --web.listen-address="127.0.0.1:$PROM_PORT" --storage.tsdb.retention.time=2h \
  --log.level=warn >"$WORK/prometheus.log" 2>&1 &
PROM_PID=$!
PROM="http://127.0.0.1:$PROM_PORT"
drill wait-http "$PROM/-/ready" 60
drill wait-value "$PROM" 'sum(up{job="zonehost"})' 1 30
# Windows fill before the first fault.
sleep "$(python3 -c "print(max(3, round(120 / $SCALE)))")"
drill wait-quiet "$PROM" "$BOUND"

loadgen() { # loadgen NAME ARGS...: a bounded loadgen run in the background
  local name="$1"
  shift
  "$LOADGEN_BIN" --server "127.0.0.1:$QUIC_PORT" --cert "$DATA/cert.der" --report "$WORK/$name.json" \
    "$@" >>"$WORK/loadgen.log" 2>&1 &
  LOADGEN_PID=$!
}
END="$WORK/fault.end"
begin() { rm -f "$END"; date +%s.%N; }
ended() { date +%s.%N >"$END"; }
MAX_TOTAL=$((BOUND * 4 + 120))
# Faults last long enough to be "sustained" at this scale (production: about 3 minutes).
fault_secs() { python3 -c "print(max($1, round(180 / $SCALE)))"; }
BURST_S=$(fault_secs 12)
JUNK_S=$(fault_secs 15)
OVERLOAD_S="${DRILL_OVERLOAD_SECONDS:-$(fault_secs 30)}"

# ------------------------------------------------------------------ 1. normal load
NORMAL_S=$(python3 -c "print(max(30, round(240 / $SCALE)))")
log "fault normal: 20 bots of every behaviour for ${NORMAL_S}s -> nothing fires"
T0=$(begin)
loadgen normal --scenario smoke --players 20 --duration "${NORMAL_S}s" --token-key "$DATA/dev-signing.key" --slo ""
drill watch "$PROM" "$WORK" normal "$T0" all "" "$BOUND" "$BOUND" "$END" "$MAX_TOTAL" &
WATCH=$!
wait "$LOADGEN_PID" || true
LOADGEN_PID=""
ended
wait "$WATCH" || FAILED="$FAILED normal load;"
WATCH=""
drill felt "$WORK/normal.json" 0
drill server-view "$PROM" "$T0" normal
drill order "$PROM" "$T0" ZonehostTicksLate:ZonehostTicksSkipped ZonehostDatagramDrops:ZonehostInboxFull ||
  FAILED="$FAILED normal (critical before its warning);"

# ------------------------------------------------------------------ 2. bad-token burst
log "fault bad_token: $((BURST_S * 12)) logins over ${BURST_S}s with tokens of an unknown key -> ZonehostAuthRejectSpike"
head -c 32 /dev/urandom >"$WORK/wrong.key"
T0=$(begin)
loadgen bad_token --players "$((BURST_S * 12))" --ramp-up "${BURST_S}s" --duration "$((BURST_S + 2))s" --token-key "$WORK/wrong.key" \
  --recover-deadline 0s --connect-timeout 5s --slo ""
drill watch "$PROM" "$WORK" bad_token "$T0" critical ZonehostAuthRejectSpike "$BOUND" "$BOUND" "$END" "$MAX_TOTAL" &
WATCH=$!
wait "$LOADGEN_PID" || true
LOADGEN_PID=""
ended
wait "$WATCH" || FAILED="$FAILED bad-token burst;"
WATCH=""

# ------------------------------------------------------------------ 3. junk UDP
log "fault junk_udp: 2000 random datagrams a second for ${JUNK_S}s -> ZonehostJunkDatagrams"
T0=$(begin)
drill junk "$QUIC_PORT" 2000 "$JUNK_S" &
JUNK_PID=$!
drill watch "$PROM" "$WORK" junk_udp "$T0" critical ZonehostJunkDatagrams "$BOUND" "$BOUND" "$END" "$MAX_TOTAL" &
WATCH=$!
wait "$JUNK_PID" || true
JUNK_PID=""
ended
wait "$WATCH" || FAILED="$FAILED junk UDP;"
WATCH=""

# ------------------------------------------------------------------ 4. overload
log "fault overload: $OVERLOAD_PLAYERS bots at 60 Hz for ${OVERLOAD_S}s -> ZonehostPlayerLatencyHigh"
T0=$(begin)
loadgen overload --players "$OVERLOAD_PLAYERS" --ramp-up 5s --duration "${OVERLOAD_S}s" --input-hz 60 \
  --token-key "$DATA/dev-signing.key" --recover-deadline 0s --slo ""
OVERLOAD_BOUND=$((BOUND + 5)) # + the 5 s ramp-up before every bot plays
drill watch "$PROM" "$WORK" overload "$T0" "" ZonehostPlayerLatencyHigh "$OVERLOAD_BOUND" "$BOUND" "$END" "$((MAX_TOTAL + OVERLOAD_S))" &
WATCH=$!
wait "$LOADGEN_PID" || true
LOADGEN_PID=""
ended
wait "$WATCH" || FAILED="$FAILED overload;"
WATCH=""
drill felt "$WORK/overload.json" 100 || FAILED="$FAILED overload (not felt);"
drill server-view "$PROM" "$T0" overload
drill order "$PROM" "$T0" ZonehostTicksLate:ZonehostTicksSkipped ZonehostDatagramDrops:ZonehostInboxFull ||
  FAILED="$FAILED overload (critical before its warning);"
drill wait-quiet "$PROM" "$BOUND" || log "alerts still up after the overload (see the table)"

# ------------------------------------------------------------------ 5. freeze
log "fault freeze: SIGSTOP until ZonehostDown fires, then SIGCONT -> ZonehostDown fires and clears"
T0=$(begin)
kill -STOP "$SERVER_PID"
drill watch "$PROM" "$WORK" freeze "$T0" critical ZonehostDown "$BOUND" "$BOUND" "$END" "$MAX_TOTAL" &
WATCH=$!
drill wait-value "$PROM" 'count(ALERTS{alertname="ZonehostDown", alertstate="firing"})' 1 "$BOUND" ||
  { kill -CONT "$SERVER_PID"; fail "ZonehostDown did not fire for a frozen server"; }
kill -CONT "$SERVER_PID"
ended
wait "$WATCH" || FAILED="$FAILED freeze;"
WATCH=""

# ------------------------------------------------------------------ 6. kill -9
log "fault kill: kill -9 until ZonehostDown fires, then restart -> ZonehostDown fires and clears"
T0=$(begin)
kill -KILL "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true
SERVER_PID=""
drill watch "$PROM" "$WORK" kill "$T0" critical ZonehostDown "$BOUND" "$BOUND" "$END" "$MAX_TOTAL" &
WATCH=$!
drill wait-value "$PROM" 'count(ALERTS{alertname="ZonehostDown", alertstate="firing"})' 1 "$BOUND" ||
  fail "ZonehostDown did not fire for a killed server"
start_server
ended
wait "$WATCH" || FAILED="$FAILED kill -9;"
WATCH=""

# ------------------------------------------------------------------ 7. SIGTERM drain
DRAIN_QUIET=$(python3 -c "print(round(2 * 120 / $SCALE + 10))")
log "fault drain: SIGTERM under load -> nothing critical within ${DRAIN_QUIET}s (ZonehostDown quiet)"
drill wait-value "$PROM" 'sum(up{job="zonehost"})' 1 30
loadgen drain --scenario smoke --players 20 --duration 60s --token-key "$DATA/dev-signing.key" --recover-deadline 0s --slo ""
drill wait-value "$PROM" 'sum(zonehost_sessions_active{job="zonehost"})' 10 30
T0=$(begin)
kill -TERM "$SERVER_PID"
for _ in $(seq 1 300); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$SERVER_PID" 2>/dev/null && fail "zonehost still running 30 s after SIGTERM"
SERVER_RC=0
wait "$SERVER_PID" || SERVER_RC=$?
SERVER_PID=""
[ "$SERVER_RC" -eq 0 ] || fail "zonehost exited with $SERVER_RC after SIGTERM"
ended
stop_pid "$LOADGEN_PID" loadgen
LOADGEN_PID=""
# Prometheus saw the drain (the linger kept /metrics up with zonehost_draining 1).
drill wait-value "$PROM" 'max(last_over_time(zonehost_draining{job="zonehost"}[5m]))' 1 10
drill watch "$PROM" "$WORK" drain "$T0" critical "" "$BOUND" "$DRAIN_QUIET" "$END" "$((DRAIN_QUIET + 30))" ||
  FAILED="$FAILED drain;"

log "results (scale 1/$SCALE, bound $BOUND s; times in drill seconds):"
drill table "$WORK" "${DRILL_RESULTS:-}"
[ -z "$FAILED" ] || fail "faults whose assertions failed:$FAILED"
