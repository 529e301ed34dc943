//! `herald bench --report FILE.html`: one self-contained HTML file an SRE can attach to a
//! ticket. Charts (inline SVG, no script, nothing loaded from elsewhere): records per second
//! through each stage, each sender's provider calls per 1 s window against its limit and
//! burst, accept-latency percentiles, each tenant's share of calls, and resident memory over
//! time; the JSON report below them.
//!
//! The time series come from [`Sampler`], which reads the metrics board, the simulator's
//! ledger and the resident set (`VmRSS`) once a second while the campaigns run. It is not: a
//! monitoring system (one run, one file), nor available with the HTTP mock or the distributed
//! backends (their calls and stage counters live in other processes).

use crate::bench::BenchReport;
use crate::engine::Engine;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One second of the run.
#[derive(Debug, Clone)]
struct Tick {
    t_s: f64,
    /// Records consumed so far, per stage.
    stages: Vec<(&'static str, u64)>,
    /// Provider calls so far, per tenant.
    calls: Vec<(u64, u64)>,
    rss_bytes: u64,
}

/// What the sampler saw, and the latency distribution at the end.
#[derive(Debug, Default)]
pub struct Timeline {
    ticks: Vec<Tick>,
    /// (quantile, accept latency ms).
    latency_ms: Vec<(f64, u64)>,
}

/// Samples the run once a second until [`Sampler::finish`].
pub struct Sampler {
    timeline: Arc<Mutex<Timeline>>,
    stop: pipeline::Shutdown,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    pub fn start(engine: &Engine) -> Self {
        let (board, simulator) = (engine.board.clone(), engine.simulator.clone());
        let timeline = Arc::new(Mutex::new(Timeline::default()));
        let stop = pipeline::Shutdown::new();
        let (into, stopped) = (timeline.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut interval = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = interval.tick() => {}
                    _ = stopped.wait() => {}
                }
                let stages = pipeline::topics::STAGES
                    .iter()
                    .map(|s| {
                        (
                            s.name,
                            board.value("herald_stage_records_in_total", &[("stage", s.name)]).unwrap_or(0.0) as u64,
                        )
                    })
                    .collect();
                let mut calls: Vec<(u64, u64)> =
                    simulator.ledger().tenants.iter().map(|(t, c)| (t.0, c.calls)).collect();
                calls.sort_unstable();
                let tick =
                    Tick { t_s: started.elapsed().as_secs_f64(), stages, calls, rss_bytes: crate::current_rss_bytes() };
                into.lock().unwrap_or_else(|p| p.into_inner()).ticks.push(tick);
                if stopped.is_triggered() {
                    break;
                }
            }
        });
        Self { timeline, stop, task }
    }

    /// Takes a last sample and returns the timeline, with the ledger's latency quantiles.
    pub async fn finish(self, engine: &Engine) -> Timeline {
        self.stop.trigger();
        let _ = self.task.await;
        let mut timeline = std::mem::take(&mut *self.timeline.lock().unwrap_or_else(|p| p.into_inner()));
        let ledger = engine.simulator.ledger();
        timeline.latency_ms =
            [0.5, 0.9, 0.99, 0.999, 1.0].into_iter().map(|q| (q, ledger.latency_ms.value_at_quantile(q))).collect();
        timeline
    }
}

/// The series of per-second differences of a cumulative count.
fn per_second(ticks: &[Tick], count: impl Fn(&Tick) -> u64) -> Vec<(f64, f64)> {
    ticks
        .windows(2)
        .map(|w| {
            let dt = (w[1].t_s - w[0].t_s).max(1e-3);
            (w[1].t_s, count(&w[1]).saturating_sub(count(&w[0])) as f64 / dt)
        })
        .collect()
}

