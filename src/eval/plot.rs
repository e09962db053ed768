//! Small SVG charts for reports: line charts (a metric per epoch, with the
//! selected epoch marked), several of them as panels of one figure, a bar
//! chart (recall per candidate source, a metric across runs) and a forest
//! chart (A/B differences with their intervals). Plain SVG text: any
//! browser or Markdown viewer shows it, and no plotting stack is built.

const W: f64 = 640.0;
const H: f64 = 360.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn frame(title: &str, y_label: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"12\">\n\
<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n\
<text x=\"16\" y=\"{}\" transform=\"rotate(-90 16 {})\" text-anchor=\"middle\">{}</text>\n\
<line x1=\"{LEFT}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n\
<line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{}\" stroke=\"black\"/>\n",
        W / 2.0,
        escape(title),
        H / 2.0,
        H / 2.0,
        escape(y_label),
        H - BOTTOM,
        W - RIGHT,
        H - BOTTOM,
        H - BOTTOM,
    )
}

/// y ticks from 0 to `max` (5 of them), with grid lines.
fn y_axis(max: f64) -> (String, impl Fn(f64) -> f64) {
    y_axis_between(0.0, if max > 0.0 { max * 1.1 } else { 1.0 })
}

/// y ticks from `lo` to `hi` (5 of them), with grid lines.
fn y_axis_between(lo: f64, hi: f64) -> (String, impl Fn(f64) -> f64) {
    let span = (hi - lo).max(1e-12);
    let y = move |v: f64| H - BOTTOM - (v - lo) / span * (H - BOTTOM - TOP);
    let mut s = String::new();
    for i in 0..=5 {
        let v = lo + span * i as f64 / 5.0;
        s += &format!(
            "<line x1=\"{LEFT}\" y1=\"{0:.1}\" x2=\"{1}\" y2=\"{0:.1}\" stroke=\"#ddd\"/>\n\
<text x=\"{2}\" y=\"{3:.1}\" text-anchor=\"end\">{v:.3}</text>\n",
            y(v),
            W - RIGHT,
            LEFT - 6.0,
            y(v) + 4.0
        );
    }
    (s, y)
}

/// One line per series of (x, y) points, x labelled `x_label`.
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> String {
    marked_line_chart(title, x_label, y_label, series, None, YScale::FromZero)
}

/// Where a line chart's y axis starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum YScale {
    /// At zero: differences between metrics keep their true proportion.
    FromZero,
    /// Around the data: a loss falling from 7.9 to 6.3 is not a flat line.
    Fit,
}

/// A line chart with a dashed vertical line at `mark` (e.g. the selected
/// epoch), labelled with the mark's name.
pub fn marked_line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
    mark: Option<(f64, &str)>,
    scale: YScale,
) -> String {
    let mut s = frame(title, y_label);
    let pts = series.iter().flat_map(|(_, p)| p.iter());
    let (x_min, x_max, y_min, y_max) = pts.fold(
        (f64::MAX, f64::MIN, f64::MAX, 0.0f64),
        |(a, b, lo, c), &(x, y)| (a.min(x), b.max(x), lo.min(y), c.max(y)),
    );
    let (x_min, x_max) = if x_min > x_max {
        (0.0, 1.0)
    } else {
        (x_min, x_max.max(x_min + 1.0))
    };
    let x = |v: f64| LEFT + (v - x_min) / (x_max - x_min) * (W - LEFT - RIGHT);
    let (lo, hi) = match scale {
        YScale::Fit if y_min <= y_max => {
            let pad = ((y_max - y_min) * 0.1).max(y_max.abs() * 1e-3).max(1e-9);
            (y_min - pad, y_max + pad)
        }
        _ => (0.0, if y_max > 0.0 { y_max * 1.1 } else { 1.0 }),
    };
    let (ticks, y) = y_axis_between(lo, hi);
    s += &ticks;
    let mut v = x_min;
    while v <= x_max + 1e-9 {
        s += &format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{v}</text>\n",
            x(v),
            H - BOTTOM + 16.0
        );
        v += ((x_max - x_min) / 10.0).ceil().max(1.0);
    }
    s += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
        (LEFT + W - RIGHT) / 2.0,
        H - BOTTOM + 34.0,
        escape(x_label)
    );
    if let Some((at, label)) = mark
        && (x_min..=x_max).contains(&at)
    {
        s += &format!(
            "<line x1=\"{0:.1}\" y1=\"{TOP}\" x2=\"{0:.1}\" y2=\"{1}\" stroke=\"#555\" stroke-dasharray=\"5,4\"/>\n\
<text x=\"{2:.1}\" y=\"{3}\" fill=\"#555\" text-anchor=\"{5}\">{4}</text>\n",
            x(at),
            H - BOTTOM,
            // Left of the line in the chart's right half, so it is not cut off.
            if x(at) > W / 2.0 {
                x(at) - 4.0
            } else {
                x(at) + 4.0
            },
            TOP + 10.0,
            escape(label),
            if x(at) > W / 2.0 { "end" } else { "start" },
        );
    }
    for (i, (name, p)) in series.iter().enumerate() {
        let c = COLOURS[i % COLOURS.len()];
        let path: Vec<String> = p
            .iter()
            .map(|&(a, b)| format!("{:.1},{:.1}", x(a), y(b)))
            .collect();
        s += &format!(
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/>\n",
            path.join(" ")
        );
        for &(a, b) in p {
            s += &format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{c}\"/>\n",
                x(a),
                y(b)
            );
        }
        s += &format!(
            "<text x=\"{}\" y=\"{}\" fill=\"{c}\">{}</text>\n",
            LEFT + 10.0,
            TOP + 14.0 + 16.0 * i as f64,
            escape(name)
        );
    }
    s + "</svg>\n"
}

