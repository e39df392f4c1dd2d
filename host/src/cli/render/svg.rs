//! Inline SVG bar charts for the HTML reports.
//!
//! Charts are plain SVG markup meant to sit inside an HTML page, so the
//! root `<svg>` carries no `xmlns` (the HTML parser supplies the SVG
//! namespace), which also keeps every `http://` out of the page. All text
//! (titles, labels, units, tooltips) is escaped with
//! [`super::html::escape`], and the result is wrapped in [`Svg`], which
//! only this module can construct, so [`super::html::Page::svg`] can embed
//! it verbatim without becoming an injection point.
//!
//! Values that are negative, NaN or infinite are drawn as zero. The value
//! axis starts at zero and ends at a "nice" number (1, 2 or 5 times a power
//! of ten per tick), with at least 1 per tick when every value is a whole
//! number, so task counts never get ticks like 0.5.

use std::fmt::Write as _;

use super::html::escape;
use super::terminal::thousands;

/// Finished SVG markup; see the module docs for why it is a newtype.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Svg(String);

impl Svg {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

const SERIES_A_COLOUR: &str = "#4e79a7";
const SERIES_B_COLOUR: &str = "#f28e2b";
const AXIS_COLOUR: &str = "#57606a";
const GRID_COLOUR: &str = "#d8dee4";

const MARGIN_TOP: f64 = 40.0;
const MARGIN_RIGHT: f64 = 16.0;
const MARGIN_BOTTOM: f64 = 36.0;
const MARGIN_LEFT: f64 = 64.0;
/// Rough advance of one character at the 11px label size; used only to
/// decide how many axis labels fit.
const CHAR_PX: f64 = 6.5;

/// A bar chart of `bars` (label, value) with `unit` naming the value axis.
/// `width` and `height` are the SVG's size in pixels; charts scale down to
/// the page width.
pub fn bar_chart(title: &str, bars: &[(String, f64)], unit: &str, width: u32, height: u32) -> Svg {
    let labels: Vec<&str> = bars.iter().map(|(label, _)| label.as_str()).collect();
    let values: Vec<f64> = bars.iter().map(|(_, v)| clean(*v)).collect();
    let frame = Frame::new(width, height, &values, integral(&values));

    let mut out = frame.open(title, unit);
    for (i, (label, value)) in labels.iter().zip(&values).enumerate() {
        let tip = format!("{label}: {}", with_unit(*value, unit));
        frame.bar(&mut out, i, 0.0, *value, SERIES_A_COLOUR, &tip);
    }
    frame.close(out, &labels, &[])
}

/// A stacked bar chart: for each label, `series_a` at the bottom and
/// `series_b` on top, e.g. input and output tokens per day. Each series is
/// `(name, values)`; a series shorter than `labels` counts as zero for the
/// missing entries and extra values are ignored.
pub fn stacked_bars(
    title: &str,
    labels: &[String],
    series_a: (&str, &[f64]),
    series_b: (&str, &[f64]),
    unit: &str,
    width: u32,
    height: u32,
) -> Svg {
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    let value = |series: &[f64], i: usize| clean(series.get(i).copied().unwrap_or(0.0));
    let a: Vec<f64> = (0..labels.len()).map(|i| value(series_a.1, i)).collect();
    let b: Vec<f64> = (0..labels.len()).map(|i| value(series_b.1, i)).collect();
    let sums: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    let frame = Frame::new(width, height, &sums, integral(&a) && integral(&b));

    let mut out = frame.open(title, unit);
    for (i, label) in labels.iter().enumerate() {
        let tip_a = format!("{label} {}: {}", series_a.0, with_unit(a[i], unit));
        let tip_b = format!("{label} {}: {}", series_b.0, with_unit(b[i], unit));
        frame.bar(&mut out, i, 0.0, a[i], SERIES_A_COLOUR, &tip_a);
        frame.bar(&mut out, i, a[i], b[i], SERIES_B_COLOUR, &tip_b);
    }
    let legend = [(series_a.0, SERIES_A_COLOUR), (series_b.0, SERIES_B_COLOUR)];
    frame.close(out, &labels, &legend)
}

/// Geometry shared by both chart kinds.
struct Frame {
    /// Number of bars (categories).
    count: usize,
    width: f64,
    height: f64,
    plot_width: f64,
    plot_height: f64,
    top_value: f64,
    step: f64,
}

impl Frame {
    fn new(width: u32, height: u32, values: &[f64], integral: bool) -> Self {
        // Below this the margins leave no room to plot.
        let width = f64::from(width.max(160));
        let height = f64::from(height.max(120));
        let max = values.iter().copied().fold(0.0, f64::max);
        let (top_value, step) = nice_scale(max, integral);
        Frame {
            count: values.len(),
            width,
            height,
            plot_width: width - MARGIN_LEFT - MARGIN_RIGHT,
            plot_height: height - MARGIN_TOP - MARGIN_BOTTOM,
            top_value,
            step,
        }
    }

