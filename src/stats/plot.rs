//! Charts: one generic line-chart code path (plotters, SVG) used by every command that plots
//! (`load --plot`, `compare --plot`, later `traffic` and `blast --plot`).
//!
//! A chart is a set of named [`Series`] of `(x, y)` points drawn as lines with point markers,
//! with a title, axis labels and a legend. Points that were *not* measured (for example a sweep
//! point `compare` skipped because it would have exceeded its time budget) are listed in
//! [`Series::skipped`]: they are drawn as crosses on the x axis in the series' colour and the
//! legend entry says how many were skipped, so a missing point is visibly missing rather than
//! silently absent. Axes can be logarithmic ([`PlotOptions::log_x`], [`PlotOptions::log_y`]).
//!
//! Call [`check_output`] before a long measurement so that an unwritable path fails at once,
//! then [`line_chart`] at the end. [`line_chart_svg`] returns the SVG text instead of writing it.
//!
//! ```no_run
//! use netcore::stats::plot::{line_chart, PlotOptions, Series};
//! let s = vec![Series::new("epoll", vec![(10.0, 3.0), (100.0, 3.02)])];
//! line_chart("sweep.svg".as_ref(), "wall time", "clients", "seconds", &s, &PlotOptions::default())
//!     .unwrap();
//! ```

use std::path::Path;

use anyhow::{bail, Context, Result};
use plotters::prelude::*;

/// One line of a chart.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    /// Legend label.
    pub name: String,
    /// Measured points, in x order.
    pub points: Vec<(f64, f64)>,
    /// x positions that were not measured (drawn as crosses on the x axis).
    pub skipped: Vec<f64>,
}

impl Series {
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            name: name.into(),
            points,
            skipped: Vec::new(),
        }
    }

    /// A line of figures that may be unknown (None): the known ones are its points, the
    /// others its skipped x positions.
    pub fn with_unknown(
        name: impl Into<String>,
        figures: impl IntoIterator<Item = (f64, Option<f64>)>,
    ) -> Self {
        let mut s = Series::new(name, Vec::new());
        for (x, y) in figures {
            match y {
                Some(y) => s.points.push((x, y)),
                None => s.skipped.push(x),
            }
        }
        s
    }
}

/// Layout and axis options.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlotOptions {
    /// Image size in pixels.
    pub width: u32,
    pub height: u32,
    /// Logarithmic x axis (all x values must be > 0).
    pub log_x: bool,
    /// Logarithmic y axis (all y values must be > 0).
    pub log_y: bool,
    /// Start a linear y axis at zero rather than at the smallest value.
    pub y_from_zero: bool,
    /// x values are counts (clients): label integer positions only.
    pub integer_x: bool,
}

impl Default for PlotOptions {
    fn default() -> Self {
        PlotOptions {
            width: 960,
            height: 600,
            log_x: false,
            log_y: false,
            y_from_zero: true,
            integer_x: false,
        }
    }
}

/// Fails with one clear message if `path` cannot be written (missing directory, permissions,
/// wrong extension). Creates the file if it did not exist and removes it again.
pub(crate) fn check_output(path: &Path) -> Result<()> {
    if Format::of(path).is_none() {
        bail!("plot file '{}' must end in .svg or .png", path.display());
    }
    if Format::of(path) == Some(Format::Png) && !cfg!(feature = "png") {
        bail!(
            "plot file '{}': this netcore was built without PNG support (feature `png`); write .svg",
            path.display()
        );
    }
    let existed = path.exists();
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("cannot write plot file '{}'", path.display()))?;
    if !existed {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// Image formats a plot can be written in, chosen by the file name's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Svg,
    Png,
}

impl Format {
    fn of(path: &Path) -> Option<Format> {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("svg") => Some(Format::Svg),
            Some(e) if e.eq_ignore_ascii_case("png") => Some(Format::Png),
            _ => None,
        }
    }
}

/// Draws `series` as a line chart and writes it to `path`: SVG, or PNG when the name ends in
/// `.png` (the same SVG, rendered by resvg with the system's fonts).
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    opts: &PlotOptions,
) -> Result<()> {
    let svg = line_chart_svg(title, x_label, y_label, series, opts)?;
    write_svg(path, svg)
}

