//! One self-contained HTML page per run: verdict, anomalies with their
//! explanations and drawings, latency and throughput plots with fault
//! windows shaded, availability, and a timeline of every op.
//!
//! Checkers hand over data (`results.json`, the perf checker's figures);
//! everything visual is made here.

pub mod svg;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;
use serde_json::Value as Json;
use splitbrain_basic::perf::{check_perf, PerfResult};
use splitbrain_history::{CheckOptions, History, OpType, Verdict};

use crate::controller::TestOptions;
use crate::run_store::{self, RunResults, HISTORY_FILE, RESULTS_FILE, TEST_FILE};
use svg::{esc, Plot, Series, Window};

pub const REPORT_FILE: &str = "report.html";
const TEMPLATE: &str = include_str!("report.html.tera");
/// Most points drawn in one scatter plot; failed and indeterminate ops are always drawn.
const MAX_SCATTER_POINTS: usize = 20_000;

/// Everything a report is made from.
pub struct ReportInput<'a> {
    pub test: Option<&'a TestOptions>,
    pub history: &'a History,
    pub results: Option<&'a RunResults>,
    /// Files in the run directory to link to, relative to it.
    pub files: Vec<String>,
}

#[derive(Serialize)]
struct CheckerView {
    name: String,
    verdict: String,
    anomaly_types: Vec<String>,
    explanation: String,
    drawings: Vec<Drawing>,
}

#[derive(Serialize)]
struct Drawing {
    title: String,
    svg: String,
    steps: Vec<String>,
}

#[derive(Serialize)]
struct AvailabilityRow {
    phase: String,
    ops: usize,
    ok: usize,
    fail: usize,
    info: usize,
    availability: String,
    latency_ms_p50: String,
    latency_ms_p99: String,
}

/// Render the page.
pub fn render(input: &ReportInput) -> anyhow::Result<String> {
    let h = input.history;
    let stats = h.stats();
    // About 150 buckets over the run, between 10 ms and 10 s each.
    let bucket_ms = (end_ms(h) / 150.0).clamp(10.0, 10_000.0).round();
    let mut popts = CheckOptions::default();
    popts
        .params
        .insert("bucket-ms".into(), bucket_ms.to_string());
    let perf = check_perf(h, &popts).map_err(|e| anyhow::anyhow!("perf figures: {e}"))?;
    let x_range = Some((0.0, (end_ms(h) / 1000.0).max(0.001)));
    let windows: Vec<Window> = perf
        .windows
        .iter()
        .map(|w| Window {
            start: w.window.start_ms.unwrap_or(0.0) / 1000.0,
            end: w.window.end_ms.unwrap_or_else(|| end_ms(h)) / 1000.0,
            label: w.window.label.clone(),
        })
        .collect();
    let verdict = input
        .results
        .map_or("unchecked".to_string(), |r| r.verdict.as_str().to_string());
    let test = input.test;
    let field = |f: fn(&TestOptions) -> String| test.map(f).unwrap_or_default();
    let mut ctx = tera::Context::new();
    ctx.insert("verdict", &verdict);
    ctx.insert("name", &field(|t| t.name.clone()));
    ctx.insert("database", &field(|t| t.database.clone()));
    ctx.insert("workload", &field(|t| t.workload.name().to_string()));
    ctx.insert("seed", &field(|t| t.seed.to_string()));
    ctx.insert("command", &field(|t| t.command.clone()));
    ctx.insert(
        "nemesis",
        &field(|t| {
            t.nemesis
                .faults
                .iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }),
    );
    ctx.insert("duration_s", &format!("{:.1}", end_ms(h) / 1000.0));
    ctx.insert("stats", &stats);
    ctx.insert("problem", &input.results.and_then(|r| r.problem.clone()));
    ctx.insert("checkers", &checker_views(input));
    ctx.insert("latency_plot", &latency_plot(h, &windows, x_range));
    ctx.insert("quantile_plot", &quantile_plot(&perf, &windows, x_range));
    ctx.insert(
        "throughput_plot",
        &throughput_plot(&perf, &windows, x_range),
    );
    ctx.insert("availability", &availability_rows(&perf));
    ctx.insert(
        "windows",
        &perf
            .windows
            .iter()
            .map(|w| {
                format!(
                    "{} from {:.2} s to {}",
                    w.window.label,
                    w.window.start_ms.unwrap_or(0.0) / 1000.0,
                    w.window
                        .end_ms
                        .map_or("the end".to_string(), |e| format!("{:.2} s", e / 1000.0))
                )
            })
            .collect::<Vec<_>>(),
    );
    ctx.insert("timeline_json", &timeline_json(h, &perf));
    ctx.insert("files", &input.files);
    tera::Tera::one_off(TEMPLATE, &ctx, true).context("rendering the report template")
}