    fn baseline(&self) -> f64 {
        MARGIN_TOP + self.plot_height
    }

    fn y(&self, value: f64) -> f64 {
        self.baseline() - value / self.top_value * self.plot_height
    }

    /// Root element, title, value grid with tick labels and the unit.
    fn open(&self, title: &str, unit: &str) -> String {
        let (w, h) = (self.width, self.height);
        let title = escape(title);
        let mut out = format!(
            "<svg width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" \
             aria-label=\"{title}\" font-family=\"system-ui, sans-serif\" font-size=\"11\">\n\
             <title>{title}</title>\n\
             <text x=\"{:.1}\" y=\"20\" text-anchor=\"middle\" font-size=\"14\" \
             font-weight=\"600\">{title}</text>\n",
            w / 2.0
        );
        let ticks = (self.top_value / self.step).round() as u32;
        for k in 0..=ticks {
            let value = f64::from(k) * self.step;
            let y = self.y(value);
            let _ = writeln!(
                out,
                "<line x1=\"{MARGIN_LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" \
                 stroke=\"{GRID_COLOUR}\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"{AXIS_COLOUR}\">{}</text>",
                MARGIN_LEFT + self.plot_width,
                MARGIN_LEFT - 6.0,
                y + 4.0,
                tick_label(value)
            );
        }
        if !unit.is_empty() {
            let cy = MARGIN_TOP + self.plot_height / 2.0;
            let _ = writeln!(
                out,
                "<text x=\"14\" y=\"{cy:.1}\" text-anchor=\"middle\" fill=\"{AXIS_COLOUR}\" \
                 transform=\"rotate(-90 14 {cy:.1})\">{}</text>",
                escape(unit)
            );
        }
        out
    }

    /// Bar segment `index` from `base` up by `value`, with a tooltip.
    /// Zero-height segments are skipped: nothing to show or hover.
    fn bar(&self, out: &mut String, index: usize, base: f64, value: f64, colour: &str, tip: &str) {
        if value <= 0.0 {
            return;
        }
        let slot = self.plot_width / self.count as f64;
        let bar_width = (slot * 0.7).max(1.0);
        let x = MARGIN_LEFT + slot * index as f64 + (slot - bar_width) / 2.0;
        let top = self.y(base + value);
        let _ = writeln!(
            out,
            "<rect x=\"{x:.1}\" y=\"{top:.1}\" width=\"{bar_width:.1}\" height=\"{:.1}\" \
             fill=\"{colour}\"><title>{}</title></rect>",
            self.y(base) - top,
            escape(tip)
        );
    }

    /// Axes, category labels, legend and the closing tag.
    fn close(&self, mut out: String, labels: &[&str], legend: &[(&str, &str)]) -> Svg {
        let base = self.baseline();
        let right = MARGIN_LEFT + self.plot_width;
        let _ = writeln!(
            out,
            "<line x1=\"{MARGIN_LEFT}\" y1=\"{MARGIN_TOP}\" x2=\"{MARGIN_LEFT}\" y2=\"{base:.1}\" \
             stroke=\"{AXIS_COLOUR}\"/>\
             <line x1=\"{MARGIN_LEFT}\" y1=\"{base:.1}\" x2=\"{right:.1}\" y2=\"{base:.1}\" \
             stroke=\"{AXIS_COLOUR}\"/>"
        );

        if labels.is_empty() {
            let _ = writeln!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"{AXIS_COLOUR}\">\
                 No data</text>",
                MARGIN_LEFT + self.plot_width / 2.0,
                MARGIN_TOP + self.plot_height / 2.0
            );
        } else {
            // Label every `every`-th bar so labels never overlap, and cut
            // any label longer than the room it has.
            let slot = self.plot_width / self.count as f64;
            let widest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
            let every = ((widest as f64 * CHAR_PX + 8.0) / slot).ceil().max(1.0) as usize;
            let room = ((slot * every as f64 - 8.0) / CHAR_PX).floor().max(1.0) as usize;
            for (i, label) in labels.iter().enumerate().step_by(every) {
                let x = MARGIN_LEFT + slot * (i as f64 + 0.5);
                let _ = writeln!(
                    out,
                    "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"{AXIS_COLOUR}\">\
                     {}</text>",
                    base + 16.0,
                    escape(&truncate(label, room))
                );
            }
        }

