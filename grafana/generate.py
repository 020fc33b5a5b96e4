#!/usr/bin/env python3
"""Generates grafana/dashboards/*.json from the metric catalog in src/telemetry.rs.

    python3 grafana/generate.py            # rewrite the dashboards
    python3 grafana/generate.py --check    # exit 1 if a dashboard is stale

Each panel names the catalog metrics it queries; a panel whose metrics are not all in
`METRICS` is left out, so a dashboard never references a metric the server does not declare
(panels for metrics that are being added appear once they land in the catalog). Catalog
metrics that no hand-written panel covers get a generic panel at the end of the Overview
dashboard, so nothing the server exports is invisible.

Only the standard library is used.
"""

import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TELEMETRY = os.path.join(ROOT, "src", "telemetry.rs")
OUT = os.path.join(ROOT, "grafana", "dashboards")

DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'job="zonehost", instance=~"$instance"'
RI = "$__rate_interval"
TICK_BUDGET = 1.0 / 60.0  # seconds, at the default tick_rate_hz = 60


def load_catalog(path=TELEMETRY):
    """{name: (kind, [labels])} parsed from `pub const METRICS`."""
    text = open(path, encoding="utf-8").read()
    start = text.index("pub const METRICS")
    body = text[start : text.index("];", start)]
    entry = re.compile(
        r'm\(\s*"(?P<name>[a-z0-9_]+)"\s*,\s*(?P<kind>Counter|Gauge|Histogram)\s*,'
        r'\s*&\[(?P<labels>[^\]]*)\]\s*,',
        re.S,
    )
    catalog = {}
    for m in entry.finditer(body):
        labels = re.findall(r'"([a-z0-9_]+)"', m.group("labels"))
        catalog[m.group("name")] = (m.group("kind").lower(), labels)
    if not catalog:
        sys.exit(f"no metrics parsed from {path}")
    return catalog


# ---------------------------------------------------------------------------- PromQL helpers

def rate(metric, by=None, extra=""):
    sel = SEL + (", " + extra if extra else "")
    inner = f"rate({metric}{{{sel}}}[{RI}])"
    return f"sum by ({', '.join(by)}) ({inner})" if by else f"sum({inner})"


def gauge(metric, by=None, agg="sum", extra=""):
    sel = SEL + (", " + extra if extra else "")
    return f"{agg} by ({', '.join(by)}) ({metric}{{{sel}}})" if by else f"{agg}({metric}{{{sel}}})"


def quantile(q, hist, by=None, extra=""):
    groups = ", ".join(["le"] + (by or []))
    sel = SEL + (", " + extra if extra else "")
    return f"histogram_quantile({q}, sum by ({groups}) (rate({hist}_bucket{{{sel}}}[{RI}])))"


def hist_mean(hist, by=None):
    return f"{rate(hist + '_sum', by)} / {rate(hist + '_count', by)}"


# ---------------------------------------------------------------------------- panel model

class Panel:
    """A panel template; `needs` are catalog metric names (without _bucket/_sum/_count)."""

    def __init__(self, kind, title, targets, needs, unit="short", desc="", w=None, h=None,
                 min0=True, budget=None, mappings=None, thresholds=None, stack=False,
                 decimals=None, content=None):
        self.kind, self.title, self.targets, self.needs = kind, title, targets, needs
        self.unit, self.desc, self.min0, self.budget = unit, desc, min0, budget
        self.mappings, self.thresholds, self.stack = mappings, thresholds, stack
        self.decimals, self.content = decimals, content
        self.w = w or {"stat": 4, "timeseries": 12, "text": 24}[kind]
        self.h = h or {"stat": 4, "timeseries": 8, "text": 4}[kind]


def ts(title, targets, needs, **kw):
    return Panel("timeseries", title, targets, needs, **kw)


def stat(title, expr, needs, **kw):
    return Panel("stat", title, [(expr, "")], needs, **kw)


def text(title, content, **kw):
    return Panel("text", title, [], [], content=content, **kw)


def steps(*pairs):
    out = [{"color": "green", "value": None}]
    for color, value in pairs:
        out.append({"color": color, "value": value})
    return {"mode": "absolute", "steps": out}


