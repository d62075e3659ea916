//! Line charts as PNG and SVG with `plotters`: a figure is a row of panels, each a set
//! of series, over one legend for all panels. Text is drawn with DejaVu Sans, compiled into the binary (`assets/`), so
//! the PNGs need no system fonts.

use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use model::fsutil::write_atomic;

const FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
const PANEL: (u32, u32) = (640, 480);
const TITLE: u32 = 36;
const LEGEND_ROW: u32 = 24;
const LEGEND_FONT: u32 = 14;

static REGISTER: Once = Once::new();

fn register() {
    REGISTER.call_once(|| {
        if register_font("sans-serif", FontStyle::Normal, FONT).is_err() {
            tracing::warn!("the built-in font could not be read: plots will lack text");
        }
    });
}

/// Colour-blind-friendly colours (Okabe–Ito), then black.
const COLORS: [RGBColor; 10] = [
    RGBColor(0, 0, 0),
    RGBColor(213, 94, 0),
    RGBColor(230, 159, 0),
    RGBColor(204, 121, 167),
    RGBColor(0, 114, 178),
    RGBColor(0, 158, 115),
    RGBColor(86, 180, 233),
    RGBColor(120, 120, 120),
    RGBColor(140, 86, 75),
    RGBColor(160, 160, 30),
];

/// The `i`-th colour of the palette.
pub fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

/// One line of a panel.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend text (empty: not in the legend).
    pub label: String,
    pub color: RGBColor,
    pub points: Vec<(f64, f64)>,
    pub dashed: bool,
    pub markers: bool,
    /// Text written next to some points.
    pub notes: Vec<((f64, f64), String)>,
}

impl Series {
    pub fn line(label: &str, color: RGBColor, points: Vec<(f64, f64)>) -> Series {
        Series {
            label: label.to_string(),
            color,
            points: points
                .into_iter()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .collect(),
            dashed: false,
            markers: false,
            notes: Vec::new(),
        }
    }

    pub fn dashed(mut self) -> Series {
        self.dashed = true;
        self
    }

    pub fn markers(mut self) -> Series {
        self.markers = true;
        self
    }

    /// Writes `text` next to the point at `at`.
    pub fn note(mut self, at: (f64, f64), text: String) -> Series {
        if at.0.is_finite() && at.1.is_finite() {
            self.notes.push((at, text));
        }
        self
    }
}

/// One chart.
#[derive(Clone, Debug)]
pub struct Panel {
    pub title: String,
    pub x: String,
    pub y: String,
    pub series: Vec<Series>,
}

impl Panel {
    pub fn new(title: &str, x: &str, y: &str, series: Vec<Series>) -> Panel {
        Panel {
            title: title.to_string(),
            x: x.to_string(),
            y: y.to_string(),
            series,
        }
    }
}

/// The range of `values` with a margin (a unit-wide one around a single value).
fn range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() || !hi.is_finite() {
        return 0.0..1.0;
    }
    let pad = if hi > lo {
        0.06 * (hi - lo)
    } else {
        0.05 * lo.abs().max(1.0)
    };
    lo - pad..hi + pad
}

/// The figure's legend: every labelled series once, in order of first appearance.
struct Legend {
    entries: Vec<(String, RGBColor)>,
    /// Centred rows that fit the figure's width: each entry's x and index.
    rows: Vec<Vec<(i32, usize)>>,
}

