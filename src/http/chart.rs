//! The status page's chart of tasks finished per minute over the last
//! hour: an inline SVG drawn here, bars and a few labels, so the page needs
//! no script and no chart library.

use std::fmt::Write;

/// The drawing's size in its own units (it scales to the page's width).
const WIDTH: u32 = 720;
const HEIGHT: u32 = 190;
/// Room for the labels below the bars and left of them.
const BOTTOM: u32 = 24;
const LEFT: u32 = 48;

/// The chart of `counts`, one per minute, oldest first (the last is the
/// current minute).
pub fn svg(counts: &[u32]) -> String {
    let peak = counts.iter().copied().max().unwrap_or(0);
    let total: u64 = counts.iter().map(|c| u64::from(*c)).sum();
    let top = nice_top(peak);
    let plot_w = WIDTH - LEFT;
    let plot_h = HEIGHT - BOTTOM;
    let slot = f64::from(plot_w) / counts.len().max(1) as f64;
    let mut out = format!(
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="Tasks finished per minute over the last hour: {total} in all, at most {peak} in one minute" xmlns="http://www.w3.org/2000/svg">"#
    );
    for (y, label) in [(0, top), (plot_h / 2, top / 2), (plot_h, 0)] {
        let _ = write!(
            out,
            r#"<line x1="{LEFT}" x2="{WIDTH}" y1="{y}.5" y2="{y}.5" class="grid"/><text x="{}" y="{}" class="axis" text-anchor="end">{label}</text>"#,
            LEFT - 4,
            (y + 5).max(14)
        );
    }
    for (i, count) in counts.iter().enumerate() {
        let h = f64::from(*count) / f64::from(top) * f64::from(plot_h);
        let ago = counts.len() - 1 - i;
        let _ = write!(
            out,
            r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" class="bar"><title>{count} finished {}</title></rect>"#,
            f64::from(LEFT) + i as f64 * slot + 1.0,
            f64::from(plot_h) - h,
            (slot - 2.0).max(1.0),
            match ago {
                0 => "this minute".to_string(),
                1 => "1 minute ago".to_string(),
                n => format!("{n} minutes ago"),
            }
        );
    }
    let y = HEIGHT - 4;
    let _ = write!(
        out,
        r#"<text x="{LEFT}" y="{y}" class="axis">−60 min</text><text x="{}" y="{y}" class="axis" text-anchor="middle">−30 min</text><text x="{WIDTH}" y="{y}" class="axis" text-anchor="end">now</text></svg>"#,
        LEFT + plot_w / 2
    );
    out
}

/// The top of the scale: the peak rounded up to 1, 2 or 5 times a power
/// of ten (at least 2, so that its half is a whole number too).
fn nice_top(peak: u32) -> u32 {
    let mut unit = 1u32;
    loop {
        for step in [2, 5, 10] {
            let top = unit.saturating_mul(step);
            if top >= peak || top == u32::MAX {
                return top;
            }
        }
        unit = unit.saturating_mul(10);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scale_ends_just_above_the_peak() {
        assert_eq!(nice_top(0), 2);
        assert_eq!(nice_top(2), 2);
        assert_eq!(nice_top(3), 5);
        assert_eq!(nice_top(7), 10);
        assert_eq!(nice_top(11), 20);
        assert_eq!(nice_top(4_999), 5_000);
    }

    /// One bar per minute, the tallest reaching to the scale's top it is
    /// labelled with, each with its count in a tooltip.
    #[test]
    fn draws_a_bar_per_minute_on_a_labelled_scale() {
        let mut counts = vec![0; 60];
        counts[59] = 8;
        counts[0] = 4;
        let svg = svg(&counts);
        assert_eq!(svg.matches("<rect").count(), 60);
        assert!(
            svg.contains("<title>8 finished this minute</title>"),
            "{svg}"
        );
        assert!(
            svg.contains("<title>4 finished 59 minutes ago</title>"),
            "{svg}"
        );
        assert!(svg.contains(">10</text>"), "{svg}");
        assert!(svg.contains("12 in all, at most 8 in one minute"), "{svg}");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
    }
}