/// Writes an SVG document to `path`: as it is, or rendered to PNG when the name ends in `.png`.
pub(crate) fn write_svg(path: &Path, svg: String) -> Result<()> {
    let bytes = match Format::of(path) {
        Some(Format::Png) => svg_to_png(&svg)?,
        _ => svg.into_bytes(),
    };
    std::fs::write(path, bytes)
        .with_context(|| format!("cannot write plot file '{}'", path.display()))
}

/// Renders an SVG document to PNG bytes: not in a build without the `png` feature.
#[cfg(not(feature = "png"))]
pub(crate) fn svg_to_png(_svg: &str) -> Result<Vec<u8>> {
    bail!("this netcore was built without PNG support (feature `png`)")
}

/// Renders an SVG document to PNG bytes on a white background.
#[cfg(feature = "png")]
pub(crate) fn svg_to_png(svg: &str) -> Result<Vec<u8>> {
    use resvg::{tiny_skia, usvg};
    let mut opt = usvg::Options::default();
    opt.fontdb_mut().load_system_fonts();
    // The SVG asks for "sans-serif"; map it to a font this machine has.
    let families: Vec<String> = opt
        .fontdb
        .faces()
        .flat_map(|f| f.families.iter().map(|(name, _)| name.clone()))
        .collect();
    let pick = [
        "DejaVu Sans",
        "Liberation Sans",
        "Noto Sans",
        "Arial",
        "FreeSans",
    ]
    .iter()
    .find(|want| families.iter().any(|f| f == *want))
    .map(|s| s.to_string())
    .or_else(|| families.first().cloned());
    match pick {
        Some(family) => opt.fontdb_mut().set_sans_serif_family(family),
        None => eprintln!(
            "netcore: note: no system fonts found, the PNG has no text (install fonts-dejavu-core)"
        ),
    }
    let tree = usvg::Tree::from_str(svg, &opt).context("rendering the plot")?;
    let size = tree.size().to_int_size();
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height())
        .context("rendering the plot: empty image")?;
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(&tree, tiny_skia::Transform::default(), &mut pixmap.as_mut());
    pixmap.encode_png().context("encoding the PNG")
}

pub(crate) const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// Maps a value onto the drawn axis (log10 for a log axis).
fn axis(v: f64, log: bool) -> f64 {
    if log {
        v.log10()
    } else {
        v
    }
}

/// A tick label for an axis position.
pub(crate) fn tick(v: f64, log: bool) -> String {
    let x = if log { 10f64.powf(v) } else { v };
    let a = x.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1e6 {
        format!("{:.3e}", x)
    } else if a >= 100.0 || (x - x.round()).abs() < 1e-9 {
        format!("{:.0}", x)
    } else if a >= 1.0 {
        format!("{:.2}", x)
    } else {
        format!("{:.3}", x)
    }
}

/// Like [`line_chart`] but returns the SVG document.
pub(crate) fn line_chart_svg(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    opts: &PlotOptions,
) -> Result<String> {
    check_points(title, series, opts)?;
    let ((x0, x1), (y0, y1)) = ranges(series, opts);
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (opts.width, opts.height)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 24))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(70)
            .build_cartesian_2d(Axis::new(x0, x1, opts.log_x), Axis::new(y0, y1, opts.log_y))
            .map_err(draw_err)?;
        let (lx, ly) = (opts.log_x, opts.log_y);
        let int_x = opts.integer_x;
        let xf = move |v: &f64| {
            let x = if lx { 10f64.powf(*v) } else { *v };
            if int_x && (x - x.round()).abs() > 1e-6 {
                String::new()
            } else {
                tick(*v, lx)
            }
        };
        let yf = move |v: &f64| tick(*v, ly);
        chart
            .configure_mesh()
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .x_desc(x_label)
            .y_desc(y_label)
            .x_label_formatter(&xf)
            .y_label_formatter(&yf)
            .bold_line_style(RGBColor(225, 225, 225))
            .draw()
            .map_err(draw_err)?;
        for (i, s) in series.iter().enumerate() {
            draw_one(&mut chart, s, i, series.len(), opts, y0)?;
        }
        if !series.is_empty() {
            chart
                .configure_series_labels()
                .position(legend_corner(series, (x0, x1), (y0, y1), lx, ly))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 14))
                .draw()
                .map_err(draw_err)?;
        }
        root.present().map_err(draw_err)?;
    }
    Ok(out)
}

