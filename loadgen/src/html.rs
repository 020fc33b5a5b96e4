//! A self-contained HTML report: one file, inline SVG charts and CSS, no script, no
//! network access (opens from disk in any browser).

use std::fmt::Write as _;

use crate::hist::decode_hist;
use crate::report::{human_bits, Report};
use crate::stats::Metric;

const COLORS: [&str; 6] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
];
const W: f64 = 760.0;
const H: f64 = 240.0;
const PAD_L: f64 = 64.0;
const PAD_R: f64 = 16.0;
const PAD_T: f64 = 28.0;
const PAD_B: f64 = 34.0;

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A series: name and points (x seconds, y value).
type Series = (String, Vec<(f64, f64)>);

/// "Nice" upper bound for an axis.
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if v <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

fn fmt_tick(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// One line chart as inline SVG.
pub fn line_chart(title: &str, unit: &str, series: &[Series]) -> String {
    let mut s = String::new();
    let xmax = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.0))
        .fold(1.0f64, f64::max);
    let ymax = nice_max(
        series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|q| q.1))
            .fold(0.0f64, f64::max),
    );
    let (pw, ph) = (W - PAD_L - PAD_R, H - PAD_T - PAD_B);
    let x = |v: f64| PAD_L + v / xmax * pw;
    let y = |v: f64| PAD_T + ph - (v / ymax).min(1.0) * ph;
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img"><title>{t}</title>"#,
        t = esc(title)
    );
    let _ = write!(
        s,
        r#"<text x="{PAD_L}" y="18" class="ct">{} ({})</text>"#,
        esc(title),
        esc(unit)
    );
    for i in 0..=4 {
        let v = ymax * f64::from(i) / 4.0;
        let yy = y(v);
        let _ = write!(
            s,
            r##"<line x1="{PAD_L}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" class="ax" text-anchor="end">{}</text>"##,
            W - PAD_R,
            PAD_L - 6.0,
            yy + 4.0,
            fmt_tick(v)
        );
    }
    for i in 0..=5 {
        let v = xmax * f64::from(i) / 5.0;
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" class="ax" text-anchor="middle">{:.0}s</text>"#,
            x(v),
            H - PAD_B + 16.0,
            v
        );
    }
    let _ = write!(
        s,
        r##"<line x1="{PAD_L}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#888"/>"##,
        PAD_T + ph,
        W - PAD_R,
        PAD_T + ph
    );
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        if !pts.is_empty() {
            let d: Vec<String> = pts
                .iter()
                .map(|(a, b)| format!("{:.1},{:.1}", x(*a), y(*b)))
                .collect();
            let _ = write!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{}"><title>{}</title></polyline>"#,
                d.join(" "),
                esc(name)
            );
        }
        let lx = PAD_L + 8.0 + 130.0 * i as f64;
        let _ = write!(
            s,
            r#"<rect x="{lx:.1}" y="{:.1}" width="10" height="3" fill="{color}"/><text x="{:.1}" y="{:.1}" class="lg">{}</text>"#,
            H - 8.0,
            lx + 14.0,
            H - 4.0,
            esc(name)
        );
    }
    s.push_str("</svg>");
    s
}

/// Whether a chart would show anything: some series has a point above zero.
fn has_data(series: &[Series]) -> bool {
    series.iter().any(|(_, p)| p.iter().any(|q| q.1 > 0.0))
}

/// Quantiles of the percentile-distribution plot: up to 99.999 %.
const DIST_QUANTILES: [f64; 16] = [
    0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.97, 0.99, 0.995, 0.997, 0.999, 0.9995, 0.9997, 0.9999,
    0.99995, 0.99999,
];

/// Position of quantile `q` on the distribution plot's axis: `log10(1 / (1 - q))`, so 90 %,
/// 99 %, 99.9 % are evenly spaced (the usual HDR histogram plot).
fn nines(q: f64) -> f64 {
    (1.0 / (1.0 - q).max(1e-9)).log10()
}

