//! The matrix page: one self-contained HTML file with a PACELC table (one
//! row per mode configuration of the claims table) and each claim with its
//! evidence, every cell linking to the seed or run that shows it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use splitbrain_history::Verdict;
use splitbrain_store::claims::{Claim, Expect};

use super::claims::ClaimResult;
use super::SimStats;

/// One run of a row on real processes.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RealRun {
    pub seed: u64,
    pub verdict: Option<Verdict>,
    pub anomalies: Vec<String>,
    pub report: Option<PathBuf>,
    /// Whether the run shows what the row is about (its anomaly, or any for a `Never` row).
    pub shows: bool,
    /// Whether it contradicts the row.
    pub contradicts: bool,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |x| format!("{:.0}%", x * 100.0))
}

/// Median over seeds of a per-seed figure.
fn median(mut xs: Vec<u64>) -> Option<u64> {
    xs.sort_unstable();
    xs.get(xs.len() / 2).copied()
}

fn seed_link(claim: &Claim, seed: u64, out: &Path) -> String {
    let rel = format!("seeds/{}/seed-{seed}.jsonl", claim.id);
    let exists = out.join(&rel).exists();
    if exists {
        format!("<a href=\"{}\">seed {seed}</a>", esc(&rel))
    } else {
        format!("seed {seed}")
    }
}