def render_panel(p, pid, x, y):
    out = {
        "id": pid,
        "type": p.kind,
        "title": p.title,
        "description": p.desc,
        "gridPos": {"h": p.h, "w": p.w, "x": x, "y": y},
    }
    if p.kind == "text":
        out["options"] = {"mode": "markdown", "content": p.content}
        return out
    out["datasource"] = DS
    defaults = {"unit": p.unit, "thresholds": p.thresholds or steps(), "mappings": p.mappings or []}
    if p.min0:
        defaults["min"] = 0
    if p.decimals is not None:
        defaults["decimals"] = p.decimals
    if p.kind == "timeseries":
        defaults["color"] = {"mode": "palette-classic"}
        custom = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 15 if p.stack else 8,
            "showPoints": "never",
            "spanNulls": False,
            "axisSoftMin": 0 if p.min0 else None,
            "stacking": {"mode": "normal" if p.stack else "none", "group": "A"},
            "thresholdsStyle": {"mode": "off"},
        }
        custom = {k: v for k, v in custom.items() if v is not None}
        if p.budget is not None:
            defaults["thresholds"] = steps(("red", p.budget))
            custom["thresholdsStyle"] = {"mode": "dashed"}
        defaults["custom"] = custom
        out["options"] = {
            "legend": {"showLegend": True, "displayMode": "table", "placement": "bottom",
                       "calcs": ["mean", "max", "lastNotNull"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    else:
        defaults["color"] = {"mode": "thresholds"}
        out["options"] = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "auto",
        }
    out["fieldConfig"] = {"defaults": defaults, "overrides": []}
    out["targets"] = [
        {
            "refId": chr(ord("A") + i),
            "datasource": DS,
            "editorMode": "code",
            "expr": expr,
            "legendFormat": legend or "__auto",
            "range": True,
        }
        for i, (expr, legend) in enumerate(p.targets)
    ]
    return out


def layout(panels, catalog):
    """Places panels left to right, wrapping at 24 columns."""
    out, x, y, row_h, pid = [], 0, 0, 0, 1
    for p in panels:
        if any(n not in catalog for n in p.needs):
            continue
        if x + p.w > 24:
            x, y, row_h = 0, y + row_h, 0
        out.append(render_panel(p, pid, x, y))
        pid += 1
        x += p.w
        row_h = max(row_h, p.h)
    return out


def dashboard(uid, title, description, panels, catalog):
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["zonehost"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "liveNow": False,
        "refresh": "10s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "weekStart": "",
        "annotations": {"list": [{
            "builtIn": 1,
            "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True,
            "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts",
            "type": "dashboard",
        }]},
        "links": [{
            "title": "zonehost dashboards",
            "type": "dashboards",
            "tags": ["zonehost"],
            "asDropdown": True,
            "includeVars": True,
            "keepTime": True,
        }],
        "templating": {"list": [
            {
                "name": "datasource",
                "label": "Data source",
                "type": "datasource",
                "query": "prometheus",
                "current": {},
                "hide": 0,
                "includeAll": False,
                "multi": False,
                "options": [],
                "refresh": 1,
                "regex": "",
                "skipUrlSync": False,
            },
            {
                "name": "instance",
                "label": "Instance",
                "type": "query",
                "datasource": DS,
                "definition": 'label_values(zonehost_ticks_total{job="zonehost"}, instance)',
                "query": {
                    "query": 'label_values(zonehost_ticks_total{job="zonehost"}, instance)',
                    "refId": "PrometheusVariableQueryEditor-VariableQuery",
                },
                "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                "hide": 0,
                "includeAll": True,
                "allValue": ".*",
                "multi": True,
                "options": [],
                "refresh": 2,
                "regex": "",
                "skipUrlSync": False,
                "sort": 1,
            },
        ]},
        "panels": layout(panels, catalog),
    }


# ---------------------------------------------------------------------------- dashboards

DRAIN_MAP = [{"type": "value", "options": {
    "0": {"text": "Ready", "color": "green", "index": 0},
    "1": {"text": "Draining", "color": "orange", "index": 1},
}}]


def overview():
    panels = _overview()
    for p in panels:
        if p.kind == "stat":
            p.w = 3  # eight headline numbers in one row
    return panels


def _overview():
    return [
        stat("Players online", gauge("zonehost_sessions_active"), ["zonehost_sessions_active"],
             desc="Welcomed sessions, all selected instances."),
        stat("Open connections", gauge("zonehost_connections_open"), ["zonehost_connections_open"],
             desc="QUIC connections, handshaking or playing."),
        stat("Zone instances", gauge("zonehost_instances_live"), ["zonehost_instances_live"]),
        stat("Servers up", f'sum(up{{{SEL}}})', [], desc="Targets Prometheus scrapes successfully.",
             thresholds={"mode": "absolute", "steps": [{"color": "red", "value": None},
                                                       {"color": "green", "value": 1}]}),
        stat("Draining", gauge("zonehost_draining", agg="max"), ["zonehost_draining"],
             mappings=DRAIN_MAP, desc="/readyz answers 503 while any selected instance drains.",
             thresholds=steps(("orange", 1))),
        stat("p99 tick duration", quantile(0.99, "zonehost_tick_duration_seconds"),
             ["zonehost_tick_duration_seconds"], unit="s",
             desc="Budget 16.7 ms at 60 Hz.", thresholds=steps(("yellow", 0.010), ("red", TICK_BUDGET))),
        stat("p99 action latency", quantile(0.99, "zonehost_input_to_snapshot_seconds"),
             ["zonehost_input_to_snapshot_seconds"], unit="s",
             desc="Input received to the snapshot acknowledging it handed to QUIC; alert at 100 ms.",
             thresholds=steps(("yellow", 0.05), ("red", 0.1))),
        stat("Inbound drop ratio",
             f'{rate("zonehost_datagrams_dropped_total")} / {rate("zonehost_datagrams_received_total")}',
             ["zonehost_datagrams_dropped_total", "zonehost_datagrams_received_total"],
             unit="percentunit", thresholds=steps(("yellow", 0.001), ("red", 0.01))),
        stat("p99 player round trip", quantile(0.99, "zonehost_snapshot_round_trip_seconds"),
             ["zonehost_snapshot_round_trip_seconds"], unit="s",
             desc="Snapshot sent to the input reporting it consumed by the tick: what players feel; alert at 150 ms.",
             thresholds=steps(("yellow", 0.1), ("red", 0.15))),

        ts("Player round trip (what players feel)", [
            (quantile(0.5, "zonehost_snapshot_round_trip_seconds"), "p50 snapshot round trip"),
            (quantile(0.99, "zonehost_snapshot_round_trip_seconds"), "p99 snapshot round trip"),
            (quantile(0.99, "zonehost_input_age_seconds"), "p99 input age at the tick"),
            (quantile(0.5, "zonehost_quic_rtt_seconds"), "p50 QUIC RTT"),
        ], ["zonehost_snapshot_round_trip_seconds", "zonehost_input_age_seconds",
            "zonehost_quic_rtt_seconds"], unit="s", budget=0.15,
            desc="Snapshot handed to QUIC -> the tick consuming the first input whose ack_tick reports it, "
                 "measured on the server (no client clock). Includes both directions' socket buffers and the "
                 "network; QUIC RTT shows the network's share, input age the network thread and inbox wait. "
                 "Alert ZonehostPlayerLatencyHigh at 150 ms p99."),
        ts("Players and connections", [
            (gauge("zonehost_sessions_active", ["instance"]), "players {{instance}}"),
            (gauge("zonehost_connections_open", ["instance"]), "connections {{instance}}"),
        ], ["zonehost_sessions_active", "zonehost_connections_open"]),
        ts("Tick duration (budget 16.7 ms)", [
            (quantile(0.5, "zonehost_tick_duration_seconds"), "p50"),
            (quantile(0.99, "zonehost_tick_duration_seconds"), "p99"),
            (hist_mean("zonehost_tick_duration_seconds"), "mean"),
        ], ["zonehost_tick_duration_seconds"], unit="s", budget=TICK_BUDGET),
        ts("Ticks per second", [
            (rate("zonehost_ticks_total"), "ticks/s"),
            (rate("zonehost_ticks_late_total"), "late/s"),
            (rate("zonehost_ticks_skipped_total"), "skipped/s"),
        ], ["zonehost_ticks_total", "zonehost_ticks_late_total", "zonehost_ticks_skipped_total"],
            unit="ops", desc="60/s per sim worker when healthy; late and skipped should be 0."),
        ts("Action latency p99 (input to snapshot)", [
            (quantile(0.99, "zonehost_input_to_snapshot_seconds"), "p99 input to snapshot"),
            (quantile(0.99, "zonehost_input_apply_seconds"), "p99 input applied"),
        ], ["zonehost_input_to_snapshot_seconds", "zonehost_input_apply_seconds"], unit="s", budget=0.1),
        ts("Request latency p99 by kind", [
            (quantile(0.99, "zonehost_request_duration_seconds", ["kind"]), "p99 {{kind}}"),
        ], ["zonehost_request_duration_seconds"], unit="s", budget=0.1,
            desc="Request received to reply queued; alert at 100 ms."),
        ts("Datagrams per second", [
            (rate("zonehost_datagrams_received_total"), "received"),
            (rate("zonehost_datagrams_sent_total"), "sent (snapshots)"),
        ], ["zonehost_datagrams_received_total", "zonehost_datagrams_sent_total"], unit="pps"),
        ts("Session rejects by code", [
            (rate("zonehost_session_rejects_total", ["code"]) + " > 0", "{{code}}"),
        ], ["zonehost_session_rejects_total"], unit="ops", stack=True),
        ts("Disconnects by cause", [
            (rate("zonehost_disconnects_total", ["cause"]) + " > 0", "{{cause}}"),
        ], ["zonehost_disconnects_total"], unit="ops", stack=True),
        ts("Datagrams dropped by cause", [
            (rate("zonehost_datagrams_dropped_total", ["cause"]) + " > 0", "{{cause}}"),
        ], ["zonehost_datagrams_dropped_total"], unit="pps", stack=True),
        ts("Simulation busy cores", [
            (rate("zonehost_tick_busy_microseconds_total") + " / 1e6", "busy cores"),
        ], ["zonehost_tick_busy_microseconds_total"], unit="none", decimals=2,
            desc="Seconds of tick work per second across all sim workers."),
        ts("Server process CPU (cores)", [
            (rate("zonehost_process_cpu_seconds"), "cores"),
        ], ["zonehost_process_cpu_seconds"], unit="none", decimals=2,
            desc="User and system CPU of the whole server process, in cores (procfs)."),
        ts("Resident memory per player", [
            ('sum(zonehost_process_resident_memory_bytes{job="zonehost", instance=~"$instance"})'
             ' / clamp_min(sum(zonehost_sessions_active{job="zonehost", instance=~"$instance"}), 1)',
             "bytes per player"),
        ], ["zonehost_process_resident_memory_bytes", "zonehost_sessions_active"], unit="bytes",
            desc="Resident memory of the server processes divided by the players online."),
    ]


def network():
    return [
        stat("Open connections", gauge("zonehost_connections_open"), ["zonehost_connections_open"]),
        stat("Accepted / s", rate("zonehost_connections_accepted_total"),
             ["zonehost_connections_accepted_total"], unit="ops"),
        stat("Rejects / s", rate("zonehost_session_rejects_total"), ["zonehost_session_rejects_total"],
             unit="ops", thresholds=steps(("yellow", 0.5), ("red", 5))),
        stat("Inbound drop ratio",
             f'{rate("zonehost_datagrams_dropped_total")} / {rate("zonehost_datagrams_received_total")}',
             ["zonehost_datagrams_dropped_total", "zonehost_datagrams_received_total"],
             unit="percentunit", thresholds=steps(("yellow", 0.001), ("red", 0.01))),
        stat("Inbound", rate("zonehost_datagram_received_bytes_total"),
             ["zonehost_datagram_received_bytes_total"], unit="Bps"),
        stat("Outbound", rate("zonehost_datagram_sent_bytes_total"),
             ["zonehost_datagram_sent_bytes_total"], unit="Bps"),

        ts("Connections: accepted, refused, retries", [
            (rate("zonehost_connections_accepted_total"), "accepted"),
            (rate("zonehost_connections_refused_total", ["reason"]), "refused {{reason}}"),
            (rate("zonehost_handshake_retries_total"), "stateless retries"),
        ], ["zonehost_connections_accepted_total", "zonehost_connections_refused_total",
            "zonehost_handshake_retries_total"], unit="ops"),
        ts("Handshakes and junk UDP", [
            (rate("zonehost_handshakes_failed_total", ["reason"]), "handshakes failed {{reason}}"),
            (rate("zonehost_udp_junk_datagrams_total", ["reason"]), "junk datagrams {{reason}}"),
            (rate("zonehost_udp_datagrams_received_total"), "all UDP datagrams"),
        ], ["zonehost_handshakes_failed_total", "zonehost_udp_junk_datagrams_total",
            "zonehost_udp_datagrams_received_total"], unit="ops",
            desc="Handshakes accepted that never completed; UDP datagrams that were not QUIC for this "
                 "server (alerts ZonehostHandshakeFlood, ZonehostJunkDatagrams)."),
        ts("Open connections and sessions", [
            (gauge("zonehost_connections_open", ["instance"]), "connections {{instance}}"),
            (gauge("zonehost_sessions_active", ["instance"]), "sessions {{instance}}"),
        ], ["zonehost_connections_open", "zonehost_sessions_active"]),
        ts("Sessions by state", [
            (gauge("zonehost_sessions_by_state", ["state"]), "{{state}}"),
        ], ["zonehost_sessions_by_state"], stack=True),
        ts("Datagrams per second", [
            (rate("zonehost_datagrams_received_total", ["instance"]), "received {{instance}}"),
            (rate("zonehost_datagrams_sent_total", ["instance"]), "sent {{instance}}"),
        ], ["zonehost_datagrams_received_total", "zonehost_datagrams_sent_total"], unit="pps"),
        ts("Throughput", [
            (rate("zonehost_datagram_received_bytes_total"), "in"),
            (rate("zonehost_datagram_sent_bytes_total"), "out"),
        ], ["zonehost_datagram_received_bytes_total", "zonehost_datagram_sent_bytes_total"], unit="Bps",
            desc="Datagram payload bytes (QUIC and UDP overhead not included)."),
        ts("Average datagram size", [
            (f'{rate("zonehost_datagram_received_bytes_total")} / {rate("zonehost_datagrams_received_total")}', "in"),
            (f'{rate("zonehost_datagram_sent_bytes_total")} / {rate("zonehost_datagrams_sent_total")}', "out"),
        ], ["zonehost_datagram_received_bytes_total", "zonehost_datagrams_received_total",
            "zonehost_datagram_sent_bytes_total", "zonehost_datagrams_sent_total"], unit="bytes", budget=1100,
            desc="Protocol datagrams must stay at or below ~1100 B (see protocol/SPEC.md)."),
        ts("Snapshot size", [
            (quantile(0.5, "zonehost_snapshot_bytes"), "p50"),
            (quantile(0.99, "zonehost_snapshot_bytes"), "p99"),
            (hist_mean("zonehost_snapshot_bytes"), "mean"),
        ], ["zonehost_snapshot_bytes"], unit="bytes", budget=1100),
        ts("Datagrams per player per second", [
            (f'{rate("zonehost_datagrams_received_total")} / {gauge("zonehost_sessions_active")}', "in"),
            (f'{rate("zonehost_datagrams_sent_total")} / {gauge("zonehost_sessions_active")}', "out"),
        ], ["zonehost_datagrams_received_total", "zonehost_datagrams_sent_total",
            "zonehost_sessions_active"], unit="pps",
            desc="Out should equal snapshot_rate_hz; in is the client's input rate."),
        ts("UDP packets per player per second", [
            (f'{rate("zonehost_quic_packets_total", ["direction"])} / ignoring (direction) group_left '
             f'{gauge("zonehost_sessions_active")}', "{{direction}}"),
            (f'{rate("zonehost_quic_datagram_frames_total", ["direction"])} / ignoring (direction) group_left '
             f'{gauge("zonehost_sessions_active")}', "datagrams {{direction}}"),
            (f'{rate("zonehost_quic_ack_frames_total", ["direction"])} / ignoring (direction) group_left '
             f'{gauge("zonehost_sessions_active")}', "ACK frames {{direction}}"),
        ], ["zonehost_quic_packets_total", "zonehost_quic_datagram_frames_total",
            "zonehost_quic_ack_frames_total", "zonehost_sessions_active"], unit="pps",
            desc="Every UDP packet of player connections next to the DATAGRAM frames they carry "
                 "and the ACK frames (alone or riding): the packet/datagram difference is ACK-only "
                 "packets, keep-alives and reliable messages. Packets, not bytes, cost CPU on both ends."),
        ts("ACK-only packet share", [
            (f'{rate("zonehost_quic_ack_only_packets_total", ["direction"])} / '
             f'{rate("zonehost_quic_packets_total", ["direction"])}', "{{direction}}"),
            (f'sum({rate("zonehost_quic_ack_only_packets_total")}) / '
             f'sum({rate("zonehost_quic_packets_total")})', "both"),
        ], ["zonehost_quic_ack_only_packets_total", "zonehost_quic_packets_total"],
            unit="percentunit", budget=0.10,
            desc="Packets that carried nothing but ACK frames (estimated from quinn's counters, a "
                 "lower bound). Target <= 10 % at 20-30 Hz each way; see docs/operations.md, ACK "
                 "frequency (`[ack]`)."),
        ts("QUIC round-trip time", [
            (quantile(0.5, "zonehost_quic_rtt_seconds"), "p50"),
            (quantile(0.99, "zonehost_quic_rtt_seconds"), "p99"),
        ], ["zonehost_quic_rtt_seconds"], unit="s"),
        ts("QUIC loss and congestion", [
            (rate("zonehost_quic_lost_packets_total"), "lost packets/s"),
            (rate("zonehost_quic_congestion_events_total"), "congestion events/s"),
        ], ["zonehost_quic_lost_packets_total", "zonehost_quic_congestion_events_total"], unit="ops"),
        ts("Datagrams dropped by cause", [
            (rate("zonehost_datagrams_dropped_total", ["cause"]) + " > 0", "{{cause}}"),
        ], ["zonehost_datagrams_dropped_total"], unit="pps", stack=True),
        ts("Drop ratio by cause", [
            (f'{rate("zonehost_datagrams_dropped_total", ["cause"])} / ignoring (cause) group_left '
             f'{rate("zonehost_datagrams_received_total")}', "{{cause}}"),
        ], ["zonehost_datagrams_dropped_total", "zonehost_datagrams_received_total"],
            unit="percentunit", budget=0.01, desc="Alert ZonehostDatagramDrops fires above 1%."),
        ts("Snapshot send errors", [
            (rate("zonehost_datagram_send_errors_total"), "errors/s"),
            (f'{rate("zonehost_datagram_send_errors_total")} / {rate("zonehost_datagrams_sent_total")}', "ratio"),
        ], ["zonehost_datagram_send_errors_total", "zonehost_datagrams_sent_total"], unit="short",
            desc="Snapshots QUIC refused (connection lost, too large, datagrams unsupported)."),
        ts("Snapshots displaced unsent", [
            (rate("zonehost_datagrams_displaced_total"), "displaced/s"),
            (f'{rate("zonehost_datagrams_displaced_total")} / {rate("zonehost_datagrams_sent_total")}', "ratio"),
        ], ["zonehost_datagrams_displaced_total", "zonehost_datagrams_sent_total"], unit="short",
            desc="Older snapshots QUIC discarded before sending because a newer one did not fit its "
                 "send buffer: clients on slow or congested paths."),
        ts("Session rejects by code", [
            (rate("zonehost_session_rejects_total", ["code"]) + " > 0", "{{code}}"),
        ], ["zonehost_session_rejects_total"], unit="ops", stack=True),
        ts("Disconnects by cause", [
            (rate("zonehost_disconnects_total", ["cause"]) + " > 0", "{{cause}}"),
        ], ["zonehost_disconnects_total"], unit="ops", stack=True),
        ts("Inputs and requests", [
            (rate("zonehost_inputs_queued_total"), "inputs queued"),
            (rate("zonehost_requests_total"), "requests"),
            (rate("zonehost_requests_rate_limited_total"), "requests rate-limited"),
        ], ["zonehost_inputs_queued_total", "zonehost_requests_total",
            "zonehost_requests_rate_limited_total"], unit="ops"),
    ]


def simulation():
    return [
        stat("Ticks / s", rate("zonehost_ticks_total"), ["zonehost_ticks_total"], unit="ops",
             desc="60 per sim worker at the default tick rate."),
        stat("p99 tick duration", quantile(0.99, "zonehost_tick_duration_seconds"),
             ["zonehost_tick_duration_seconds"], unit="s",
             thresholds=steps(("yellow", 0.010), ("red", TICK_BUDGET))),
        stat("Late ticks", f'{rate("zonehost_ticks_late_total")} / {rate("zonehost_ticks_total")}',
             ["zonehost_ticks_late_total", "zonehost_ticks_total"], unit="percentunit",
             thresholds=steps(("yellow", 0.001), ("red", 0.01))),
        stat("Skipped ticks / s", rate("zonehost_ticks_skipped_total"), ["zonehost_ticks_skipped_total"],
             unit="ops", thresholds=steps(("red", 0.0001))),
        stat("Busy cores", rate("zonehost_tick_busy_microseconds_total") + " / 1e6",
             ["zonehost_tick_busy_microseconds_total"], unit="none", decimals=2),
        stat("Zone instances", gauge("zonehost_instances_live"), ["zonehost_instances_live"]),

        ts("Tick duration (budget 16.7 ms)", [
            (quantile(0.5, "zonehost_tick_duration_seconds"), "p50"),
            (quantile(0.9, "zonehost_tick_duration_seconds"), "p90"),
            (quantile(0.99, "zonehost_tick_duration_seconds"), "p99"),
            (hist_mean("zonehost_tick_duration_seconds"), "mean"),
        ], ["zonehost_tick_duration_seconds"], unit="s", budget=TICK_BUDGET),
        ts("Tick duration p99 by instance", [
            (quantile(0.99, "zonehost_tick_duration_seconds", ["instance"]), "{{instance}}"),
        ], ["zonehost_tick_duration_seconds"], unit="s", budget=TICK_BUDGET),
        ts("Tick start lateness", [
            (quantile(0.5, "zonehost_tick_lateness_seconds"), "p50"),
            (quantile(0.99, "zonehost_tick_lateness_seconds"), "p99"),
        ], ["zonehost_tick_lateness_seconds"], unit="s", budget=TICK_BUDGET,
            desc="How late ticks start against the fixed schedule; over one period counts as late."),
        ts("Ticks: run, late, skipped", [
            (rate("zonehost_ticks_total", ["instance"]), "run {{instance}}"),
            (rate("zonehost_ticks_late_total", ["instance"]), "late {{instance}}"),
            (rate("zonehost_ticks_skipped_total", ["instance"]), "skipped {{instance}}"),
        ], ["zonehost_ticks_total", "zonehost_ticks_late_total", "zonehost_ticks_skipped_total"], unit="ops"),
        ts("Busy cores (tick work per second)", [
            (rate("zonehost_tick_busy_microseconds_total", ["instance"]) + " / 1e6", "{{instance}}"),
        ], ["zonehost_tick_busy_microseconds_total"], unit="none", decimals=2,
            desc="Approaching sim_workers means the workers are saturated."),
        ts("Mean tick work", [
            (f'{rate("zonehost_tick_busy_microseconds_total", ["instance"])} / 1e6 / '
             f'{rate("zonehost_ticks_total", ["instance"])}', "{{instance}}"),
        ], ["zonehost_tick_busy_microseconds_total", "zonehost_ticks_total"], unit="s", budget=TICK_BUDGET),
        ts("Worker load: busy cores per worker", [
            (rate("zonehost_sim_worker_busy_microseconds_total", ["instance", "worker"]) + " / 1e6",
             "{{instance}} worker {{worker}}"),
        ], ["zonehost_sim_worker_busy_microseconds_total"], unit="none", decimals=2),
        ts("Worker load: players per worker", [
            (gauge("zonehost_sim_worker_players", ["instance", "worker"]), "{{instance}} worker {{worker}}"),
        ], ["zonehost_sim_worker_players"]),
        ts("Players handed between sim workers", [
            (rate("zonehost_sim_migrations_total", ["instance"]), "migrations {{instance}}"),
            (rate("zonehost_sim_forwarded_total", ["instance"]), "forwarded messages {{instance}}"),
        ], ["zonehost_sim_migrations_total", "zonehost_sim_forwarded_total"], unit="ops",
            desc="A party member moving to its leader's worker; messages its old worker forwarded meanwhile."),
        ts("Instances and players", [
            (gauge("zonehost_instances_live", ["instance"]), "instances {{instance}}"),
            (gauge("zonehost_sessions_active", ["instance"]), "players {{instance}}"),
        ], ["zonehost_instances_live", "zonehost_sessions_active"]),
        ts("Inputs queued per second", [
            (rate("zonehost_inputs_queued_total", ["instance"]), "{{instance}}"),
            (rate("zonehost_datagrams_dropped_total", ["instance"], 'cause="inbox_full"'), "inbox full drops {{instance}}"),
        ], ["zonehost_inputs_queued_total", "zonehost_datagrams_dropped_total"], unit="ops"),
        ts("Input stage latency", [
            (quantile(0.5, "zonehost_input_apply_seconds"), "p50 applied"),
            (quantile(0.99, "zonehost_input_apply_seconds"), "p99 applied"),
            (quantile(0.5, "zonehost_input_to_snapshot_seconds"), "p50 to snapshot"),
            (quantile(0.99, "zonehost_input_to_snapshot_seconds"), "p99 to snapshot"),
        ], ["zonehost_input_apply_seconds", "zonehost_input_to_snapshot_seconds"], unit="s", budget=0.1),
        ts("Request latency by kind", [
            (quantile(0.5, "zonehost_request_duration_seconds", ["kind"]), "p50 {{kind}}"),
            (quantile(0.99, "zonehost_request_duration_seconds", ["kind"]), "p99 {{kind}}"),
        ], ["zonehost_request_duration_seconds"], unit="s", budget=0.1),
        ts("Requests per second by kind", [
            (rate("zonehost_request_duration_seconds_count", ["kind"]), "{{kind}}"),
        ], ["zonehost_request_duration_seconds"], unit="reqps"),
    ]


def persistence(catalog):
    store = sorted(n for n in catalog if n.startswith("zonehost_store_"))
    note = (
        "### Store metrics\n"
        "The store metrics (load/save latency, write-behind queue depth, cache hit ratio, "
        "ScyllaDB errors) arrive with the persistence work; they are added here once they "
        "are declared in `METRICS` (src/telemetry.rs). Until then this dashboard shows what "
        "the server exports that bears on durability: drain state (a player's record is "
        "saved on drain and disconnect), logins refused with `internal`, and disconnects."
    )
    panels = []
    if not store:
        panels.append(text("Persistence", note, h=5))
    panels += [
        stat("Draining", gauge("zonehost_draining", agg="max"), ["zonehost_draining"],
             mappings=DRAIN_MAP, thresholds=steps(("orange", 1)), w=6),
        stat("Players online", gauge("zonehost_sessions_active"), ["zonehost_sessions_active"], w=6),
        stat("Internal rejects (1h)",
             f'sum(increase(zonehost_session_rejects_total{{{SEL}, code="internal"}}[1h]))',
             ["zonehost_session_rejects_total"], thresholds=steps(("red", 1)), w=6,
             desc="Logins refused by a server-side failure (e.g. loading the player)."),
        stat("Shutdown disconnects (1h)",
             f'sum(increase(zonehost_disconnects_total{{{SEL}, cause="shutdown"}}[1h]))',
             ["zonehost_disconnects_total"], w=6, desc="Sessions ended by a drain."),
        ts("Drain state by instance", [
            (gauge("zonehost_draining", ["instance"], agg="max"), "{{instance}}"),
        ], ["zonehost_draining"], mappings=DRAIN_MAP),
        ts("Session ends that trigger a save", [
            (rate("zonehost_disconnects_total", ["cause"]) + " > 0", "{{cause}}"),
        ], ["zonehost_disconnects_total"], unit="ops", stack=True,
            desc="Every ended session saves the player's record."),
        ts("Logins refused: internal and draining", [
            (rate("zonehost_session_rejects_total", ["code"], 'code=~"internal|draining"'), "{{code}}"),
        ], ["zonehost_session_rejects_total"], unit="ops"),
        ts("Request latency p99 by kind", [
            (quantile(0.99, "zonehost_request_duration_seconds", ["kind"]), "p99 {{kind}}"),
        ], ["zonehost_request_duration_seconds"], unit="s", budget=0.1,
            desc="Item requests reply after the store commit, so store latency shows here."),
    ]
    # Store panels: each appears once its metrics are declared in METRICS.
    panels += [
        stat("Store queue depth", gauge("zonehost_store_queue_depth"), ["zonehost_store_queue_depth"],
             w=6, desc="Commands waiting for the store worker (write-behind)."),
        stat("Store errors / s", rate("zonehost_store_errors_total"), ["zonehost_store_errors_total"],
             unit="ops", w=6, thresholds=steps(("red", 0.001))),
        stat("Cache hit ratio",
             f'{rate("zonehost_store_cache_hits_total")} / ({rate("zonehost_store_cache_hits_total")}'
             f' + {rate("zonehost_store_cache_misses_total")})',
             ["zonehost_store_cache_hits_total", "zonehost_store_cache_misses_total"],
             unit="percentunit", w=6, min0=True),
        stat("p99 store op", quantile(0.99, "zonehost_store_op_seconds"), ["zonehost_store_op_seconds"],
             unit="s", w=6, thresholds=steps(("yellow", 0.05), ("red", 0.25))),
        ts("Store op latency by op (submit to reply)", [
            (quantile(0.5, "zonehost_store_op_seconds", ["op"]), "p50 {{op}}"),
            (quantile(0.99, "zonehost_store_op_seconds", ["op"]), "p99 {{op}}"),
        ], ["zonehost_store_op_seconds"], unit="s"),
        ts("Store ops per second by op", [
            (rate("zonehost_store_op_seconds_count", ["op"]), "{{op}}"),
        ], ["zonehost_store_op_seconds"], unit="ops", stack=True),
        ts("Store errors by op", [
            (rate("zonehost_store_errors_total", ["op"]), "{{op}}"),
        ], ["zonehost_store_errors_total"], unit="ops"),
        ts("Store queue depth", [
            (gauge("zonehost_store_queue_depth", ["instance"]), "{{instance}}"),
        ], ["zonehost_store_queue_depth"]),
        ts("Player cache", [
            (rate("zonehost_store_cache_hits_total"), "hits/s"),
            (rate("zonehost_store_cache_misses_total"), "misses/s"),
        ], ["zonehost_store_cache_hits_total", "zonehost_store_cache_misses_total"], unit="ops"),
    ]
    hand = {n for p in panels for n in p.needs}
    # Further store metrics: a generic panel each until one is written by hand.
    panels += generic_panels([n for n in store if n not in hand], catalog)
    return panels


def cluster():
    """Several servers on one store (docs/cluster.md "Scaling out"): load placement, ownership
    leases, drains by migration, parties across servers and sim workers, trades."""
    return [
        stat("Servers up", f'count(up{{{SEL}}} == 1)', ["zonehost_sessions_active"], w=6),
        stat("Leases lost (1h)",
             f'sum(increase(zonehost_player_leases_total{{{SEL}, event="lost"}}[1h]))',
             ["zonehost_player_leases_total"], thresholds=steps(("red", 1)), w=6,
             desc="A server lost a player's lease (takeover or expiry): its session was closed."),
        stat("Login redirects / s", rate("zonehost_cluster_login_redirects_total"),
             ["zonehost_cluster_login_redirects_total"], unit="ops", w=6,
             desc="New logins sent to a less loaded peer."),
        stat("Party write conflicts / s",
             f'sum(rate(zonehost_party_writes_total{{{SEL}, result="conflict"}}[$__rate_interval]))',
             ["zonehost_party_writes_total"], unit="ops", w=6,
             desc="Compare-and-set conflicts on party records (retried)."),
        ts("Players by server", [
            (gauge("zonehost_sessions_active", ["instance"]), "{{instance}}"),
        ], ["zonehost_sessions_active"], stack=True),
        ts("Published load by server (per mille)", [
            (gauge("zonehost_cluster_load_permille", ["instance"], agg="max"), "{{instance}}"),
        ], ["zonehost_cluster_load_permille"],
            desc="Mean sim worker busy fraction each server published to the servers table; placement compares these."),
        ts("Player leases held by server", [
            (gauge("zonehost_player_leases_held", ["instance"]), "{{instance}}"),
        ], ["zonehost_player_leases_held"], stack=True),
        ts("Lease events", [
            (rate("zonehost_player_leases_total", ["event"]), "{{event}}"),
        ], ["zonehost_player_leases_total"], unit="ops"),
        ts("New instances placed, by where", [
            (rate("zonehost_cluster_instance_placements_total", ["instance", "where"]), "{{where}} {{instance}}"),
        ], ["zonehost_cluster_instance_placements_total"], unit="ops",
            desc="Dungeon instances opened by a zone change: local (created on this server) or "
                 "peer (the player was redirected to a less loaded server, where the instance "
                 "was created)."),
        ts("Drain handoffs by outcome", [
            (rate("zonehost_cluster_handoffs_total", ["outcome"]), "{{outcome}}"),
        ], ["zonehost_cluster_handoffs_total"], unit="ops",
            desc="redirected: the player went on on a peer; closed: Goaway (no live peer) or gone."),
        ts("Parties across servers", [
            (rate("zonehost_party_writes_total", ["instance", "result"]), "writes {{result}} {{instance}}"),
            (rate("zonehost_party_mail_total", ["instance", "direction"]), "mail {{direction}} {{instance}}"),
            (rate("zonehost_party_handoffs_total", ["instance"]), "handoffs {{instance}}"),
            (rate("zonehost_party_members_pruned_total", ["instance"]), "pruned {{instance}}"),
        ], ["zonehost_party_writes_total", "zonehost_party_mail_total", "zonehost_party_handoffs_total",
            "zonehost_party_members_pruned_total"],
            unit="ops",
            desc="Party compare-and-set writes (conflicts are retried), mailbox traffic "
                 "between servers, members redirected to their leader's server, members "
                 "removed because no server held them past the absence grace (a crashed "
                 "server's players). Handovers between sim workers are on the Simulation board."),
        ts("Trades by outcome", [
            (rate("zonehost_trades_total", ["outcome"]), "{{outcome}}"),
        ], ["zonehost_trades_total"], unit="ops", stack=True),
    ]


def generic_panels(names, catalog):
    out = []
    for name in names:
        kind, labels = catalog[name]
        legend = " ".join("{{%s}}" % l for l in labels) or name
        if kind == "counter":
            out.append(ts(name, [(rate(name, labels or None), legend)], [name], unit="ops"))
        elif kind == "gauge":
            out.append(ts(name, [(gauge(name, labels or None), legend)], [name]))
        else:
            unit = "s" if name.endswith("_seconds") else "bytes" if name.endswith("_bytes") else "short"
            out.append(ts(name, [
                (quantile(0.5, name, labels or None), "p50 " + legend),
                (quantile(0.99, name, labels or None), "p99 " + legend),
            ], [name], unit=unit))
    return out


def build(catalog):
    boards = {
        "overview": ("zonehost-overview", "zonehost / Overview",
                     "Players, tick health, latency and error rates at a glance.", overview()),
        "network": ("zonehost-network", "zonehost / Network",
                    "Connections, datagrams, bandwidth, drops, rejects and disconnects.", network()),
        "simulation": ("zonehost-simulation", "zonehost / Simulation",
                       "Tick timing against the 16.7 ms budget, worker load, input and request latency.",
                       simulation()),
        "persistence": ("zonehost-persistence", "zonehost / Persistence",
                        "Store health and durability-related server state.", persistence(catalog)),
        "cluster": ("zonehost-cluster", "zonehost / Cluster",
                    "Servers sharing one store: load, ownership leases, drains, parties, trades.",
                    cluster()),
    }
    covered = set()
    for _, _, _, panels in boards.values():
        for p in panels:
            if all(n in catalog for n in p.needs):
                covered.update(p.needs)
    rest = sorted(n for n in catalog if n not in covered)
    boards["overview"][3].extend(generic_panels(rest, catalog))
    return {key: dashboard(uid, title, desc, panels, catalog)
            for key, (uid, title, desc, panels) in boards.items()}


def main():
    check = "--check" in sys.argv[1:]
    catalog = load_catalog()
    stale = []
    for key, board in build(catalog).items():
        path = os.path.join(OUT, key + ".json")
        text_out = json.dumps(board, indent=2) + "\n"
        old = open(path, encoding="utf-8").read() if os.path.exists(path) else None
        if old != text_out:
            stale.append(path)
            if not check:
                with open(path, "w", encoding="utf-8") as f:
                    f.write(text_out)
    if check and stale:
        print("stale dashboards (run python3 grafana/generate.py):", *stale, sep="\n  ")
        return 1
    if not check:
        print(f"{len(catalog)} catalog metrics; wrote {len(stale)} dashboard(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