/// A latency percentile-distribution plot of one action's whole-run histogram, inline SVG:
/// latency (ms) against percentile, the tail stretched (see [`nines`]). Quantiles beyond
/// what the sample count can tell (`1 - 1/count`) are left out. `None` without samples.
fn distribution_chart(action: &str, h: &hdrhistogram::Histogram<u64>) -> Option<String> {
    if h.is_empty() {
        return None;
    }
    let deepest = 1.0 - 1.0 / h.len() as f64;
    let mut pts: Vec<(f64, f64)> = DIST_QUANTILES
        .iter()
        .filter(|&&q| q <= deepest)
        .map(|&q| (nines(q), h.value_at_quantile(q) as f64 / 1000.0))
        .collect();
    pts.push((nines(deepest), h.max() as f64 / 1000.0));
    let xmax = pts.iter().map(|p| p.0).fold(1.0f64, f64::max).ceil();
    let ymax = nice_max(pts.iter().map(|p| p.1).fold(0.0f64, f64::max));
    let (w, h_px) = (W / 2.0 - 8.0, H * 0.8);
    let (pw, ph) = (w - PAD_L - PAD_R, h_px - PAD_T - PAD_B);
    let x = |v: f64| PAD_L + v / xmax * pw;
    let y = |v: f64| PAD_T + ph - (v / ymax).min(1.0) * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h_px}" width="{w}" height="{h_px}" role="img" style="display:inline-block"><title>{t} latency by percentile</title><text x="{PAD_L}" y="18" class="ct">{t}: latency by percentile (ms)</text>"#,
        t = esc(action)
    );
    for i in 0..=4 {
        let v = ymax * f64::from(i) / 4.0;
        let yy = y(v);
        let _ = write!(
            s,
            r##"<line x1="{PAD_L}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" class="ax" text-anchor="end">{}</text>"##,
            w - PAD_R,
            PAD_L - 6.0,
            yy + 4.0,
            fmt_tick(v)
        );
    }
    for (i, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
        .iter()
        .enumerate()
        .take(xmax as usize + 1)
    {
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" class="ax" text-anchor="middle">{label}</text>"#,
            x(i as f64),
            h_px - PAD_B + 16.0
        );
    }
    let d: Vec<String> = pts
        .iter()
        .map(|(a, b)| format!("{:.1},{:.1}", x(*a), y(*b)))
        .collect();
    let _ = write!(
        s,
        r#"<polyline fill="none" stroke="{}" stroke-width="1.6" points="{}"/></svg>"#,
        COLORS[0],
        d.join(" ")
    );
    Some(s)
}

/// Per-second quantiles of a metric from the time series, in milliseconds.
fn quantile_series(r: &Report, metric: Metric, q: f64) -> Vec<(f64, f64)> {
    r.timeseries
        .iter()
        .filter_map(|sec| {
            let h = decode_hist(sec.hists.get(metric.name())?).ok()?;
            (!h.is_empty()).then(|| (f64::from(sec.t), h.value_at_quantile(q) as f64 / 1000.0))
        })
        .collect()
}

/// Per-second p99 of all request kinds together, in milliseconds.
fn requests_p99(r: &Report) -> Vec<(f64, f64)> {
    r.timeseries
        .iter()
        .filter_map(|sec| {
            let mut all = crate::hist::histogram();
            for m in Metric::ALL {
                if m.is_action() && !matches!(m, Metric::Move | Metric::Connect) {
                    if let Some(h) = sec.hists.get(m.name()).and_then(|t| decode_hist(t).ok()) {
                        let _ = all.add(&h);
                    }
                }
            }
            (!all.is_empty()).then(|| {
                (
                    f64::from(sec.t),
                    all.value_at_quantile(0.99) as f64 / 1000.0,
                )
            })
        })
        .collect()
}