/// The report as one HTML document.
pub fn render(report: &BenchReport, timeline: &Timeline) -> String {
    let ticks = &timeline.ticks;
    let mut stages = Vec::new();
    for spec in pipeline::topics::STAGES {
        let series = per_second(ticks, |t| t.stages.iter().find(|(s, _)| *s == spec.name).map_or(0, |(_, n)| *n));
        if series.iter().any(|(_, v)| *v > 0.0) {
            stages.push((spec.name.to_string(), series));
        }
    }
    let tenants: Vec<u64> = ticks.last().map(|t| t.calls.iter().map(|(id, _)| *id).collect()).unwrap_or_default();
    let calls_of = |tenant: u64| move |t: &Tick| t.calls.iter().find(|(id, _)| *id == tenant).map_or(0, |(_, n)| *n);
    let senders: Vec<(String, Vec<(f64, f64)>)> =
        tenants.iter().map(|id| (format!("tenant {id}"), per_second(ticks, calls_of(*id)))).collect();
    let mut limits = Vec::new();
    if let Some(rate) = report.per_tenant.first().and_then(|t| t.rate_limit) {
        limits.push(("limit".to_string(), f64::from(rate)));
        limits.push(("limit + burst".to_string(), f64::from(rate + report.burst_per_tenant)));
    }
    let memory =
        vec![("resident".to_string(), ticks.iter().map(|t| (t.t_s, t.rss_bytes as f64 / 1048576.0)).collect())];
    let latency: Vec<(String, f64)> = timeline
        .latency_ms
        .iter()
        .map(|(q, ms)| (if *q >= 1.0 { "max".into() } else { format!("p{}", q * 100.0) }, *ms as f64))
        .collect();
    let share: Vec<(String, f64)> =
        report.per_tenant.iter().map(|t| (format!("tenant {}", t.tenant), t.accepts as f64)).collect();

    let mut html = String::with_capacity(64 * 1024);
    html.push_str(HEAD);
    let _ = write!(
        html,
        "<h1>herald bench</h1><p class=\"summary\">{} recipients × {} tenants on {}: <b>{:.0} msgs/s</b> over {:.1} s, \
         {} duplicates, {} lost, peak RSS {:.0} MiB, Jain fairness {:.3}.</p>",
        report.recipients,
        report.tenants,
        report.backend,
        report.throughput_msgs_per_s,
        report.elapsed_s,
        report.duplicate_accepts,
        report.lost,
        report.peak_rss_bytes as f64 / 1048576.0,
        report.fairness_jain,
    );
    html.push_str(&line_chart("Throughput per stage", "records/s", &stages, &[]));
    html.push_str(&line_chart("Provider calls per 1 s window, per sender", "calls/s", &senders, &limits));
    html.push_str(&bar_chart("Accept latency from trigger", "ms", &latency));
    html.push_str(&bar_chart("Share of provider accepts per tenant", "accepts", &share));
    html.push_str(&line_chart("Resident memory", "MiB", &memory, &[]));
    let json = serde_json::to_string_pretty(report).unwrap_or_default();
    let _ = writeln!(html, "<h2>Figures (JSON)</h2><pre id=\"json\">{}</pre></body></html>", escape(&json));
    html
}

const HEAD: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>herald bench report</title>\
<style>body{font:14px system-ui,sans-serif;margin:24px;max-width:1000px;color:#222}\
figure{margin:24px 0}figcaption{font-weight:600;margin-bottom:4px}svg{background:#fafafa;border:1px solid #ddd}\
pre{background:#f4f4f4;padding:12px;overflow:auto}.summary{font-size:16px}</style></head><body>";

const COLOURS: [&str; 8] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
const W: f64 = 900.0;
const H: f64 = 260.0;
const PAD: f64 = 48.0;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Lines over time, with dashed horizontal reference lines (limits).
fn line_chart(title: &str, unit: &str, series: &[(String, Vec<(f64, f64)>)], refs: &[(String, f64)]) -> String {
    let points = series.iter().flat_map(|(_, s)| s.iter());
    let x_max = points.clone().map(|p| p.0).fold(1.0_f64, f64::max);
    let y_max = points.map(|p| p.1).chain(refs.iter().map(|r| r.1)).fold(1.0_f64, f64::max) * 1.1;
    let x = |v: f64| PAD + v / x_max * (W - 2.0 * PAD);
    let y = |v: f64| H - PAD + -(v / y_max) * (H - 2.0 * PAD);
    let mut svg = open_chart(title, unit, y_max, &format!("0 – {x_max:.0} s"));
    for (i, (name, s)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let pts: Vec<String> = s.iter().map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v))).collect();
        let _ = write!(
            svg,
            "<polyline class=\"series\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>",
            pts.join(" ")
        );
        legend(&mut svg, i, name, colour);
    }
    for (i, (name, v)) in refs.iter().enumerate() {
        let _ = write!(
            svg,
            "<line x1=\"{PAD}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#555\" stroke-dasharray=\"6 4\"/>\
             <text x=\"{}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{} {v:.0}</text>",
            W - PAD,
            W - PAD,
            y(*v) - 3.0 - 12.0 * i as f64,
            escape(name),
            y = y(*v),
        );
    }
    close_chart(svg)
}