/// Charts made by the functions above, as panels of one figure, `columns`
/// to a row: each keeps its own axes, so curves of different scales (a loss
/// and a MAP@12) are not flattened onto one.
pub fn panels(title: &str, charts: &[String], columns: usize) -> String {
    let columns = columns.clamp(1, charts.len().max(1));
    let rows = charts.len().div_ceil(columns);
    let head = 30.0;
    let (w, h) = (W * columns as f64, head + H * rows as f64);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
<text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"16\">{}</text>\n",
        w / 2.0,
        escape(title)
    );
    for (i, chart) in charts.iter().enumerate() {
        let (x, y) = ((i % columns) as f64 * W, head + (i / columns) as f64 * H);
        // A nested <svg> places a whole chart; its own xmlns is harmless.
        s += &chart.replacen("<svg ", &format!("<svg x=\"{x}\" y=\"{y}\" "), 1);
    }
    s + "</svg>\n"
}

/// One row of a forest chart: an estimate and its interval.
#[derive(Debug, Clone)]
pub struct ForestRow {
    pub label: String,
    pub estimate: f64,
    pub low: f64,
    pub high: f64,
    /// Shown at the row's right (e.g. the absolute values).
    pub note: String,
}

/// A forest chart: one row per estimate with its interval as a bar, on one
/// horizontal axis labelled `x_label`, and a line at zero.
pub fn forest_chart(title: &str, x_label: &str, rows: &[ForestRow]) -> String {
    let row_h = 28.0;
    let (left, right) = (130.0, 260.0);
    let h = TOP + 50.0 + row_h * rows.len() as f64;
    let finite = |v: f64| v.is_finite().then_some(v);
    let (lo, hi) = rows
        .iter()
        .flat_map(|r| [finite(r.low), finite(r.high), finite(r.estimate)])
        .flatten()
        .fold((0.0f64, 0.0f64), |(a, b), v| (a.min(v), b.max(v)));
    let pad = ((hi - lo) * 0.08).max(1e-12);
    let (lo, hi) = (lo - pad, hi + pad);
    let x = |v: f64| left + (v - lo) / (hi - lo) * (W - left - right);
    let bottom = h - 40.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
<text x=\"{mid}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{title}</text>\n\
<line x1=\"{left}\" y1=\"{bottom}\" x2=\"{end}\" y2=\"{bottom}\" stroke=\"black\"/>\n\
<line x1=\"{zero:.1}\" y1=\"{TOP}\" x2=\"{zero:.1}\" y2=\"{bottom}\" stroke=\"#888\" stroke-dasharray=\"4,3\"/>\n",
        mid = W / 2.0,
        title = escape(title),
        zero = x(0.0),
        end = W - right,
    );
    for i in 0..=4 {
        let v = lo + (hi - lo) * i as f64 / 4.0;
        s += &format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            x(v),
            bottom + 16.0,
            tick(v, hi - lo)
        );
    }
    s += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
        (left + W - right) / 2.0,
        bottom + 32.0,
        escape(x_label)
    );
    for (i, r) in rows.iter().enumerate() {
        let y = TOP + 20.0 + row_h * i as f64;
        s += &format!(
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n<text x=\"{}\" y=\"{:.1}\">{}</text>\n",
            left - 8.0,
            y + 4.0,
            escape(&r.label),
            W - right + 8.0,
            y + 4.0,
            escape(&r.note)
        );
        if [r.low, r.high, r.estimate].iter().all(|v| v.is_finite()) {
            // An interval that excludes zero is drawn in colour.
            let c = if r.low > 0.0 || r.high < 0.0 {
                COLOURS[0]
            } else {
                "#999"
            };
            s += &format!(
                "<line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{c}\" stroke-width=\"3\"/>\n\
<rect x=\"{:.1}\" y=\"{:.1}\" width=\"8\" height=\"8\" fill=\"{c}\"/>\n",
                x(r.low),
                x(r.high),
                x(r.estimate) - 4.0,
                y - 4.0
            );
        }
    }
    s + "</svg>\n"
}

