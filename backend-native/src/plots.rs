//! PNG charts for `eval` and `compare`, drawn with plotters into memory and encoded with `png`.
//!
//! Text uses DejaVu Sans embedded in the binary (`assets/DejaVuSans.ttf`, Bitstream Vera
//! license in `assets/DejaVuSans-LICENSE.txt`): no system font is looked up, so charts render the
//! same on a bare machine. Every function returns the PNG bytes; writing them is the caller's job
//! (atomically, like every other output).

use anyhow::{bail, Result};
use bartleby_core::metrics::report::Interval;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";
const SIZE: (u32, u32) = (900, 560);
/// Series colours (Okabe–Ito, readable for colour-blind readers).
const PALETTE: [RGBColor; 6] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
];

/// One series of a grouped bar chart: its name and one value per group, with its interval
/// (`low <= mid <= high`).
pub struct Series<'a> {
    pub name: &'a str,
    pub values: Vec<Interval>,
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

fn register_font() -> Result<()> {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if !ok {
        bail!("plots: the embedded DejaVu Sans font could not be loaded");
    }
    Ok(())
}

/// Renders `draw` on a white canvas and returns it as PNG bytes.
fn render(draw: impl FnOnce(&Area) -> Result<()>) -> Result<Vec<u8>> {
    register_font()?;
    let (w, h) = SIZE;
    let mut pixels = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root)?;
        root.present()?;
    }
    encode_png(&pixels, w, h)
}

fn encode_png(rgb: &[u8], w: u32, h: u32) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(out)
}

fn font(size: u32) -> TextStyle<'static> {
    (FAMILY, size).into_font().color(&BLACK)
}

/// Grouped bars (one group per label, one bar per series) with interval whiskers; values are
/// plotted as given (callers scale). Used for ROUGE with bootstrap intervals.
pub fn interval_bars(
    title: &str,
    y_desc: &str,
    groups: &[&str],
    series: &[Series],
) -> Result<Vec<u8>> {
    let top = series
        .iter()
        .flat_map(|s| s.values.iter().map(|v| v.high.max(v.mid)))
        .fold(0.0f64, f64::max);
    let y_max = nice_ceiling(top * 1.15);
    let n = groups.len() as f64;
    let width = 0.8 / series.len().max(1) as f64;
    render(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, font(24))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5..n - 0.5, 0.0..y_max)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc(y_desc)
            .label_style(font(15))
            .axis_desc_style(font(16))
            .draw()?;
        for (s, ser) in series.iter().enumerate() {
            let colour = PALETTE[s % PALETTE.len()];
            let left = |g: usize| g as f64 - 0.4 + s as f64 * width;
            let bars = ser.values.iter().enumerate().map(|(g, v)| {
                Rectangle::new(
                    [(left(g) + 0.02, 0.0), (left(g) + width - 0.02, v.mid)],
                    colour.filled(),
                )
            });
            let anno = chart.draw_series(bars)?;
            if series.len() > 1 {
                anno.label(ser.name).legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 14, y + 6)], colour.filled())
                });
            }
            for (g, v) in ser.values.iter().enumerate() {
                let x = left(g) + width / 2.0;
                let cap = width / 6.0;
                for points in [
                    vec![(x, v.low), (x, v.high)],
                    vec![(x - cap, v.low), (x + cap, v.low)],
                    vec![(x - cap, v.high), (x + cap, v.high)],
                ] {
                    chart.draw_series(std::iter::once(PathElement::new(
                        points,
                        BLACK.stroke_width(2),
                    )))?;
                }
                let label = format!("{:.2}", v.mid);
                let style = font(13).pos(Pos::new(HPos::Center, VPos::Bottom));
                chart.draw_series(std::iter::once(Text::new(
                    label,
                    (x, v.high.max(v.mid)),
                    style,
                )))?;
            }
        }
        for (g, name) in groups.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(g as f64, 0.0));
            let style = font(16).pos(Pos::new(HPos::Center, VPos::Top));
            root.draw(&Text::new(name.to_string(), (px, py + 8), style))?;
        }
        if series.len() > 1 {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(font(15))
                .draw()?;
        }
        Ok(())
    })
}

/// A histogram of `values` over `[0, x_max]` in `bins` equal bins (values above `x_max` fall in
/// the last bin).
pub fn histogram(
    title: &str,
    x_desc: &str,
    values: &[f64],
    x_max: f64,
    bins: usize,
) -> Result<Vec<u8>> {
    let counts = bin_counts(values, x_max, bins);
    let y_max = nice_ceiling(*counts.iter().max().unwrap_or(&0) as f64 * 1.1).max(1.0);
    let step = x_max / bins as f64;
    render(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, font(24))
            .margin(16)
            .x_label_area_size(50)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc(x_desc)
            .y_desc("examples")
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style(font(15))
            .axis_desc_style(font(16))
            .draw()?;
        chart.draw_series(counts.iter().enumerate().map(|(b, &c)| {
            let x0 = b as f64 * step;
            Rectangle::new([(x0, 0.0), (x0 + step, c as f64)], PALETTE[0].filled())
        }))?;
        chart.draw_series(counts.iter().enumerate().map(|(b, &c)| {
            let x0 = b as f64 * step;
            Rectangle::new([(x0, 0.0), (x0 + step, c as f64)], WHITE.stroke_width(1))
        }))?;
        Ok(())
    })
}

