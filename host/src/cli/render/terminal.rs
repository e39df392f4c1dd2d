//! Compact horizontal bar charts for the terminal.
//!
//! Bars use the Unicode eighth blocks (`▏▎▍▌▋▊▉█`) so each character cell
//! resolves eight steps, which keeps short charts (a week of days) readable
//! in a narrow terminal.

/// Partial blocks indexed by eighths; index 0 is an empty cell.
const PARTIAL: [char; 8] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];
const FULL: char = '█';

/// One line per row: the label padded to the widest label, a bar of
/// `width` cells scaled so the largest value fills it, and the value with
/// thousands separators right-aligned, e.g. `2026-11-20 ███████▌      1,234`.
///
/// A zero value shows an empty bar. A non-zero value too small to reach
/// one eighth still shows `▏`, so "some" is never drawn as "none".
/// Alignment counts `char`s, which is exact for dates, model names and
/// other narrow text but not for double-width (CJK) labels.
pub fn bars(rows: &[(String, u64)], width: usize) -> Vec<String> {
    let max = rows.iter().map(|(_, v)| *v).max().unwrap_or(0);
    let label_width = rows
        .iter()
        .map(|(label, _)| label.chars().count())
        .max()
        .unwrap_or(0);
    let values: Vec<String> = rows.iter().map(|(_, v)| thousands(*v)).collect();
    let value_width = values.iter().map(String::len).max().unwrap_or(0);

    rows.iter()
        .zip(&values)
        .map(|((label, value), shown)| {
            format!(
                "{label:<label_width$} {bar} {shown:>value_width$}",
                bar = bar(*value, max, width)
            )
        })
        .collect()
}

/// `width` cells, filled in proportion to `value / max`.
fn bar(value: u64, max: u64, width: usize) -> String {
    let cells = width as u128;
    let eighths = if value == 0 || max == 0 {
        0
    } else {
        // u128 so `value * cells * 8` cannot overflow; round to nearest.
        let scaled = (u128::from(value) * cells * 8 * 2 + u128::from(max)) / (2 * u128::from(max));
        scaled.max(1)
    };
    let full = usize::try_from(eighths / 8).unwrap_or(width);
    let rest = usize::try_from(eighths % 8).unwrap_or(0);

    let mut out = String::with_capacity(width * 3);
    out.extend(std::iter::repeat_n(FULL, full));
    if full < width {
        out.push(PARTIAL[rest]);
        out.extend(std::iter::repeat_n(' ', width - full - 1));
    }
    out
}

/// `n` with a comma between each group of three digits: `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(values: &[(&str, u64)]) -> Vec<(String, u64)> {
        values.iter().map(|(l, v)| ((*l).to_owned(), *v)).collect()
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234), "1,234");
        assert_eq!(thousands(123_456), "123,456");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(u64::MAX), "18,446,744,073,709,551,615");
    }

    #[test]
    fn lines_are_aligned_and_scaled_to_the_max() {
        let lines = bars(
            &rows(&[("2026-11-19", 1234), ("2026-11-20", 617), ("x", 0)]),
            8,
        );
        assert_eq!(
            lines,
            [
                "2026-11-19 ████████ 1,234",
                "2026-11-20 ████       617",
                "x                       0",
            ]
        );
        let widths: Vec<usize> = lines.iter().map(|l| l.chars().count()).collect();
        assert!(widths.iter().all(|w| *w == widths[0]));
    }

    #[test]
    fn eighths_give_sub_cell_precision() {
        // 15/16 of 4 cells = 3.75 cells = 3 full + 6 eighths.
        let lines = bars(&rows(&[("a", 15), ("b", 16)]), 4);
        assert_eq!(lines[0], "a ███▊ 15");
        assert_eq!(lines[1], "b ████ 16");
        // 1/8 of one cell per step.
        for (value, glyph) in (1..8).zip(PARTIAL.iter().skip(1)) {
            let line = &bars(&rows(&[("v", value), ("m", 8)]), 1)[0];
            assert_eq!(line, &format!("v {glyph} {value}"));
        }
    }

    #[test]
    fn tiny_non_zero_values_stay_visible() {
        let lines = bars(&rows(&[("big", 1_000_000), ("tiny", 1)]), 10);
        assert!(lines[1].contains('▏'), "{lines:?}");
    }

    #[test]
    fn all_zero_and_empty_input() {
        let lines = bars(&rows(&[("a", 0), ("b", 0)]), 3);
        assert_eq!(lines, ["a     0", "b     0"]);
        assert!(bars(&[], 10).is_empty());
    }

    #[test]
    fn zero_width_keeps_label_and_value() {
        assert_eq!(bars(&rows(&[("a", 5)]), 0), ["a  5"]);
    }
}