        // Legend entries right-aligned under the title, last entry rightmost.
        let mut x = right;
        for (name, colour) in legend.iter().rev() {
            let text_width = name.chars().count() as f64 * CHAR_PX;
            x -= text_width;
            let _ = writeln!(
                out,
                "<rect x=\"{:.1}\" y=\"26\" width=\"10\" height=\"10\" fill=\"{colour}\"/>\
                 <text x=\"{x:.1}\" y=\"35\" fill=\"{AXIS_COLOUR}\">{}</text>",
                x - 14.0,
                escape(name)
            );
            x -= 14.0 + 16.0;
        }

        out.push_str("</svg>");
        Svg(out)
    }
}

/// Treats values that cannot be drawn as a bar height as zero.
fn clean(value: f64) -> f64 {
    if value.is_finite() && value > 0.0 {
        value
    } else {
        0.0
    }
}

fn integral(values: &[f64]) -> bool {
    values.iter().all(|v| v.fract() == 0.0)
}

/// The axis top and tick step for data whose maximum is `max` (≥ 0): a
/// step of 1, 2 or 5 × 10ⁿ giving about four ticks, the top rounded up to
/// a whole number of steps. All-zero data gets the axis 0..1.
fn nice_scale(max: f64, integral: bool) -> (f64, f64) {
    if max <= 0.0 {
        return (1.0, 1.0);
    }
    let raw = max / 4.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let norm = raw / magnitude;
    let factor = [1.0, 2.0, 5.0]
        .into_iter()
        .find(|f| *f >= norm - 1e-9)
        .unwrap_or(10.0);
    let mut step = factor * magnitude;
    if integral {
        step = step.max(1.0);
    }
    // The epsilon keeps float noise (max/step = 4.0000000001) from adding
    // an empty tick.
    let top = ((max / step) - 1e-9).ceil().max(1.0) * step;
    if top.is_finite() && step.is_finite() {
        (top, step)
    } else {
        (max, max)
    }
}

/// Short tick text: `950`, `2.5k`, `1.25M`, `3G`, `0.5`.
fn tick_label(value: f64) -> String {
    let (scaled, suffix) = if value >= 1e9 {
        (value / 1e9, "G")
    } else if value >= 1e6 {
        (value / 1e6, "M")
    } else if value >= 1e3 {
        (value / 1e3, "k")
    } else {
        (value, "")
    };
    format!("{}{suffix}", trim_decimals(scaled))
}