/// Every point finite, and positive on a logarithmic axis.
fn check_points(title: &str, series: &[Series], opts: &PlotOptions) -> Result<()> {
    if series.iter().any(|s| {
        s.points
            .iter()
            .any(|p| !p.0.is_finite() || !p.1.is_finite())
            || s.skipped.iter().any(|x| !x.is_finite())
    }) {
        bail!("plot '{title}': a point is not a finite number");
    }
    if opts.log_x && all_x(series).any(|x| x <= 0.0) {
        bail!("plot '{title}': a logarithmic x axis needs x > 0");
    }
    if opts.log_y && all_y(series).any(|y| y <= 0.0) {
        bail!("plot '{title}': a logarithmic y axis needs y > 0");
    }
    Ok(())
}

/// Every x of the series: the points' and the skipped ones'.
fn all_x(series: &[Series]) -> impl Iterator<Item = f64> + '_ {
    series.iter().flat_map(|s| {
        s.points
            .iter()
            .map(|p| p.0)
            .chain(s.skipped.iter().copied())
    })
}

/// Every y of the series' points.
fn all_y(series: &[Series]) -> impl Iterator<Item = f64> + '_ {
    series.iter().flat_map(|s| s.points.iter().map(|p| p.1))
}

/// The drawn x and y ranges: the data's, padded, y from zero if asked, with headroom above
/// the data for the legend (about one row per series), so that it sits on empty plot area
/// instead of over a line.
fn ranges(series: &[Series], opts: &PlotOptions) -> ((f64, f64), (f64, f64)) {
    let (mut x0, mut x1) = minmax(all_x(series).map(|x| axis(x, opts.log_x))).unwrap_or((0.0, 1.0));
    let (mut y0, mut y1) = minmax(all_y(series).map(|y| axis(y, opts.log_y))).unwrap_or((0.0, 1.0));
    if opts.y_from_zero && !opts.log_y {
        y0 = y0.min(0.0);
    }
    pad(&mut x0, &mut x1, 0.03);
    pad(&mut y0, &mut y1, 0.06);
    if !series.is_empty() {
        y1 += (y1 - y0) * (0.07 * series.len() as f64 + 0.04);
    }
    ((x0, x1), (y0, y1))
}

/// Draws series `i` of `n`: its line, its markers, its skipped points as crosses on the x
/// axis (at `y0`) and its legend entry.
fn draw_one<'a, DB: DrawingBackend + 'a>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<Axis, Axis>>,
    s: &Series,
    i: usize,
    n: usize,
    opts: &PlotOptions,
    y0: f64,
) -> Result<()> {
    let (lx, ly) = (opts.log_x, opts.log_y);
    let color = COLORS[i % COLORS.len()];
    // Each series has its own hollow marker, the earlier ones larger: where lines
    // coincide every series still shows (nested shapes), as in the legend.
    let shape = i % 4;
    let size = 4 + 2 * (n - 1 - i).min(4) as i32;
    let pts: Vec<(f64, f64)> = s
        .points
        .iter()
        .map(|&(x, y)| (axis(x, lx), axis(y, ly)))
        .collect();
    let label = if s.skipped.is_empty() {
        s.name.clone()
    } else {
        format!("{} ({} skipped: x)", s.name, s.skipped.len())
    };
    chart
        .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
        .map_err(draw_err)?
        .label(label)
        .legend(move |(x, y)| {
            EmptyElement::at((x, y))
                + PathElement::new(vec![(0, 0), (20, 0)], color.stroke_width(3))
                + marker((10, 0), shape, 5, color)
        });
    chart
        .draw_series(
            pts.iter()
                .map(|&p| EmptyElement::at(p) + marker((0, 0), shape, size, color)),
        )
        .map_err(draw_err)?;
    chart
        .draw_series(
            s.skipped
                .iter()
                .map(|&x| Cross::new((axis(x, lx), y0), 6, color.stroke_width(2))),
        )
        .map_err(draw_err)?;
    Ok(())
}

