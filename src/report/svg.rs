//! Small SVG plots: axes with round ticks, points, lines, shaded fault
//! windows, and a drawing of a dependency cycle.

use std::fmt::Write;

pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Round tick positions covering [lo, hi].
pub fn ticks(lo: f64, hi: f64, want: usize) -> Vec<f64> {
    if hi <= lo || !lo.is_finite() || !hi.is_finite() {
        return vec![lo];
    }
    let raw = (hi - lo) / want.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 && out.len() < 100 {
        out.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
        t += step;
    }
    out
}

fn fmt_tick(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1000.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').to_string()
    }
}

pub struct Series {
    pub name: String,
    pub color: String,
    pub points: Vec<(f64, f64)>,
    /// Joined by a line rather than drawn as dots.
    pub line: bool,
}

pub struct Window {
    pub start: f64,
    pub end: f64,
    pub label: String,
}

pub struct Plot<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub log_y: bool,
    pub width: f64,
    pub height: f64,
    /// A fixed x range, so plots of one run line up.
    pub x_range: Option<(f64, f64)>,
}

const LEFT: f64 = 60.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 40.0;

/// A complete `<svg>` element.
pub fn plot(p: &Plot, windows: &[Window], series: &[Series]) -> String {
    let all = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for &(x, y) in all {
        if !x.is_finite() || !y.is_finite() || (p.log_y && y <= 0.0) {
            continue;
        }
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    for w in windows {
        x0 = x0.min(w.start);
        x1 = x1.max(w.end);
    }
    if !x0.is_finite() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if let Some((a, b)) = p.x_range {
        (x0, x1) = (a, b);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if !p.log_y {
        y0 = y0.min(0.0);
    }
    if y1 <= y0 {
        y1 = y0 + 1.0;
    }
    let (ly0, ly1) = if p.log_y {
        (
            y0.max(1e-3).log10().floor(),
            y1.log10().ceil().max(y0.max(1e-3).log10().floor() + 1.0),
        )
    } else {
        (y0, y1 * 1.05)
    };
    let pw = p.width - LEFT - RIGHT;
    let ph = p.height - TOP - BOTTOM;
    let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f64| {
        let v = if p.log_y { y.max(1e-3).log10() } else { y };
        TOP + ph - (v - ly0) / (ly1 - ly0) * ph
    };
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="plot" viewBox="0 0 {w} {h}" width="{w}" height="{h}" font-family="sans-serif" font-size="11">"#,
        w = p.width,
        h = p.height
    );
    let _ = write!(
        s,
        r#"<text x="{}" y="16" font-size="13" font-weight="bold">{}</text>"#,
        LEFT,
        esc(p.title)
    );
    for w in windows {
        let (a, b) = (sx(w.start), sx(w.end).max(sx(w.start) + 1.0));
        let _ = write!(
            s,
            r##"<g class="fault"><rect x="{a:.1}" y="{TOP}" width="{:.1}" height="{ph:.1}" fill="#f4a261" fill-opacity="0.18"/><text x="{:.1}" y="{:.1}" fill="#9c4a12" font-size="10">{}</text><title>{}</title></g>"##,
            b - a,
            a + 2.0,
            TOP + 10.0,
            esc(&short(&w.label, 24)),
            esc(&w.label)
        );
    }
    // Axes and grid.
    let _ = write!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw:.1}" height="{ph:.1}" fill="none" stroke="#999"/>"##
    );
    for t in ticks(x0, x1, 8) {
        let x = sx(t);
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP,
            TOP + ph,
            TOP + ph + 14.0,
            fmt_tick(t)
        );
    }
    let yticks: Vec<f64> = if p.log_y {
        (ly0 as i32..=ly1 as i32).map(|e| 10f64.powi(e)).collect()
    } else {
        ticks(ly0, ly1, 6)
    };
    for t in yticks {
        let y = sy(t);
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + pw,
            LEFT - 4.0,
            y + 4.0,
            fmt_tick(t)
        );
    }
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        LEFT + pw / 2.0,
        p.height - 6.0,
        esc(p.x_label)
    );
    let _ = write!(
        s,
        r#"<text transform="translate(14 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        TOP + ph / 2.0,
        esc(p.y_label)
    );
    for (i, se) in series.iter().enumerate() {
        let pts = se
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite() && (!p.log_y || *y > 0.0));
        if se.line {
            let d: Vec<String> = pts
                .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
                .collect();
            if !d.is_empty() {
                let _ = write!(
                    s,
                    r#"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"#,
                    se.color,
                    d.join(" ")
                );
            }
        } else {
            // One path of tiny squares: far lighter than a circle per point.
            let mut d = String::new();
            for &(x, y) in pts {
                let _ = write!(d, "M{:.1} {:.1}h2v2h-2z", sx(x) - 1.0, sy(y) - 1.0);
            }
            let _ = write!(s, r#"<path fill="{}" d="{d}"/>"#, se.color);
        }
        let ly = TOP + 14.0 * i as f64 + 6.0;
        let _ = write!(
            s,
            r#"<rect x="{:.1}" y="{:.1}" width="10" height="10" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            LEFT + pw + 10.0,
            ly,
            se.color,
            LEFT + pw + 24.0,
            ly + 9.0,
            esc(&short(&se.name, 20))
        );
    }
    s.push_str("</svg>");
    s
}