/// Counts of `values` in `bins` equal bins over `[0, x_max]`; out-of-range values are clamped
/// into the first or last bin.
pub fn bin_counts(values: &[f64], x_max: f64, bins: usize) -> Vec<usize> {
    let mut counts = vec![0usize; bins.max(1)];
    let last = counts.len() - 1;
    for &v in values {
        let b = ((v / x_max) * counts.len() as f64).floor();
        let b = if b.is_nan() || b < 0.0 {
            0
        } else {
            (b as usize).min(last)
        };
        counts[b] += 1;
    }
    counts
}

/// A scatter plot of `(x, y)` points with the diagonal `y = x` dashed.
pub fn scatter(title: &str, x_desc: &str, y_desc: &str, points: &[(f64, f64)]) -> Result<Vec<u8>> {
    let top = points.iter().fold(1.0f64, |m, &(x, y)| m.max(x).max(y));
    let max = nice_ceiling(top * 1.05);
    render(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, font(24))
            .margin(16)
            .x_label_area_size(50)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..max, 0.0..max)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style(font(15))
            .axis_desc_style(font(16))
            .draw()?;
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, 0.0), (max, max)],
                6,
                4,
                BLACK.mix(0.5).stroke_width(1),
            ))?
            .label("y = x")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLACK.mix(0.5)));
        chart.draw_series(
            points
                .iter()
                .map(|&p| Circle::new(p, 4, PALETTE[0].mix(0.7).filled())),
        )?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(font(15))
            .draw()?;
        Ok(())
    })
}

/// The smallest of 1, 1.5, 2, 2.5, 3, 4, 5, 6, 8 × 10^k that is at least `v` (1 for `v <= 0`).
fn nice_ceiling(v: f64) -> f64 {
    if v.is_nan() || v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let scale = 10f64.powf(v.log10().floor());
    [1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
        .iter()
        .map(|m| m * scale)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_png(bytes: &[u8]) -> bool {
        bytes.starts_with(b"\x89PNG\r\n\x1a\n")
    }

    #[test]
    fn charts_are_png() {
        let ci = |m| Interval {
            low: m - 2.0,
            mid: m,
            high: m + 2.0,
        };
        let bars = interval_bars(
            "ROUGE",
            "F1 (%)",
            &["R-1", "R-2"],
            &[Series {
                name: "a",
                values: vec![ci(30.0), ci(10.0)],
            }],
        )
        .unwrap();
        assert!(is_png(&bars));
        assert!(is_png(
            &histogram("h", "x", &[0.1, 0.5, 2.0], 1.0, 10).unwrap()
        ));
        assert!(is_png(&scatter("s", "x", "y", &[(3.0, 4.0)]).unwrap()));
        assert!(is_png(&scatter("s", "x", "y", &[]).unwrap()));
    }

    #[test]
    fn bins_and_ceilings() {
        assert_eq!(
            bin_counts(&[0.0, 0.05, 0.1, 1.0, 7.0, -1.0], 1.0, 10)[..2],
            [3, 1]
        );
        assert_eq!(bin_counts(&[1.0, 7.0], 1.0, 10)[9], 2);
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(42.0), 50.0);
        assert_eq!(nice_ceiling(1.2), 1.5);
        assert_eq!(nice_ceiling(51.7), 60.0);
        assert_eq!(nice_ceiling(2.2), 2.5);
    }
}

/// Line chart of one or more `(x, y)` series (training curves): x from 0, y from the data.
pub fn lines(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[(&str, &[(f64, f64)])],
) -> Result<Vec<u8>> {
    let all = series.iter().flat_map(|(_, s)| s.iter());
    let (mut x_max, mut y_min, mut y_max) = (1.0f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in all.filter(|(x, y)| x.is_finite() && y.is_finite()) {
        x_max = x_max.max(x);
        y_min = y_min.min(y);
        y_max = y_max.max(y);
    }
    if !y_min.is_finite() {
        (y_min, y_max) = (0.0, 1.0);
    }
    let pad = ((y_max - y_min) * 0.05).max(1e-3);
    render(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, font(24))
            .margin(16)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..x_max, (y_min - pad)..(y_max + pad))?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .label_style(font(15))
            .axis_desc_style(font(16))
            .draw()?;
        for (i, (name, points)) in series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let style = color.stroke_width(2);
            chart
                .draw_series(LineSeries::new(points.iter().copied(), style))?
                .label(*name)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2))
                });
            if points.len() < 60 {
                chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(font(15))
            .draw()?;
        Ok(())
    })
}

/// `runs/NAME/loss.png`: training loss per step, and validation loss where measured; written
/// atomically.
pub fn loss_curve(path: &std::path::Path, train: &[(f64, f64)], val: &[(f64, f64)]) -> Result<()> {
    let mut series: Vec<(&str, &[(f64, f64)])> = vec![("train loss", train)];
    if !val.is_empty() {
        series.push(("validation loss", val));
    }
    let png = lines("Training loss", "optimizer step", "loss", &series)?;
    crate::output::write_file_atomically(path, &png)
}