/// A hollow point marker at pixel offset `at`: circle, square, triangle or diamond by `shape`.
fn marker<DB: DrawingBackend>(
    at: (i32, i32),
    shape: usize,
    size: i32,
    color: RGBColor,
) -> DynElement<'static, DB, (i32, i32)> {
    let style = color.stroke_width(2);
    let (x, y) = at;
    match shape {
        0 => Circle::new(at, size, style).into_dyn(),
        1 => Rectangle::new([(x - size, y - size), (x + size, y + size)], style).into_dyn(),
        2 => PathElement::new(
            vec![
                (x, y - size),
                (x + size, y + size),
                (x - size, y + size),
                (x, y - size),
            ],
            style,
        )
        .into_dyn(),
        _ => PathElement::new(
            vec![
                (x, y - size),
                (x + size, y),
                (x, y + size),
                (x - size, y),
                (x, y - size),
            ],
            style,
        )
        .into_dyn(),
    }
}

/// A linear axis in drawn units (log10 of the value on a log axis) with our own tick choice.
pub(crate) struct Axis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl Axis {
    pub(crate) fn new(lo: f64, hi: f64, log: bool) -> Self {
        Axis {
            lo,
            hi,
            ticks: ticks(lo, hi, log),
        }
    }
}

impl plotters::coord::ranged1d::Ranged for Axis {
    type FormatOption = plotters::coord::ranged1d::DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let f = (v - self.lo) / (self.hi - self.lo);
        limit.0 + (f * (limit.1 - limit.0) as f64).round() as i32
    }

    fn key_points<H: plotters::coord::ranged1d::KeyPointHint>(&self, hint: H) -> Vec<f64> {
        // Light grid lines: none; bold ones: our ticks.
        if hint.max_num_points() == 0 || hint.bold_points() == 0 {
            return Vec::new();
        }
        self.ticks.clone()
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

/// Tick positions (in drawn-axis units): integer powers of ten (and 2x, 5x when the range is
/// short) on a log axis, multiples of 1, 2 or 5 x 10^k on a linear one; about 5 to 10 of them.
fn ticks(lo: f64, hi: f64, log: bool) -> Vec<f64> {
    if log {
        let mut v = Vec::new();
        let mults: &[f64] = if hi - lo <= 2.0 {
            &[1.0, 2.0, 5.0]
        } else {
            &[1.0]
        };
        let mut e = lo.floor();
        while e <= hi.ceil() {
            for m in mults {
                let t = e + m.log10();
                if t >= lo && t <= hi {
                    v.push(t);
                }
            }
            e += 1.0;
        }
        if v.len() >= 2 {
            return v;
        }
        // Less than a decade: fall back to linear ticks in value space.
        let (a, b) = (10f64.powf(lo), 10f64.powf(hi));
        return ticks(a, b, false)
            .into_iter()
            .filter(|x| *x > 0.0)
            .map(f64::log10)
            .collect();
    }
    let span = hi - lo;
    if span <= 0.0 || !span.is_finite() {
        return vec![lo];
    }
    let raw = span / 8.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 8.0)
        .unwrap_or(10.0 * mag);
    let mut v = Vec::new();
    let mut t = (lo / step).ceil() * step;
    while t <= hi + step * 1e-9 {
        v.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
        t += step;
    }
    v
}

/// The upper corner (left or right) whose top-third quarter of the plot holds fewer points, so
/// the legend hides as little data as possible.
fn legend_corner(
    series: &[Series],
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
    lx: bool,
    ly: bool,
) -> SeriesLabelPosition {
    let (mut left, mut right) = (0, 0);
    for &(x, y) in series.iter().flat_map(|s| &s.points) {
        let fx = (axis(x, lx) - x0) / (x1 - x0);
        let fy = (axis(y, ly) - y0) / (y1 - y0);
        if fy > 0.6 {
            if fx < 0.45 {
                left += 1;
            } else if fx > 0.55 {
                right += 1;
            }
        }
    }
    if left > right {
        SeriesLabelPosition::UpperRight
    } else {
        SeriesLabelPosition::UpperLeft
    }
}

pub(crate) fn minmax(it: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    it.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((a, b)) => Some((a.min(v), b.max(v))),
    })
}