fn end_ms(h: &History) -> f64 {
    h.ops
        .iter()
        .rev()
        .find_map(|o| o.time)
        .map_or(0.0, |t| t as f64 / 1e6)
}

fn checker_views(input: &ReportInput) -> Vec<CheckerView> {
    let Some(results) = input.results else {
        return Vec::new();
    };
    results
        .checkers
        .iter()
        .map(|c| {
            let mut drawings = cycle_drawings(&c.result);
            drawings.extend(linearizability_drawings(&c.result, input.history));
            CheckerView {
                name: c.checker.clone(),
                verdict: c.verdict.as_str().to_string(),
                anomaly_types: c.anomaly_types.clone(),
                explanation: c.explanation.clone(),
                drawings,
            }
        })
        .collect()
}

/// Transactional cycles (`cycles[]` with `txns` and `steps`) as drawings.
fn cycle_drawings(result: &Json) -> Vec<Drawing> {
    let Some(cycles) = result["cycles"].as_array() else {
        return Vec::new();
    };
    cycles
        .iter()
        .take(12)
        .map(|c| {
            let txns = c["txns"].as_array().cloned().unwrap_or_default();
            let nodes: Vec<String> = (1..=txns.len()).map(|i| format!("T{i}")).collect();
            let steps = c["steps"].as_array().cloned().unwrap_or_default();
            let edges: Vec<(usize, usize, String)> = steps
                .iter()
                .map(|s| {
                    (
                        s["from"].as_u64().unwrap_or(0) as usize,
                        s["to"].as_u64().unwrap_or(0) as usize,
                        s["kind"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect();
            let mut lines: Vec<String> = txns
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    format!(
                        "T{} = {} (process {}, {})",
                        i + 1,
                        t["ops"].as_str().unwrap_or(""),
                        t["process"].as_str().unwrap_or("?"),
                        t["status"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            lines.extend(
                steps
                    .iter()
                    .map(|s| s["reason"].as_str().unwrap_or("").to_string()),
            );
            Drawing {
                title: c["class"].as_str().unwrap_or("cycle").to_string(),
                svg: svg::cycle(&nodes, &edges),
                steps: lines,
            }
        })
        .collect()
}

/// For each failing partition: the last linearized ops, the op that cannot
/// be placed, and what ran beside it, as bars on process lanes.
fn linearizability_drawings(result: &Json, h: &History) -> Vec<Drawing> {
    let Some(failures) = result["failures"].as_array() else {
        return Vec::new();
    };
    failures
        .iter()
        .take(5)
        .map(|f| {
            let mut bars: Vec<(usize, Option<usize>, String, &str)> = Vec::new();
            for s in f["prefix_tail"].as_array().into_iter().flatten() {
                let label = format!(
                    "{} -> {}",
                    s["op"]["op"].as_str().unwrap_or(""),
                    s["state_after"].as_str().unwrap_or("")
                );
                bars.push((
                    s["op"]["invoke"].as_u64().unwrap_or(0) as usize,
                    s["op"]["complete"].as_u64().map(|c| c as usize),
                    label,
                    "#16a34a",
                ));
            }
            for c in f["concurrent"].as_array().into_iter().flatten().take(20) {
                bars.push((
                    c["invoke"].as_u64().unwrap_or(0) as usize,
                    c["complete"].as_u64().map(|x| x as usize),
                    c["op"].as_str().unwrap_or("").to_string(),
                    "#9ca3af",
                ));
            }
            if let Some(op) = f["op"].as_object() {
                bars.push((
                    op["invoke"].as_u64().unwrap_or(0) as usize,
                    op.get("complete")
                        .and_then(|c| c.as_u64())
                        .map(|x| x as usize),
                    format!("{} (cannot be linearized)", op["op"].as_str().unwrap_or("")),
                    "#dc2626",
                ));
            }
            let key = match &f["key"] {
                Json::Null => String::new(),
                k => format!(" key {k}"),
            };
            Drawing {
                title: format!(
                    "no linearization{key}: longest prefix {} ops, state {}",
                    f["prefix_len"],
                    f["state"].as_str().unwrap_or("?")
                ),
                svg: bars_svg(h, &bars),
                steps: Vec::new(),
            }
        })
        .collect()
}

fn bars_svg(h: &History, bars: &[(usize, Option<usize>, String, &str)]) -> String {
    let t = |p: usize| {
        h.ops
            .get(p)
            .and_then(|o| o.time)
            .map_or(p as f64, |t| t as f64 / 1e6)
    };
    let procs: Vec<String> = {
        let mut v: Vec<String> = bars
            .iter()
            .filter_map(|b| h.ops.get(b.0).map(|o| o.process.to_string()))
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let lo = bars.iter().map(|b| t(b.0)).fold(f64::INFINITY, f64::min);
    let hi = bars
        .iter()
        .map(|b| b.1.map_or(t(b.0), t))
        .fold(f64::NEG_INFINITY, f64::max)
        .max(lo + 1e-3);
    let (w, lane) = (900.0, 34.0);
    let height = 30.0 + lane * procs.len() as f64;
    let x = |v: f64| 110.0 + (v - lo) / (hi - lo) * (w - 130.0);
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="lin" viewBox="0 0 {w} {height}" width="{w}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    for (i, p) in procs.iter().enumerate() {
        let _ = write!(
            s,
            r#"<text x="4" y="{:.1}">process {}</text>"#,
            30.0 + lane * i as f64 + 14.0,
            esc(p)
        );
    }
    for (inv, comp, label, color) in bars {
        let Some(op) = h.ops.get(*inv) else { continue };
        let lane_i = procs
            .iter()
            .position(|p| *p == op.process.to_string())
            .unwrap_or(0);
        let y = 30.0 + lane * lane_i as f64;
        let (a, b) = (x(t(*inv)), comp.map_or(w - 20.0, |c| x(t(c))));
        let _ = write!(
            s,
            r#"<g><rect x="{a:.1}" y="{y:.1}" width="{:.1}" height="18" fill="{color}" fill-opacity="0.75"/><text x="{:.1}" y="{:.1}">{}</text><title>{}</title></g>"#,
            (b - a).max(2.0),
            a + 2.0,
            y + 30.0,
            esc(&svg::short(label, 40)),
            esc(label)
        );
    }
    let _ = write!(
        s,
        r#"<text x="110" y="14">{:.1} ms</text><text x="{:.1}" y="14" text-anchor="end">{:.1} ms</text></svg>"#,
        lo,
        w - 20.0,
        hi
    );
    s
}

fn type_color(t: OpType) -> &'static str {
    match t {
        OpType::Ok => "#16a34a",
        OpType::Fail => "#dc2626",
        OpType::Info => "#d97706",
        OpType::Invoke => "#6b7280",
    }
}

/// Latency of every op against the time it was invoked, one series per function and outcome.
fn latency_plot(h: &History, windows: &[Window], x_range: Option<(f64, f64)>) -> String {
    let mut by: BTreeMap<(String, &'static str), Vec<(f64, f64)>> = BTreeMap::new();
    let pairs: Vec<(usize, usize)> = h
        .client_pairs()
        .filter_map(|(i, c)| c.map(|c| (i, c)))
        .collect();
    let oks = pairs.iter().filter(|(_, c)| h.ops[*c].is_ok()).count();
    let stride = oks.div_ceil(MAX_SCATTER_POINTS).max(1);
    let mut nth_ok = 0usize;
    for (i, c) in pairs {
        let (inv, comp) = (&h.ops[i], &h.ops[c]);
        let (Some(t0), Some(t1)) = (inv.time, comp.time) else {
            continue;
        };
        if comp.is_ok() {
            nth_ok += 1;
            if !nth_ok.is_multiple_of(stride) {
                continue;
            }
        }
        by.entry((inv.f.to_string(), comp.kind.as_str()))
            .or_default()
            .push((t0 as f64 / 1e9, (t1 - t0).max(1) as f64 / 1e6));
    }
    let shades = ["", "99", "66"];
    let fs: Vec<String> = {
        let mut v: Vec<String> = by.keys().map(|(f, _)| f.clone()).collect();
        v.dedup();
        v
    };
    let series: Vec<Series> = by
        .into_iter()
        .map(|((f, kind), points)| {
            let fi = fs.iter().position(|x| *x == f).unwrap_or(0);
            let t = OpType::parse(kind).unwrap_or(OpType::Ok);
            Series {
                name: format!("{f} {kind}"),
                color: format!("{}{}", type_color(t), shades[fi % 3]),
                points,
                line: false,
            }
        })
        .collect();
    let title = if stride > 1 {
        format!("Latency (every {stride}th ok op drawn; all fail and info)")
    } else {
        "Latency".to_string()
    };
    svg::plot(
        &Plot {
            title: &title,
            x_label: "time since start (s)",
            y_label: "latency (ms)",
            log_y: true,
            width: 1000.0,
            height: 340.0,
            x_range,
        },
        windows,
        &series,
    )
}

fn quantile_plot(perf: &PerfResult, windows: &[Window], x_range: Option<(f64, f64)>) -> String {
    let pick = |f: fn(&splitbrain_basic::common::Quantiles) -> f64| -> Vec<(f64, f64)> {
        perf.timeline
            .iter()
            .filter_map(|b| {
                b.latency_ms
                    .as_ref()
                    .map(|q| ((b.start_ms + perf.bucket_ms / 2.0) / 1000.0, f(q)))
            })
            .collect()
    };
    let series = vec![
        Series {
            name: "p50".into(),
            color: "#2563eb".into(),
            points: pick(|q| q.p50),
            line: true,
        },
        Series {
            name: "p95".into(),
            color: "#7c3aed".into(),
            points: pick(|q| q.p95),
            line: true,
        },
        Series {
            name: "p99".into(),
            color: "#db2777".into(),
            points: pick(|q| q.p99),
            line: true,
        },
        Series {
            name: "max".into(),
            color: "#111827".into(),
            points: pick(|q| q.max),
            line: true,
        },
    ];
    let title = format!("Latency quantiles per {:.0} ms", perf.bucket_ms);
    svg::plot(
        &Plot {
            title: &title,
            x_label: "time since start (s)",
            y_label: "latency (ms)",
            log_y: true,
            width: 1000.0,
            height: 300.0,
            x_range,
        },
        windows,
        &series,
    )
}

fn throughput_plot(perf: &PerfResult, windows: &[Window], x_range: Option<(f64, f64)>) -> String {
    let per_s = 1000.0 / perf.bucket_ms;
    let pick = |f: fn(&splitbrain_basic::perf::Bucket) -> usize| -> Vec<(f64, f64)> {
        perf.timeline
            .iter()
            .map(|b| {
                (
                    (b.start_ms + perf.bucket_ms / 2.0) / 1000.0,
                    f(b) as f64 * per_s,
                )
            })
            .collect()
    };
    let series = vec![
        Series {
            name: "ok".into(),
            color: type_color(OpType::Ok).into(),
            points: pick(|b| b.counts.ok),
            line: true,
        },
        Series {
            name: "fail".into(),
            color: type_color(OpType::Fail).into(),
            points: pick(|b| b.counts.fail),
            line: true,
        },
        Series {
            name: "info".into(),
            color: type_color(OpType::Info).into(),
            points: pick(|b| b.counts.info),
            line: true,
        },
    ];
    svg::plot(
        &Plot {
            title: "Throughput",
            x_label: "time since start (s)",
            y_label: "ops/s",
            log_y: false,
            width: 1000.0,
            height: 260.0,
            x_range,
        },
        windows,
        &series,
    )
}

fn availability_rows(perf: &PerfResult) -> Vec<AvailabilityRow> {
    let mut rows = Vec::new();
    let mut add = |phase: String, g: &splitbrain_basic::perf::PerfGroup| {
        rows.push(AvailabilityRow {
            phase,
            ops: g.counts.count,
            ok: g.counts.ok,
            fail: g.counts.fail,
            info: g.counts.info,
            availability: g
                .availability
                .map_or("-".into(), |a| format!("{:.1}%", a * 100.0)),
            latency_ms_p50: g
                .latency_ms
                .as_ref()
                .map_or("-".into(), |q| format!("{:.2}", q.p50)),
            latency_ms_p99: g
                .latency_ms
                .as_ref()
                .map_or("-".into(), |q| format!("{:.2}", q.p99)),
        })
    };
    add("all".into(), &perf.overall);
    for (phase, g) in &perf.per_phase {
        add(
            serde_json::to_value(phase)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            g,
        );
    }
    for w in &perf.windows {
        add(format!("during {}", w.window.label), &w.ops);
    }
    rows
}

/// The timeline's data, compact: lanes, times in ms, outcome codes, function
/// indices and short descriptions; the page draws only what is in view.
fn timeline_json(h: &History, perf: &PerfResult) -> String {
    let mut lanes: Vec<String> = Vec::new();
    let mut lane_of: BTreeMap<String, usize> = BTreeMap::new();
    let mut fs: Vec<String> = Vec::new();
    let (mut lane, mut t0, mut t1, mut kind, mut fi, mut text) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let end = end_ms(h);
    for (i, op) in h.ops.iter().enumerate() {
        if !op.is_invoke() || !op.is_client() {
            continue;
        }
        let p = op.process.to_string();
        let l = *lane_of.entry(p.clone()).or_insert_with(|| {
            lanes.push(p.clone());
            lanes.len() - 1
        });
        let c = h.completion(i).map(|c| &h.ops[c]);
        let f_idx = fs
            .iter()
            .position(|x| *x == op.f.as_str())
            .unwrap_or_else(|| {
                fs.push(op.f.to_string());
                fs.len() - 1
            });
        lane.push(l);
        fi.push(f_idx);
        t0.push(round2(op.time.unwrap_or(0) as f64 / 1e6));
        t1.push(round2(
            c.and_then(|c| c.time).map_or(end, |t| t as f64 / 1e6),
        ));
        kind.push(match c.map(|c| c.kind) {
            Some(OpType::Ok) => 0,
            Some(OpType::Fail) => 1,
            Some(OpType::Info) => 2,
            _ => 3,
        });
        let v = c.filter(|c| c.is_ok()).map_or(&op.value, |c| &c.value);
        let mut t = svg::short(&v.to_edn(), 48);
        if let Some(k) = &op.key {
            t = format!("key {} {t}", svg::short(&k.to_edn(), 12));
        }
        text.push(t);
    }
    let windows: Vec<(f64, f64, &str)> = perf
        .windows
        .iter()
        .map(|w| {
            (
                w.window.start_ms.unwrap_or(0.0),
                w.window.end_ms.unwrap_or(end),
                w.window.label.as_str(),
            )
        })
        .collect();
    let data = serde_json::json!({
        "lanes": lanes, "fs": fs, "f": fi, "lane": lane, "t0": t0, "t1": t1, "kind": kind, "text": text, "windows": windows, "end": end,
    });
    // Safe inside a <script> element.
    data.to_string().replace("</", "<\\/")
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// (Re)build `report.html` in a run directory from what it holds.
pub fn render_run(dir: &Path) -> anyhow::Result<PathBuf> {
    let history =
        History::read(&dir.join(HISTORY_FILE), None).map_err(|e| anyhow::anyhow!("{e}"))?;
    // A run of ours has a test.json, read typed; a history from elsewhere may have none.
    let test_path = dir.join(TEST_FILE);
    let test = if test_path.exists() {
        Some(TestOptions::read(&test_path).map_err(|e| anyhow::anyhow!("{e}"))?)
    } else {
        None
    };
    let results: Option<RunResults> = run_store::read_json(&dir.join(RESULTS_FILE)).ok();
    let mut files: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != REPORT_FILE && !n.ends_with(".tmp"))
        .collect();
    files.sort();
    let html = render(&ReportInput {
        test: test.as_ref(),
        history: &history,
        results: results.as_ref(),
        files,
    })?;
    let path = dir.join(REPORT_FILE);
    std::fs::write(&path, html).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The verdict's colour, shared by the report and the index.
pub fn verdict_class(v: Option<Verdict>) -> &'static str {
    match v {
        Some(Verdict::Valid) => "valid",
        Some(Verdict::Invalid) => "invalid",
        Some(Verdict::Unknown) => "unknown",
        None => "unchecked",
    }
}