/// An axis label with as many decimals as the axis' span needs.
fn tick(v: f64, span: f64) -> String {
    let decimals = (-(span.abs().max(1e-12)).log10()).ceil().clamp(0.0, 8.0) as usize + 1;
    format!("{v:.decimals$}")
}

/// One bar per (label, value).
pub fn bar_chart(title: &str, y_label: &str, bars: &[(String, f64)]) -> String {
    let mut s = frame(title, y_label);
    let max = bars.iter().map(|b| b.1).fold(0.0, f64::max);
    let (ticks, y) = y_axis(max);
    s += &ticks;
    let n = bars.len().max(1) as f64;
    let slot = (W - LEFT - RIGHT) / n;
    for (i, (label, v)) in bars.iter().enumerate() {
        let x0 = LEFT + slot * i as f64 + slot * 0.15;
        s += &format!(
            "<rect x=\"{x0:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"/>\n\
<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{v:.3}</text>\n\
<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            y(*v),
            slot * 0.7,
            (H - BOTTOM - y(*v)).max(0.0),
            COLOURS[i % COLOURS.len()],
            x0 + slot * 0.35,
            y(*v) - 4.0,
            x0 + slot * 0.35,
            H - BOTTOM + 16.0,
            escape(label)
        );
    }
    s + "</svg>\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg_with_every_point_and_bar() {
        let l = line_chart(
            "valid",
            "epoch",
            "MAP@12",
            &[("a<b".into(), vec![(1.0, 0.1), (2.0, 0.2), (3.0, 0.15)])],
        );
        assert!(l.starts_with("<svg") && l.trim_end().ends_with("</svg>"));
        assert_eq!(l.matches("<circle").count(), 3);
        assert!(l.contains("a&lt;b"));
        let b = bar_chart("recall", "share", &[("x".into(), 0.5), ("y".into(), 0.25)]);
        assert_eq!(b.matches("<rect x=").count(), 2);
    }

    #[test]
    fn the_marked_epoch_panels_and_forest_rows_are_drawn() {
        let pts = vec![(1.0, 0.1), (2.0, 0.2), (3.0, 0.15)];
        let marked = marked_line_chart(
            "v",
            "epoch",
            "m",
            &[("a".into(), pts.clone())],
            Some((2.0, "selected")),
            YScale::FromZero,
        );
        assert_eq!(marked.matches("stroke-dasharray").count(), 1);
        assert!(marked.contains(">selected<"));
        // A mark outside the x range is left out rather than drawn off the frame.
        let off = marked_line_chart(
            "v",
            "epoch",
            "m",
            &[("a".into(), pts)],
            Some((9.0, "selected")),
            YScale::Fit,
        );
        assert!(!off.contains("selected"));
        let fig = panels("run", &[marked.clone(), off, marked], 2);
        assert_eq!(
            fig.matches("<svg").count(),
            4,
            "the figure and its three panels"
        );
        assert!(
            fig.contains("height=\"750\""),
            "two rows of panels below the title"
        );
        let rows = [
            ForestRow {
                label: "MAP@12".into(),
                estimate: 0.01,
                low: 0.005,
                high: 0.015,
                note: String::new(),
            },
            ForestRow {
                label: "Recall@12".into(),
                estimate: 0.0,
                low: -0.01,
                high: 0.01,
                note: String::new(),
            },
        ];
        let f = forest_chart("B − A", "difference", &rows);
        assert_eq!(f.matches("stroke-width=\"3\"").count(), 2);
        assert!(
            f.contains(COLOURS[0]) && f.contains("#999"),
            "only an interval excluding 0 is coloured"
        );
    }
}