pub(crate) fn pad(lo: &mut f64, hi: &mut f64, frac: f64) {
    if *hi - *lo < 1e-12 {
        let d = if lo.abs() > 1e-12 {
            lo.abs() * 0.1
        } else {
            1.0
        };
        *lo -= d;
        *hi += d;
    } else {
        let d = (*hi - *lo) * frac;
        *lo -= d;
        *hi += d;
    }
}

pub(crate) fn draw_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("cannot draw plot: {e:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Series> {
        let mut a = Series::new("iterative", vec![(10.0, 30.1), (20.0, 60.2)]);
        a.skipped = vec![50.0, 100.0];
        vec![
            a,
            Series::new(
                "epoll",
                vec![(10.0, 3.0), (20.0, 3.0), (50.0, 3.01), (100.0, 3.02)],
            ),
        ]
    }

    #[test]
    fn coinciding_series_all_show_and_count_axes_have_integer_ticks() {
        // Two models with the same figures: the first one's larger hollow circles stay visible
        // around the second one's squares.
        let pts = vec![(1.0, 3.0), (2.0, 3.0), (3.0, 3.0), (4.0, 3.0)];
        let s = vec![Series::new("thread", pts.clone()), Series::new("fork", pts)];
        let opts = PlotOptions {
            integer_x: true,
            ..PlotOptions::default()
        };
        let svg = line_chart_svg("wall", "clients", "seconds", &s, &opts).unwrap();
        assert!(svg.matches(r#"r="6""#).count() >= 4, "no larger circles");
        assert!(svg.matches(r#"width="8""#).count() >= 4, "no squares");
        for half in [">1.50<", ">2.50<", ">3.50<", ">1.5<", ">2.5<"] {
            assert!(!svg.contains(half), "a client count of {half}");
        }
    }

    #[test]
    fn svg_has_labels_and_legend() {
        let svg = line_chart_svg(
            "wall",
            "clients",
            "seconds",
            &sample(),
            &PlotOptions::default(),
        )
        .unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        assert!(svg.trim_end().ends_with("</svg>"));
        for s in [
            "wall",
            "clients",
            "seconds",
            "epoll",
            "iterative (2 skipped: x)",
        ] {
            assert!(svg.contains(s), "missing {s}");
        }
        // One polyline per series (plus the legend samples).
        assert!(svg.matches("<polyline").count() >= 2);
    }

    #[test]
    fn log_axes_and_bad_values() {
        let o = PlotOptions {
            log_x: true,
            log_y: true,
            ..PlotOptions::default()
        };
        let svg = line_chart_svg("t", "x", "y", &sample(), &o).unwrap();
        // plotters puts each text on its own line.
        assert!(
            svg.contains("\n100\n") && svg.contains("\n10\n"),
            "log ticks"
        );
        assert_eq!(ticks(0.0, 3.0, true), vec![0.0, 1.0, 2.0, 3.0]);
        assert_eq!(ticks(0.0, 10.0, false).len(), 6);
        let bad = vec![Series::new("z", vec![(0.0, 1.0)])];
        assert!(line_chart_svg("t", "x", "y", &bad, &o).is_err());
        let nan = vec![Series::new("z", vec![(1.0, f64::NAN)])];
        assert!(line_chart_svg("t", "x", "y", &nan, &PlotOptions::default()).is_err());
        // Empty and single-point charts still render.
        assert!(line_chart_svg("t", "x", "y", &[], &PlotOptions::default()).is_ok());
        let one = vec![Series::new("one", vec![(5.0, 5.0)])];
        assert!(line_chart_svg("t", "x", "y", &one, &PlotOptions::default()).is_ok());
    }

    #[test]
    fn output_checks() {
        assert!(check_output(Path::new("/nonexistent-dir/x.svg")).is_err());
        assert!(check_output(Path::new("plot.gif")).is_err());
        let dir = std::env::temp_dir().join(format!("netcore-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.svg");
        check_output(&p).unwrap();
        assert!(!p.exists(), "the probe file is removed again");
        line_chart(&p, "t", "x", "y", &sample(), &PlotOptions::default()).unwrap();
        assert!(std::fs::read_to_string(&p).unwrap().contains("epoll"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