/// The page for `results`, written under `out` (links are relative to it).
pub fn render(
    results: &[(&Claim, ClaimResult, Vec<RealRun>)],
    elapsed_s: f64,
    out: &Path,
) -> String {
    let broken: Vec<&str> = results
        .iter()
        .filter(|(_, r, real)| !r.holds || real.iter().any(|x| x.contradicts))
        .map(|(c, _, _)| c.id)
        .collect();
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>splitbrain matrix</title><style>\
body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}\
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top;font-size:14px}}\
th{{background:#f3f3f3}}.ok{{background:#e6f6e6}}.bad{{background:#f9d6d6}}.banner{{padding:1em;font-size:18px}}\
code{{font-size:12px}}</style></head><body>"
    );
    let _ = write!(
        h,
        "<div class=\"banner {}\">{}</div>",
        if broken.is_empty() { "ok" } else { "bad" },
        if broken.is_empty() {
            format!(
                "Every claim holds ({} rows, {elapsed_s:.0} s).",
                results.len()
            )
        } else {
            format!(
                "{} of {} claims do not hold: {}",
                broken.len(),
                results.len(),
                esc(&broken.join(", "))
            )
        }
    );
    h.push_str("<h2>PACELC: one row per configuration</h2>");
    h.push_str(
        "<p>Availability is the share of client ops the store served (ok, or a compare-and-set \
refused for its precondition) among those invoked inside and outside fault windows: the PA/PC \
side. Latency of served ops and convergence after the heal are the Else side. Figures are \
medians over the simulated seeds.</p>",
    );
    h.push_str(
        "<table><tr><th>configuration</th><th>nodes</th><th>workload</th><th>faults</th>\
<th>anomalies seen</th><th>claims held</th><th>available in faults</th><th>available outside</th>\
<th>latency p50 / p99 (ms)</th><th>convergence after heal (ms)</th></tr>",
    );
    for (claim, r, _) in results {
        let seeds = &r.seeds;
        // Medians of shares, taken in millionths.
        let share = |of: fn(&SimStats) -> Option<f64>| {
            median(
                seeds
                    .iter()
                    .filter_map(|s| of(&s.stats))
                    .map(|x| (x * 1e6) as u64)
                    .collect(),
            )
            .map(|x| x as f64 / 1e6)
        };
        let in_faults = share(SimStats::availability_in_faults);
        let outside = share(SimStats::availability_outside_faults);
        let p50 = median(seeds.iter().map(|s| s.stats.latency_ms_p50).collect());
        let p99 = median(seeds.iter().map(|s| s.stats.latency_ms_p99).collect());
        let conv: Vec<u64> = seeds
            .iter()
            .filter_map(|s| s.stats.convergence_ms)
            .collect();
        let not_converged = seeds.len() - conv.len();
        let anomalies = r.anomalies_seen();
        let anomaly_cell = if anomalies.is_empty() {
            "none".to_string()
        } else {
            anomalies
                .iter()
                .map(|a| {
                    let first = seeds
                        .iter()
                        .find(|s| s.anomalies.contains(a))
                        .map(|s| s.seed);
                    let count = seeds.iter().filter(|s| s.anomalies.contains(a)).count();
                    match first {
                        Some(seed) => format!(
                            "{} ({count}/{}; {})",
                            esc(a),
                            seeds.len(),
                            seed_link(claim, seed, out)
                        ),
                        None => esc(a),
                    }
                })
                .collect::<Vec<_>>()
                .join("<br>")
        };
        let _ = write!(
            h,
            "<tr class=\"{}\"><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
<td><a href=\"#{}\">{}</a></td><td>{}</td><td>{}</td><td>{} / {}</td><td>{}</td></tr>",
            if r.holds { "ok" } else { "bad" },
            esc(&claim.cluster.replace('\n', "; ")),
            claim.nodes,
            esc(claim.workload),
            esc(&if claim.faults.is_empty() {
                "none".to_string()
            } else {
                claim.faults.join(", ")
            }),
            anomaly_cell,
            esc(claim.id),
            if r.holds { "held" } else { "DOES NOT HOLD" },
            pct(in_faults),
            pct(outside),
            p50.map_or("-".into(), |x| x.to_string()),
            p99.map_or("-".into(), |x| x.to_string()),
            match (median(conv), not_converged) {
                (Some(m), 0) => m.to_string(),
                (Some(m), n) => format!("{m} ({n} seeds never)"),
                (None, _) => "never, or not measured".into(),
            }
        );
    }
    h.push_str("</table><h2>Claims</h2>");
    h.push_str("<table><tr><th>claim</th><th>expected</th><th>simulation</th><th>real processes</th><th>source</th></tr>");
    for (claim, r, real) in results {
        let expected = match claim.expect {
            Expect::Appears(a) => format!("<b>{}</b> appears in some seed", esc(a)),
            Expect::Never => "no anomaly in any seed".into(),
        };
        let sim = format!(
            "{} over {} seeds ({} ops, {:.1} s){}{}",
            if r.holds {
                "holds"
            } else {
                "<b>does not hold</b>"
            },
            r.seeds.len(),
            r.ops,
            r.elapsed_s,
            r.witness
                .map(|s| format!("; shown by {}", seed_link(claim, s, out)))
                .unwrap_or_default(),
            r.problem
                .as_ref()
                .map(|p| format!("; {}", esc(p)))
                .unwrap_or_default()
        );
        let real_cell = if real.is_empty() {
            "not run (--real)".to_string()
        } else {
            real.iter()
                .map(|x| {
                    let what = format!(
                        "seed {}: {} {}",
                        x.seed,
                        x.verdict.map_or("no result", Verdict::as_str),
                        esc(&x.anomalies.join(" "))
                    );
                    let what = match &x.report {
                        Some(p) => format!(
                            "<a href=\"file://{}\">{what}</a>",
                            esc(&p.display().to_string())
                        ),
                        None => what,
                    };
                    if x.contradicts {
                        format!("<b>{what} (contradicts)</b>")
                    } else {
                        what
                    }
                })
                .collect::<Vec<_>>()
                .join("<br>")
        };
        let bad = !r.holds || real.iter().any(|x| x.contradicts);
        let _ = write!(
            h,
            "<tr id=\"{}\" class=\"{}\"><td><b>{}</b><br>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(claim.id),
            if bad { "bad" } else { "ok" },
            esc(claim.id),
            esc(claim.statement),
            expected,
            sim,
            real_cell,
            esc(claim.source)
        );
    }
    h.push_str("</table><p>Replay any seed: <code>splitbrain sim --claim ID --seed N</code>.</p></body></html>");
    h
}