/// The whole report as one HTML page.
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let title = format!(
        "zonehost loadgen: {} players, {}",
        r.run.players,
        r.run.scenario.as_deref().unwrap_or("flags")
    );
    let _ = write!(
        s,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{t}</title><style>
body{{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}}
h1{{font-size:20px}} h2{{font-size:16px;margin-top:28px}}
table{{border-collapse:collapse;margin:8px 0}} td,th{{border:1px solid #ddd;padding:3px 8px;text-align:right}}
th{{background:#f4f4f4}} td:first-child,th:first-child{{text-align:left}}
.pass{{color:#1a7f37;font-weight:bold}} .fail{{color:#c62828;font-weight:bold}}
.ct{{font:13px sans-serif;font-weight:bold}} .ax{{font:11px sans-serif;fill:#555}} .lg{{font:11px sans-serif}}
svg{{display:block;margin:10px 0;background:#fff;border:1px solid #eee}}
</style></head><body><h1>{t}</h1>"#,
        t = esc(&title)
    );
    let verdict = if r.passed() && r.run.slo.is_empty() {
        "<span>NO OBJECTIVES</span>: none given, no latency was judged".to_string()
    } else if r.passed() {
        r#"<span class="pass">PASS</span>"#.to_string()
    } else {
        format!(
            r#"<span class="fail">FAIL</span>: {}"#,
            esc(&r.violations.join("; "))
        )
    };
    let _ = write!(s, "<p>Result: {verdict}</p><table>");
    let mut kv = |k: &str, v: String| {
        let _ = write!(s, "<tr><td>{}</td><td>{}</td></tr>", esc(k), esc(&v));
    };
    kv("server", r.run.server.clone());
    kv(
        "duration",
        format!(
            "{:.0} s planned (ramp-up {:.0} s), {:.1} s elapsed",
            r.run.duration_s, r.run.ramp_up_s, r.run.elapsed_s
        ),
    );
    kv("input rate", format!("{} Hz", r.run.input_hz));
    if let Some(hz) = r.run.asked_snapshot_rate_hz {
        kv("snapshot rate asked", format!("at most {hz} Hz"));
    }
    kv("seed", r.run.seed.to_string());
    kv(
        "bots",
        r.run
            .behaviours
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    if !r.run.impairment.is_empty() {
        kv("impairment", r.run.impairment.clone());
    }
    if !r.run.merged_from.is_empty() {
        kv("merged from", r.run.merged_from.join(", "));
    }
    kv(
        "objectives",
        r.run
            .slo
            .iter()
            .map(|x| x.text.clone())
            .collect::<Vec<_>>()
            .join(", "),
    );
    kv(
        "connected / failed",
        format!(
            "{} / {} of {}",
            r.bots.connected, r.bots.failed, r.bots.planned
        ),
    );
    kv(
        "actions per second",
        format!("{:.0}", r.actions_per_second()),
    );
    kv(
        "snapshots",
        format!(
            "{:.2}% of expected received (loss {:.2}%, {} late)",
            r.snapshots.ratio * 100.0,
            (1.0 - r.snapshots.ratio).max(0.0) * 100.0,
            r.snapshots.late
        ),
    );
    if let Some(c) = &r.server_cost {
        kv(
            "server cost",
            format!(
                "{:.1} % of a core, {:.1} MiB with {} players over {:.0} s: {:.3} % of a core and {:.1} KiB per player",
                c.cpu_percent,
                c.rss_bytes as f64 / (1024.0 * 1024.0),
                c.players,
                c.window_s,
                c.cpu_percent_per_player,
                c.rss_kib_per_player
            ),
        );
    }
    kv(
        "bandwidth per bot",
        format!(
            "up {}, down {}",
            human_bits(r.bandwidth.up_bps_per_bot),
            human_bits(r.bandwidth.down_bps_per_bot)
        ),
    );
    let bw = &r.bandwidth;
    if bw.up_packets + bw.down_packets > 0 {
        kv(
            "UDP packets per bot",
            format!(
                "up {:.1}/s, down {:.1}/s; ACK-only up {:.1} %, down {:.1} %, both {:.1} %",
                bw.up_pps_per_bot,
                bw.down_pps_per_bot,
                bw.up_ack_only_share * 100.0,
                bw.down_ack_only_share * 100.0,
                bw.ack_only_share() * 100.0
            ),
        );
    }
    kv(
        "game",
        format!(
            "{} logins, {} kills, {} deaths, {} zone changes, {} loot picked up",
            r.game.logins, r.game.kills, r.game.deaths, r.game.zone_changes, r.game.loot_picked_up
        ),
    );
    s.push_str("</table>");

    s.push_str("<h2>Latency by action</h2><table><tr><th>action</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th><th>count</th><th>refused</th></tr>");
    for m in Metric::ALL {
        let Some(p) = r.latency.get(m.name()) else {
            continue;
        };
        let refused: u64 = r
            .requests
            .rejected_by
            .iter()
            .filter(|(k, _)| k.split(':').next() == Some(m.name()))
            .map(|(_, n)| n)
            .sum();
        if p.count == 0 && refused == 0 {
            continue;
        }
        let ms = |us: u64| format!("{:.2} ms", us as f64 / 1000.0);
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            m.name(),
            ms(p.p50_us),
            ms(p.p90_us),
            ms(p.p99_us),
            ms(p.p999_us),
            ms(p.max_us),
            p.count,
            refused
        );
    }
    s.push_str("</table>");

    let mut dists = String::new();
    for m in Metric::ALL {
        if !m.is_action() {
            continue;
        }
        let h = r
            .latency
            .get(m.name())
            .and_then(|p| decode_hist(&p.hdr_v2_base64).ok());
        if let Some(chart) = h.as_ref().and_then(|h| distribution_chart(m.name(), h)) {
            dists.push_str(&chart);
        }
    }
    if !dists.is_empty() {
        s.push_str("<h2>Latency distribution by action</h2>");
        s.push_str(&dists);
    }

    s.push_str("<h2>Over time</h2>");
    // Charts with no data are left out, and so are the series without points.
    let mut chart = |title: &str, unit: &str, series: Vec<Series>| {
        let series: Vec<Series> = series.into_iter().filter(|(_, p)| !p.is_empty()).collect();
        if has_data(&series) {
            s.push_str(&line_chart(title, unit, &series));
        }
    };
    chart(
        "Move latency percentiles",
        "ms",
        vec![
            ("p50".into(), quantile_series(r, Metric::Move, 0.5)),
            ("p90".into(), quantile_series(r, Metric::Move, 0.9)),
            ("p99".into(), quantile_series(r, Metric::Move, 0.99)),
            ("max".into(), quantile_series(r, Metric::Move, 1.0)),
        ],
    );
    chart(
        "Request latency p99",
        "ms",
        vec![
            ("all requests".into(), requests_p99(r)),
            ("attack".into(), quantile_series(r, Metric::Attack, 0.99)),
            (
                "attack→log".into(),
                quantile_series(r, Metric::AttackLog, 0.99),
            ),
            (
                "enter zone".into(),
                quantile_series(r, Metric::EnterZone, 0.99),
            ),
        ],
    );
    let per_sec = |f: fn(&crate::stats::Second) -> u64| -> Vec<(f64, f64)> {
        r.timeseries
            .iter()
            .map(|x| (f64::from(x.t), f(x) as f64))
            .collect()
    };
    chart(
        "Connected players",
        "bots",
        vec![
            ("connected".into(), per_sec(|x| x.connected)),
            ("logins/s".into(), per_sec(|x| x.connects)),
        ],
    );
    chart(
        "Throughput",
        "per second",
        vec![
            ("actions".into(), per_sec(|x| x.actions)),
            ("inputs".into(), per_sec(|x| x.inputs)),
            ("snapshots".into(), per_sec(|x| x.snapshots)),
            ("refused".into(), per_sec(|x| x.rejected)),
        ],
    );
    chart(
        "Bandwidth, all bots",
        "kbit/s",
        vec![
            (
                "up".into(),
                r.timeseries
                    .iter()
                    .map(|x| (f64::from(x.t), x.bytes_up as f64 * 8.0 / 1e3))
                    .collect(),
            ),
            (
                "down".into(),
                r.timeseries
                    .iter()
                    .map(|x| (f64::from(x.t), x.bytes_down as f64 * 8.0 / 1e3))
                    .collect(),
            ),
        ],
    );

    if !r.requests.rejected_by.is_empty() {
        s.push_str("<h2>Refused requests</h2><table><tr><th>action:reason</th><th>count</th></tr>");
        for (k, v) in &r.requests.rejected_by {
            let _ = write!(s, "<tr><td>{}</td><td>{v}</td></tr>", esc(k));
        }
        s.push_str("</table>");
    }
    if !r.failures.is_empty() {
        s.push_str(
            "<h2>Bot failures</h2><table><tr><th>kind</th><th>count</th><th>example</th></tr>",
        );
        for (k, f) in &r.failures {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(k),
                f.count,
                esc(&f.example)
            );
        }
        s.push_str("</table>");
    }
    s.push_str("<p>Histograms (HDR V2, base64) and the per-second series are in the JSON report.</p></body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_contained_page_with_charts() {
        let r = crate::report::tests::report_of(
            &[1000, 2000, 3000],
            &[(1, &[1000]), (2, &[2000, 50_000])],
        );
        let page = render(&r);
        assert!(page.starts_with("<!doctype html>"));
        assert!(page.matches("<svg").count() >= 5, "five charts");
        assert!(page.contains("<polyline"), "the move chart has points");
        for remote in ["http://", "https://", "<script", "src="] {
            let outside_xmlns = page.replace("http://www.w3.org/2000/svg", "");
            assert!(!outside_xmlns.contains(remote), "no {remote}");
        }
        assert!(page.contains("NO OBJECTIVES"), "none were given");
        let mut judged = r.clone();
        judged.run.slo = crate::slo::parse("p99<100ms").expect("slo");
        judged.evaluate();
        assert!(render(&judged).contains(r#"<span class="pass">PASS</span>"#));
    }

    #[test]
    fn a_distribution_per_action_and_no_chart_without_data() {
        let r = crate::report::tests::report_of(
            &[1000, 2000, 3000, 90_000],
            &[(1, &[1000]), (2, &[2000, 50_000])],
        );
        let page = render(&r);
        assert!(page.contains("Latency distribution by action"));
        assert!(
            page.contains("move: latency by percentile"),
            "move has samples"
        );
        assert!(
            !page.contains("attack: latency by percentile"),
            "attack has none"
        );
        assert!(
            !page.contains("Request latency p99"),
            "no request was measured: no chart"
        );
        // 4 samples: the deepest quantile shown is 75 %, the tail point is the max (90 ms).
        let h = decode_hist(&r.latency["move"].hdr_v2_base64).expect("hist");
        let chart = distribution_chart("move", &h).expect("chart");
        assert!(
            !chart.contains("99.9%"),
            "no percentile the samples cannot tell"
        );
        assert!(distribution_chart("x", &crate::hist::histogram()).is_none());
        assert!((nines(0.99) - 2.0).abs() < 1e-9);
    }

    #[test]
    fn escaping_and_axes() {
        assert_eq!(esc("<a&b>"), "&lt;a&amp;b&gt;");
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.3), 10.0);
        assert_eq!(nice_max(130.0), 200.0);
        let svg = line_chart("t<", "ms", &[("a".into(), vec![(1.0, 5.0), (2.0, 7.0)])]);
        assert!(svg.contains("t&lt;"));
        assert!(svg.contains("points=\""));
    }
}