/// Vertical bars, one per label.
fn bar_chart(title: &str, unit: &str, bars: &[(String, f64)]) -> String {
    let y_max = bars.iter().map(|b| b.1).fold(1.0_f64, f64::max) * 1.1;
    let slot = (W - 2.0 * PAD) / bars.len().max(1) as f64;
    let mut svg = open_chart(title, unit, y_max, "");
    for (i, (label, v)) in bars.iter().enumerate() {
        let h = v / y_max * (H - 2.0 * PAD);
        let x0 = PAD + slot * i as f64 + slot * 0.15;
        let _ = write!(
            svg,
            "<rect class=\"bar\" x=\"{x0:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">{} ({v:.0})</text>",
            H - PAD - h,
            slot * 0.7,
            COLOURS[i % COLOURS.len()],
            x0 + slot * 0.35,
            H - PAD + 14.0,
            escape(label),
        );
    }
    close_chart(svg)
}

fn open_chart(title: &str, unit: &str, y_max: f64, x_label: &str) -> String {
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<figure><figcaption>{}</figcaption><svg width=\"{W}\" height=\"{H}\" \
         viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\">\
         <line x1=\"{PAD}\" y1=\"{PAD}\" x2=\"{PAD}\" y2=\"{b}\" stroke=\"#999\"/>\
         <line x1=\"{PAD}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#999\"/>\
         <text x=\"4\" y=\"{t}\" font-size=\"11\">{:.0} {}</text><text x=\"4\" y=\"{b}\" font-size=\"11\">0</text>\
         <text x=\"{r}\" y=\"{xl}\" font-size=\"11\" text-anchor=\"end\">{}</text>",
        escape(title),
        escape(title),
        y_max,
        escape(unit),
        escape(x_label),
        b = H - PAD,
        r = W - PAD,
        t = PAD - 6.0,
        xl = H - PAD + 28.0,
    );
    svg
}

fn legend(svg: &mut String, i: usize, name: &str, colour: &str) {
    let (lx, ly) = (PAD + 10.0 + 150.0 * (i % 5) as f64, 14.0 + 14.0 * (i / 5) as f64);
    let _ = write!(
        svg,
        "<rect x=\"{lx}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{colour}\"/><text x=\"{}\" y=\"{ly}\" font-size=\"11\">{}</text>",
        ly - 9.0,
        lx + 14.0,
        escape(name),
    );
}

fn close_chart(mut svg: String) -> String {
    svg.push_str("</svg></figure>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_second_differences_a_cumulative_count() {
        let tick = |t_s, n| Tick { t_s, stages: vec![("chunk", n)], calls: Vec::new(), rss_bytes: 0 };
        let ticks = [tick(0.0, 0), tick(1.0, 100), tick(2.0, 100), tick(2.5, 150)];
        let series = per_second(&ticks, |t| t.stages[0].1);
        assert_eq!(series, vec![(1.0, 100.0), (2.0, 0.0), (2.5, 100.0)]);
    }

    #[test]
    fn labels_are_escaped() {
        let svg = bar_chart("<t>", "ms", &[("a\"<b>".into(), 1.0)]);
        assert!(svg.contains("&lt;t&gt;") && svg.contains("a&quot;&lt;b&gt;") && !svg.contains("<b>"), "{svg}");
    }
}
