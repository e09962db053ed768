//! Small SVG charts for reports: a line chart (validation metric per epoch)
//! and a bar chart (recall per candidate source). Plain SVG text: any
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
    let max = if max > 0.0 { max * 1.1 } else { 1.0 };
    let y = move |v: f64| H - BOTTOM - v / max * (H - BOTTOM - TOP);
    let mut s = String::new();
    for i in 0..=5 {
        let v = max * i as f64 / 5.0;
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
    let mut s = frame(title, y_label);
    let pts = series.iter().flat_map(|(_, p)| p.iter());
    let (x_min, x_max, y_max) = pts.fold((f64::MAX, f64::MIN, 0.0f64), |(a, b, c), &(x, y)| {
        (a.min(x), b.max(x), c.max(y))
    });
    let (x_min, x_max) = if x_min > x_max {
        (0.0, 1.0)
    } else {
        (x_min, x_max.max(x_min + 1.0))
    };
    let x = |v: f64| LEFT + (v - x_min) / (x_max - x_min) * (W - LEFT - RIGHT);
    let (ticks, y) = y_axis(y_max);
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
}
