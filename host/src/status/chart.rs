//! Line charts as plain SVG, drawn on the server: the page needs no script and
//! no third-party files.

use maud::{html, Markup};

const WIDTH: f64 = 520.0;
const HEIGHT: f64 = 150.0;
/// Room for the y-axis labels on the left and the x-axis labels below.
const LEFT: f64 = 64.0;
const BOTTOM: f64 = 20.0;
const TOP: f64 = 8.0;

/// A line chart of `points` (`(epoch seconds, value)`, oldest first), the x
/// axis ending now; `id` names the SVG for tests and links.
pub(super) fn line_chart(id: &str, points: &[(f64, f64)], unit: &str) -> Markup {
    let (first, last) = match (points.first(), points.last()) {
        (Some(first), Some(last)) => (first.0, last.0),
        _ => return html! { p.empty id=(id) { "no samples yet" } },
    };
    let span = (last - first).max(1.0);
    let top = nice_ceiling(points.iter().map(|p| p.1).fold(0.0, f64::max));
    let plot_w = WIDTH - LEFT - 4.0;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |t: f64| LEFT + (t - first) / span * plot_w;
    let y = |v: f64| TOP + plot_h - (v / top).clamp(0.0, 1.0) * plot_h;
    let line: String = points.iter().map(|&(t, v)| format!("{:.1},{:.1} ", x(t), y(v))).collect();
    let span_label =
        if span >= 120.0 { format!("-{:.0} min", span / 60.0) } else { format!("-{span:.0} s") };
    html! {
        svg id=(id) class="chart" xmlns="http://www.w3.org/2000/svg" width=(WIDTH) height=(HEIGHT)
            viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" {
            line x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(TOP + plot_h) class="axis" {}
            line x1=(LEFT) y1=(TOP + plot_h) x2=(WIDTH - 4.0) y2=(TOP + plot_h) class="axis" {}
            text x=(LEFT - 6.0) y=(TOP + 10.0) text-anchor="end" { (compact(top)) " " (unit) }
            text x=(LEFT - 6.0) y=(TOP + plot_h) text-anchor="end" { "0" }
            text x=(LEFT) y=(HEIGHT - 4.0) { (span_label) }
            text x=(WIDTH - 4.0) y=(HEIGHT - 4.0) text-anchor="end" { "now" }
            polyline points=(line) class="series" {}
        }
    }
}

/// The smallest of 1, 2 or 5 times a power of ten at or above `value` (and 1
/// for nothing), so the axis reads in round numbers.
fn nice_ceiling(value: f64) -> f64 {
    if value.is_nan() || value <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|step| step * magnitude)
        .find(|&ceiling| ceiling >= value)
        .unwrap_or(10.0 * magnitude)
}

/// `1500` as `1.5k`, `2000000` as `2M`.
pub(super) fn compact(value: f64) -> String {
    let (scaled, suffix) = match value.abs() {
        v if v >= 1e9 => (value / 1e9, "G"),
        v if v >= 1e6 => (value / 1e6, "M"),
        v if v >= 1e3 => (value / 1e3, "k"),
        _ => (value, ""),
    };
    let digits = if scaled.fract().abs() < 1e-9 { 0 } else { 1 };
    format!("{scaled:.digits$}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_end_on_round_numbers() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(1234.0), 2000.0);
        assert_eq!(nice_ceiling(50.0), 50.0);
        assert_eq!(compact(1500.0), "1.5k");
        assert_eq!(compact(2_000_000.0), "2M");
        assert_eq!(compact(12.0), "12");
    }

    #[test]
    fn a_chart_has_one_point_per_sample_inside_the_frame() {
        let points: Vec<(f64, f64)> = (0..60).map(|i| (f64::from(i), f64::from(i % 7))).collect();
        let svg = line_chart("c", &points, "events/s").into_string();
        let polyline = svg.split("points=\"").nth(1).and_then(|s| s.split('"').next()).unwrap();
        let xy: Vec<(f64, f64)> = polyline
            .split_whitespace()
            .map(|p| {
                let (x, y) = p.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect();
        assert_eq!(xy.len(), 60);
        assert!(xy
            .iter()
            .all(|&(x, y)| (LEFT..=WIDTH).contains(&x) && (0.0..=HEIGHT).contains(&y)));
        assert!(svg.contains("10 events/s"), "{svg}");
    }
}