pub fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// A cycle of transactions: nodes on a circle, one labelled arrow per step.
pub fn cycle(nodes: &[String], edges: &[(usize, usize, String)]) -> String {
    let n = nodes.len().max(1);
    let r = 70.0 + 28.0 * n as f64;
    let size = 2.0 * r + 220.0;
    let c = size / 2.0;
    let pos: Vec<(f64, f64)> = (0..n)
        .map(|i| {
            let a = std::f64::consts::TAU * i as f64 / n as f64 - std::f64::consts::FRAC_PI_2;
            (c + r * a.cos(), c + r * a.sin())
        })
        .collect();
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" class="cycle" viewBox="0 0 {size:.0} {size:.0}" width="{size:.0}" height="{size:.0}" font-family="sans-serif" font-size="11"><defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse"><path d="M0 0L10 5L0 10z" fill="#333"/></marker></defs>"##
    );
    for (from, to, label) in edges {
        let (Some(&(x1, y1)), Some(&(x2, y2))) = (pos.get(*from), pos.get(*to)) else {
            continue;
        };
        // Bend each arrow outward so two arrows between a pair do not overlap.
        let (mx, my) = ((x1 + x2) / 2.0, (y1 + y2) / 2.0);
        let (dx, dy) = (mx - c, my - c);
        let len = (dx * dx + dy * dy).sqrt().max(1.0);
        let bend = if from == to { 60.0 } else { 30.0 };
        let (qx, qy) = (mx + dx / len * bend, my + dy / len * bend);
        // Stop short of the node's box.
        let (ex, ey) = (x2 - qx, y2 - qy);
        let el = (ex * ex + ey * ey).sqrt().max(1.0);
        let (tx, ty) = (x2 - ex / el * 30.0, y2 - ey / el * 16.0);
        let color = edge_color(label);
        let _ = write!(
            s,
            r##"<path class="edge" d="M{x1:.1} {y1:.1} Q{qx:.1} {qy:.1} {tx:.1} {ty:.1}" fill="none" stroke="{color}" stroke-width="1.6" marker-end="url(#arrow)"/><text x="{:.1}" y="{:.1}" text-anchor="middle" fill="{color}">{}</text>"##,
            qx,
            qy,
            esc(&short(label, 40))
        );
    }
    for (i, (x, y)) in pos.iter().enumerate() {
        let name = nodes.get(i).map_or("", String::as_str);
        let _ = write!(
            s,
            r##"<g class="node"><rect x="{:.1}" y="{:.1}" width="60" height="28" rx="6" fill="#fff" stroke="#333"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" font-weight="bold">{}</text></g>"##,
            x - 30.0,
            y - 14.0,
            y + 4.0,
            esc(&short(name, 9))
        );
    }
    s.push_str("</svg>");
    s
}

fn edge_color(label: &str) -> &'static str {
    let l = label.to_ascii_lowercase();
    if l.starts_with("ww") {
        "#1d4ed8"
    } else if l.starts_with("wr") {
        "#15803d"
    } else if l.starts_with("rw") {
        "#b91c1c"
    } else if l.starts_with("realtime") || l.starts_with("rt") {
        "#7c3aed"
    } else {
        "#555"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        assert_eq!(ticks(0.0, 10.0, 5), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(
            ticks(0.13, 0.52, 4),
            vec![0.2, 0.30000000000000004, 0.4, 0.5]
        );
    }

    #[test]
    fn plots_and_cycles_are_well_formed() {
        let p = Plot {
            title: "latency <ms>",
            x_label: "s",
            y_label: "ms",
            log_y: true,
            width: 600.0,
            height: 300.0,
            x_range: None,
        };
        let svg = plot(
            &p,
            &[Window {
                start: 1.0,
                end: 2.0,
                label: "start-partition majority".into(),
            }],
            &[Series {
                name: "ok".into(),
                color: "#0a0".into(),
                points: vec![(0.5, 1.0), (1.5, 30.0), (2.5, 0.0)],
                line: false,
            }],
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("latency &lt;ms&gt;"));
        assert!(svg.contains("class=\"fault\""));
        let c = cycle(
            &["T1".into(), "T2".into()],
            &[(0, 1, "ww 3".into()), (1, 0, "rw 3".into())],
        );
        assert_eq!(c.matches("class=\"edge\"").count(), 2);
        assert_eq!(c.matches("class=\"node\"").count(), 2);
    }
}