/// Up to two decimals without trailing zeros.
fn trim_decimals(value: f64) -> String {
    let text = format!("{value:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Tooltip text: whole numbers with thousands separators, others with up
/// to two decimals, followed by the unit.
fn with_unit(value: f64, unit: &str) -> String {
    // Below 2^53 every whole f64 converts to u64 exactly.
    let number = if value.fract() == 0.0 && value < 9_007_199_254_740_992.0 {
        thousands(value as u64)
    } else {
        trim_decimals(value)
    };
    if unit.is_empty() {
        number
    } else {
        format!("{number} {unit}")
    }
}

fn truncate(label: &str, max_chars: usize) -> String {
    if label.chars().count() <= max_chars {
        label.to_owned()
    } else {
        let mut cut: String = label.chars().take(max_chars.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// A strict-enough XML well-formedness check for tests: balanced tags,
/// quoted unique attributes, only predefined or numeric entities, no raw
/// `<` or `&` in text, exactly one root element.
#[cfg(test)]
pub(crate) fn assert_well_formed(xml: &str) {
    fn check_text(text: &str) {
        let mut rest = text;
        assert!(!rest.contains('<'), "raw < in {text:?}");
        while let Some(pos) = rest.find('&') {
            let end = rest[pos..].find(';').expect("unterminated entity") + pos;
            let name = &rest[pos + 1..end];
            let ok = matches!(name, "amp" | "lt" | "gt" | "quot" | "apos")
                || name
                    .strip_prefix('#')
                    .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
            assert!(ok, "bad entity &{name};");
            rest = &rest[end + 1..];
        }
    }

    let mut stack: Vec<&str> = Vec::new();
    let mut roots = 0;
    let mut rest = xml.trim();
    while !rest.is_empty() {
        let Some(open) = rest.find('<') else {
            assert!(!stack.is_empty(), "text outside the root: {rest:?}");
            check_text(rest);
            break;
        };
        let text = &rest[..open];
        assert!(
            !stack.is_empty() || text.trim().is_empty(),
            "text outside the root: {text:?}"
        );
        check_text(text);
        let close = rest[open..].find('>').expect("unterminated tag") + open;
        let tag = &rest[open + 1..close];
        rest = &rest[close + 1..];

        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop(), Some(name.trim()), "mismatched </{name}>");
            continue;
        }
        let (tag, empty) = match tag.strip_suffix('/') {
            Some(t) => (t, true),
            None => (tag, false),
        };
        let name_end = tag.find(char::is_whitespace).unwrap_or(tag.len());
        let name = &tag[..name_end];
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "bad tag name {name:?}"
        );
        let mut attrs = tag[name_end..].trim();
        let mut seen = Vec::new();
        while !attrs.is_empty() {
            let eq = attrs.find('=').expect("attribute without value");
            let attr = attrs[..eq].trim();
            assert!(!seen.contains(&attr), "duplicate attribute {attr}");
            seen.push(attr);
            let value = attrs[eq + 1..]
                .strip_prefix('"')
                .expect("unquoted attribute");
            let end = value.find('"').expect("unterminated attribute");
            check_text(&value[..end]);
            attrs = value[end + 1..].trim_start();
        }
        if stack.is_empty() {
            roots += 1;
        }
        if !empty {
            stack.push(name);
        }
    }
    assert!(stack.is_empty(), "unclosed elements {stack:?}");
    assert_eq!(roots, 1, "expected exactly one root element");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bars(values: &[f64]) -> Vec<(String, f64)> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("2026-11-{:02}", i + 1), *v))
            .collect()
    }

    fn rect_count(svg: &Svg) -> usize {
        svg.as_str().matches("<rect").count()
    }

    #[test]
    fn no_bars() {
        let svg = bar_chart("Tasks", &[], "tasks", 600, 240);
        assert_well_formed(svg.as_str());
        assert!(svg.as_str().contains("No data"));
        assert_eq!(rect_count(&svg), 0);
    }

    #[test]
    fn one_bar() {
        let svg = bar_chart("Tasks", &bars(&[3.0]), "tasks", 600, 240);
        assert_well_formed(svg.as_str());
        assert_eq!(rect_count(&svg), 1);
        assert!(svg.as_str().contains("<title>2026-11-01: 3 tasks</title>"));
        assert!(svg.as_str().contains(">2026-11-01</text>"));
    }

    #[test]
    fn many_bars_thin_out_labels() {
        let values: Vec<f64> = (0..30).map(f64::from).collect();
        let svg = bar_chart("Tasks", &bars(&values), "tasks", 600, 240);
        assert_well_formed(svg.as_str());
        // The first value is zero, so it has no rect.
        assert_eq!(rect_count(&svg), 29);
        let labels = svg
            .as_str()
            .lines()
            .filter(|l| l.starts_with("<text") && l.contains(">2026-11-"))
            .count();
        assert!(labels > 1 && labels < 30, "{labels} labels");
    }

    #[test]
    fn all_zero_data() {
        let svg = bar_chart("Tasks", &bars(&[0.0, 0.0, 0.0]), "tasks", 600, 240);
        assert_well_formed(svg.as_str());
        assert_eq!(rect_count(&svg), 0);
        assert!(!svg.as_str().contains("NaN"));
        assert!(!svg.as_str().contains("inf"));
    }

    #[test]
    fn bad_values_are_zero() {
        let svg = bar_chart(
            "t",
            &bars(&[f64::NAN, -5.0, f64::INFINITY, 2.0]),
            "",
            300,
            200,
        );
        assert_well_formed(svg.as_str());
        assert_eq!(rect_count(&svg), 1);
        assert!(!svg.as_str().contains("NaN"));
    }

    #[test]
    fn text_is_escaped() {
        let evil = "<script>alert('x')</script> & \"q\"";
        let data = vec![(evil.to_owned(), 1.0)];
        let svg = bar_chart(evil, &data, evil, 600, 240);
        assert_well_formed(svg.as_str());
        assert!(!svg.as_str().contains("<script"));
        let stacked = stacked_bars(
            evil,
            &[evil.to_owned()],
            (evil, &[1.0]),
            (evil, &[2.0]),
            evil,
            600,
            240,
        );
        assert_well_formed(stacked.as_str());
        assert!(!stacked.as_str().contains("<script"));
    }

    #[test]
    fn no_namespace_url() {
        let svg = bar_chart("t", &bars(&[1.0]), "u", 600, 240);
        assert!(!svg.as_str().contains("http"));
    }

    #[test]
    fn stacked_bars_shapes() {
        let labels: Vec<String> = (1..=3).map(|d| format!("2026-11-0{d}")).collect();
        let svg = stacked_bars(
            "Tokens",
            &labels,
            ("input", &[100.0, 0.0, 1500.0]),
            ("output", &[50.0, 0.0]),
            "tokens",
            720,
            260,
        );
        assert_well_formed(svg.as_str());
        // 2 segments + 1 segment (missing output is zero) + 2 legend swatches.
        assert_eq!(rect_count(&svg), 5);
        assert!(
            svg.as_str()
                .contains("<title>2026-11-01 input: 100 tokens</title>")
        );
        assert!(
            svg.as_str()
                .contains("<title>2026-11-03 input: 1,500 tokens</title>")
        );
        assert!(svg.as_str().contains(">input</text>"));
        assert!(svg.as_str().contains(">output</text>"));

        let empty = stacked_bars("Tokens", &[], ("a", &[]), ("b", &[]), "", 720, 260);
        assert_well_formed(empty.as_str());
        let single = stacked_bars(
            "Tokens",
            &labels[..1],
            ("a", &[0.0]),
            ("b", &[0.0]),
            "",
            720,
            260,
        );
        assert_well_formed(single.as_str());
    }

    #[test]
    fn stacked_segments_touch() {
        let labels = vec!["d".to_owned()];
        let svg = stacked_bars("t", &labels, ("a", &[3.0]), ("b", &[1.0]), "", 400, 240);
        // Axis 0..4 over the plot height; segment b sits on segment a.
        let ys: Vec<f64> = svg
            .as_str()
            .lines()
            .filter(|l| l.starts_with("<rect") && l.contains("<title>"))
            .map(|l| {
                let y = l.split("y=\"").nth(1).unwrap();
                y[..y.find('"').unwrap()].parse().unwrap()
            })
            .collect();
        let heights: Vec<f64> = svg
            .as_str()
            .lines()
            .filter(|l| l.starts_with("<rect") && l.contains("<title>"))
            .map(|l| {
                let h = l.split("height=\"").nth(1).unwrap();
                h[..h.find('"').unwrap()].parse().unwrap()
            })
            .collect();
        assert_eq!(ys.len(), 2);
        assert!(
            (ys[1] + heights[1] - ys[0]).abs() < 0.15,
            "{ys:?} {heights:?}"
        );
        assert!((heights[0] - 3.0 * heights[1]).abs() < 0.3);
    }

    #[test]
    fn nice_scales() {
        assert_eq!(nice_scale(0.0, true), (1.0, 1.0));
        assert_eq!(nice_scale(1.0, true), (1.0, 1.0));
        assert_eq!(nice_scale(1.0, false), (1.0, 0.5));
        assert_eq!(nice_scale(7.0, true), (8.0, 2.0));
        assert_eq!(nice_scale(100.0, true), (100.0, 50.0));
        assert_eq!(nice_scale(1234.0, true), (1500.0, 500.0));
        assert_eq!(nice_scale(40_000.0, true), (40_000.0, 10_000.0));
    }

    #[test]
    fn tick_labels_are_compact() {
        assert_eq!(tick_label(0.0), "0");
        assert_eq!(tick_label(0.5), "0.5");
        assert_eq!(tick_label(950.0), "950");
        assert_eq!(tick_label(2500.0), "2.5k");
        assert_eq!(tick_label(1_250_000.0), "1.25M");
        assert_eq!(tick_label(3e9), "3G");
        assert_eq!(tick_label(0.1 * 3.0), "0.3");
    }

    #[test]
    fn checker_rejects_broken_markup() {
        for bad in [
            "<a><b></a></b>",
            "<a x=1/>",
            "<a>&bogus;</a>",
            "<a>1 < 2</a>",
            "<a/><b/>",
        ] {
            assert!(
                std::panic::catch_unwind(|| assert_well_formed(bad)).is_err(),
                "accepted {bad}"
            );
        }
        assert_well_formed("<a x=\"&amp;&#39;\"><b/>t &lt; u</a>");
    }
}
