//! A timeline chart: panels stacked over one time axis (say throughput above, latency below),
//! with spans of time shaded and named (the phases of `rpm`), as crusader draws its runs. SVG,
//! or PNG through the same path as [`super::plot`].

use std::path::Path;

use anyhow::{bail, Result};
use plotters::prelude::*;

use super::plot::{draw_err, minmax, pad, tick, write_svg, Axis, Series, COLORS};

/// One panel: its y label and lines.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Panel {
    pub y_label: String,
    pub series: Vec<Series>,
    /// Points further apart in x than this are not joined (no line across a pause).
    pub break_over: Option<f64>,
}

/// The runs of `points` whose neighbours are at most `gap` apart in x.
fn runs(points: &[(f64, f64)], gap: Option<f64>) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = Vec::new();
    for &p in points {
        match out.last_mut() {
            Some(run) if gap.is_none_or(|g| p.0 - run[run.len() - 1].0 <= g) => run.push(p),
            _ => out.push(vec![p]),
        }
    }
    out
}

/// A shaded span of the time axis.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Band {
    pub from: f64,
    pub to: f64,
    pub label: String,
}

const SHADES: [RGBColor; 4] = [
    RGBColor(222, 235, 247),
    RGBColor(253, 229, 210),
    RGBColor(229, 245, 224),
    RGBColor(239, 228, 245),
];

/// Writes the timeline to `path` (.svg or .png).
pub(crate) fn timeline(
    path: &Path,
    title: &str,
    x_label: &str,
    panels: &[Panel],
    bands: &[Band],
) -> Result<()> {
    write_svg(path, timeline_svg(title, x_label, panels, bands)?)
}

/// The timeline as an SVG document.
pub(crate) fn timeline_svg(
    title: &str,
    x_label: &str,
    panels: &[Panel],
    bands: &[Band],
) -> Result<String> {
    if panels.is_empty() {
        bail!("plot '{title}': no panels");
    }
    let xs = panels
        .iter()
        .flat_map(|p| p.series.iter().flat_map(|s| s.points.iter().map(|q| q.0)))
        .chain(bands.iter().flat_map(|b| [b.from, b.to]));
    let all_finite = panels
        .iter()
        .flat_map(|p| p.series.iter().flat_map(|s| s.points.iter()))
        .all(|q| q.0.is_finite() && q.1.is_finite())
        && bands.iter().all(|b| b.from.is_finite() && b.to.is_finite());
    if !all_finite {
        bail!("plot '{title}': a point is not a finite number");
    }
    let (mut x0, mut x1) = minmax(xs).unwrap_or((0.0, 1.0));
    pad(&mut x0, &mut x1, 0.01);
    let height = 300 * panels.len() as u32 + 60;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (960, height)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let root = root.titled(title, ("sans-serif", 24)).map_err(draw_err)?;
        let areas = root.split_evenly((panels.len(), 1));
        for (i, (area, panel)) in areas.iter().zip(panels).enumerate() {
            let last = i + 1 == panels.len();
            draw_panel(
                area,
                panel,
                bands,
                (x0, x1),
                last.then_some(x_label),
                i == 0,
            )?;
        }
        root.present().map_err(draw_err)?;
    }
    Ok(out)
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    panel: &Panel,
    bands: &[Band],
    (x0, x1): (f64, f64),
    x_label: Option<&str>,
    band_labels: bool,
) -> Result<()> {
    let ys = panel
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|q| q.1));
    let (_, mut y1) = minmax(ys).unwrap_or((0.0, 1.0));
    let mut y0 = 0.0;
    pad(&mut y0, &mut y1, 0.05);
    y0 = 0.0;
    // Headroom for the legend and the band labels.
    y1 += (y1 - y0) * (0.08 * panel.series.len() as f64 + 0.1);
    let mut chart = ChartBuilder::on(area)
        .margin(10)
        .x_label_area_size(if x_label.is_some() { 44 } else { 24 })
        .y_label_area_size(70)
        .build_cartesian_2d(Axis::new(x0, x1, false), Axis::new(y0, y1, false))
        .map_err(draw_err)?;
    let xf = |v: &f64| tick(*v, false);
    chart
        .configure_mesh()
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .x_desc(x_label.unwrap_or(""))
        .y_desc(panel.y_label.as_str())
        .x_label_formatter(&xf)
        .y_label_formatter(&xf)
        .bold_line_style(RGBColor(225, 225, 225))
        .draw()
        .map_err(draw_err)?;
    for (k, b) in bands.iter().enumerate() {
        let shade = SHADES[k % SHADES.len()];
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(b.from, y0), (b.to, y1)],
                shade.mix(0.6).filled(),
            )))
            .map_err(draw_err)?;
        if band_labels {
            chart
                .draw_series(std::iter::once(Text::new(
                    b.label.clone(),
                    (b.from, y1),
                    ("sans-serif", 14).into_font().color(&BLACK),
                )))
                .map_err(draw_err)?;
        }
    }
    for (i, s) in panel.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        for (k, run) in runs(&s.points, panel.break_over).into_iter().enumerate() {
            let drawn = chart
                .draw_series(LineSeries::new(run, color.stroke_width(2)))
                .map_err(draw_err)?;
            if k == 0 {
                drawn.label(s.name.clone()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
                });
            }
        }
    }
    if !panel.series.is_empty() {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(draw_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panels_bands_and_labels() {
        let panels = vec![
            Panel {
                y_label: "Mbit/s".into(),
                series: vec![
                    Series::new("upload", vec![(0.0, 0.0), (1.0, 95.0), (2.0, 94.0)]),
                    Series::new("download", vec![(0.0, 0.0), (1.0, 0.5)]),
                ],
                break_over: None,
            },
            Panel {
                y_label: "probe RTT ms".into(),
                series: vec![Series::new("udp probe", vec![(0.1, 0.2), (1.5, 99.0)])],
                break_over: Some(0.5),
            },
        ];
        let bands = vec![
            Band {
                from: 0.0,
                to: 1.0,
                label: "idle".into(),
            },
            Band {
                from: 1.0,
                to: 2.0,
                label: "upload".into(),
            },
        ];
        let svg = timeline_svg("rpm", "seconds", &panels, &bands).unwrap();
        for want in [
            "Mbit/s",
            "probe RTT ms",
            "idle",
            "upload",
            "download",
            "udp probe",
            "seconds",
        ] {
            assert!(svg.contains(want), "{want} missing");
        }
        assert!(timeline_svg("x", "s", &[], &bands).is_err());
        let bad = vec![Panel {
            y_label: "y".into(),
            series: vec![Series::new("n", vec![(f64::NAN, 1.0)])],
            break_over: None,
        }];
        let pts = [(0.0, 1.0), (0.1, 1.0), (2.0, 1.0), (2.1, 1.0), (2.2, 1.0)];
        assert_eq!(
            runs(&pts, Some(0.5))
                .iter()
                .map(Vec::len)
                .collect::<Vec<_>>(),
            [2, 3]
        );
        assert_eq!(runs(&pts, None).len(), 1);
        assert!(timeline_svg("x", "s", &bad, &[]).is_err());
    }
}