fn legend(panels: &[Panel], width: u32) -> Legend {
    let mut entries: Vec<(String, RGBColor)> = Vec::new();
    for s in panels.iter().flat_map(|p| &p.series) {
        if !s.label.is_empty() && !entries.iter().any(|e| e.0 == s.label) {
            entries.push((s.label.clone(), s.color));
        }
    }
    let font = ("sans-serif", LEGEND_FONT).into_font();
    let widths: Vec<i32> = entries
        .iter()
        .map(|e| {
            let text = font.box_size(&e.0).map_or(8 * e.0.len() as u32, |b| b.0);
            36 + text as i32 + 26
        })
        .collect();
    let mut rows: Vec<Vec<(i32, usize)>> = Vec::new();
    let mut row: Vec<(i32, usize)> = Vec::new();
    let mut x = 0;
    for (i, w) in widths.iter().enumerate() {
        if !row.is_empty() && x + w > width as i32 - 40 {
            rows.push(std::mem::take(&mut row));
            x = 0;
        }
        row.push((x, i));
        x += w;
    }
    if !row.is_empty() {
        rows.push(row);
    }
    for row in &mut rows {
        let used = row.last().map_or(0, |&(x, i)| x + widths[i]);
        let shift = (width as i32 - used) / 2;
        for e in row.iter_mut() {
            e.0 += shift;
        }
    }
    Legend { entries, rows }
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    panels: &[Panel],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let Legend { entries, rows } = legend(panels, root.dim_in_pixel().0);
    let (top, rest) = root.split_vertically(TITLE);
    let (body, bottom) = rest.split_vertically(PANEL.1);
    for (r, row) in rows.iter().enumerate() {
        let y = (r as u32 * LEGEND_ROW + LEGEND_ROW / 2) as i32;
        for &(x, i) in row {
            let (label, color) = &entries[i];
            bottom.draw(&PathElement::new(
                vec![(x, y), (x + 28, y)],
                color.stroke_width(3),
            ))?;
            bottom.draw(&Text::new(
                label.clone(),
                (x + 36, y - LEGEND_FONT as i32 / 2 + 3),
                ("sans-serif", LEGEND_FONT).into_font().color(&BLACK),
            ))?;
        }
    }
    top.draw(&Text::new(
        title.to_string(),
        (16, 10),
        ("sans-serif", 20).into_font().color(&BLACK),
    ))?;
    for (area, p) in body
        .split_evenly((1, panels.len().max(1)))
        .iter()
        .zip(panels)
    {
        let xs = range(p.series.iter().flat_map(|s| s.points.iter().map(|q| q.0)));
        let ys = range(p.series.iter().flat_map(|s| s.points.iter().map(|q| q.1)));
        let mut chart = ChartBuilder::on(area)
            .caption(&p.title, ("sans-serif", 17))
            .margin(14)
            .x_label_area_size(42)
            .y_label_area_size(62)
            .build_cartesian_2d(xs, ys)?;
        chart
            .configure_mesh()
            .x_desc(p.x.as_str())
            .y_desc(p.y.as_str())
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .label_style(("sans-serif", 13))
            .axis_desc_style(("sans-serif", 15))
            .light_line_style(WHITE)
            .bold_line_style(RGBColor(225, 225, 225))
            .draw()?;
        for s in &p.series {
            let style = ShapeStyle {
                color: s.color.to_rgba(),
                filled: true,
                stroke_width: 2,
            };
            let points = s.points.clone();
            if s.dashed {
                chart.draw_series(DashedLineSeries::new(points, 7, 5, style))?;
            } else {
                let size = if s.markers { 4 } else { 0 };
                chart.draw_series(LineSeries::new(points, style).point_size(size))?;
            }
            let font = ("sans-serif", 12).into_font().color(&s.color);
            chart.draw_series(s.notes.iter().map(|(at, text)| {
                EmptyElement::at(*at) + Text::new(text.clone(), (6, -16), font.clone())
            }))?;
        }
    }
    root.present()
}

/// An axis label: whole numbers without a fraction (learner steps), others with at most
/// four decimals and no trailing zeros.
fn tick(v: &f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

/// Writes `stem.png` and `stem.svg`, the panels side by side under `title`.
pub fn write(stem: &Path, title: &str, panels: &[Panel]) -> Result<()> {
    register();
    let width = PANEL.0 * panels.len().max(1) as u32;
    let rows = legend(panels, width).rows.len() as u32;
    let size = (width, TITLE + PANEL.1 + rows * LEGEND_ROW + 8);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        draw(&root, title, panels).map_err(|e| anyhow!("drawing {}.svg: {e}", stem.display()))?;
    }
    write_atomic(&stem.with_extension("svg"), svg.as_bytes())?;

    let mut rgb = vec![0u8; (size.0 * size.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
        draw(&root, title, panels).map_err(|e| anyhow!("drawing {}.png: {e}", stem.display()))?;
    }
    let mut png = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut png, size.0, size.1);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Best);
        enc.set_adaptive_filter(png::AdaptiveFilterType::Adaptive);
        let mut w = enc.write_header()?;
        w.write_image_data(&rgb)?;
        w.finish()?;
    }
    write_atomic(&stem.with_extension("png"), &png)
}

#[cfg(test)]
mod tests {
    use super::tick;

    #[test]
    fn ticks_drop_useless_decimals() {
        let t: Vec<String> = [20.0, 0.0, -0.0, 0.05, 0.125, 1.5, 0.123456]
            .iter()
            .map(tick)
            .collect();
        assert_eq!(t, ["20", "0", "0", "0.05", "0.125", "1.5", "0.1235"]);
    }
}
