//! Timeline picture of one test run, in the spirit of Jepsen's `timeline.html`.
//!
//! This module owns turning a run's operations and fault windows into a single
//! SVG file: one horizontal lane per client process, time on the x axis in
//! seconds since the run started, each operation a bar from its invocation to
//! its completion coloured by outcome, and nemesis activity shaded across all
//! lanes with the fault's name written above the window.
//!
//! Rendering never panics on odd input: timestamps outside the run, ends before
//! starts and a zero run length are clamped rather than rejected, because a
//! picture of a broken run is exactly when the picture is most needed.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// How an operation ended, as seen by the client that issued it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Ok,
    Fail,
    Info,
}

/// One client operation, from invocation to completion.
#[derive(Debug, Clone)]
pub struct TimelineOp {
    /// Lane name, e.g. "client 3" or "register p12"; lanes are ordered by first appearance.
    pub lane: String,
    pub start_us: u64,
    /// None: never completed (indeterminate), drawn to the end of the run.
    pub end_us: Option<u64>,
    pub outcome: Outcome,
    /// Short text, e.g. "cas 3->4" (used for hover text if supported).
    pub label: String,
}

/// A period during which a fault (partition, crash, pause, ...) was active.
#[derive(Debug, Clone)]
pub struct FaultWindow {
    pub name: String,
    pub start_us: u64,
    /// None: still active at the end of the run
    pub end_us: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum TimelineError {
    #[error("cannot draw the timeline {path}: {reason}")]
    Draw { path: String, reason: String },
}

const CANVAS_WIDTH_PX: u32 = 1600;
/// Height of one lane; fault-name rows use the same height so that every row
/// of the plot is addressed the same way.
const ROW_HEIGHT_PX: u32 = 18;
/// Vertical gap between a bar and the edge of its lane, so neighbouring lanes
/// stay visually separate and fault shading shows between them.
const BAR_INSET_PX: i32 = 3;
const HEADER_HEIGHT_PX: u32 = 44;
const X_AXIS_AREA_PX: u32 = 48;
const RIGHT_MARGIN_PX: u32 = 24;
const EMPTY_RUN_ROWS: usize = 3;
const MIN_LANE_LABEL_AREA_PX: u32 = 56;
const MAX_LANE_LABEL_CHARS: usize = 32;
/// Beyond this many rows of fault names, further overlapping names share a
/// row: a tall stack of labels would push the lanes out of view.
const MAX_FAULT_LABEL_ROWS: usize = 4;
/// Run length used when neither the caller nor the data says how long the run was.
const FALLBACK_AXIS_SPAN_US: u64 = 1_000_000;
const MAX_TICK_LABELS: usize = 16;

/// Font sizes as plotters takes them; its SVG backend writes `size / 1.24` as
/// the CSS font size.
const TITLE_FONT_SIZE: f64 = 22.0;
const AXIS_FONT_SIZE: f64 = 14.0;
const LANE_FONT_SIZE: f64 = 14.0;
const FAULT_FONT_SIZE: f64 = 14.0;
const BAR_FONT_SIZE: f64 = 12.0;
const FONT_FAMILY: &str = "sans-serif";

const OK_COLOR: RGBColor = RGBColor(44, 160, 44);
const FAIL_COLOR: RGBColor = RGBColor(214, 39, 40);
const INFO_COLOR: RGBColor = RGBColor(255, 127, 14);
const FAULT_COLOR: RGBColor = RGBColor(70, 100, 180);
const FAULT_TEXT_COLOR: RGBColor = RGBColor(30, 50, 120);
const LANE_STRIPE_COLOR: RGBColor = RGBColor(245, 245, 248);
const GRID_COLOR: RGBColor = RGBColor(215, 215, 222);
const TEXT_COLOR: RGBColor = RGBColor(30, 30, 30);
const MUTED_TEXT_COLOR: RGBColor = RGBColor(130, 130, 130);

const FAULT_SHADE_OPACITY: f64 = 0.14;
/// Operations that never completed are drawn translucent and underneath the
/// completed ones, so a lane that keeps working after a lost reply stays readable.
const OPEN_ENDED_OPACITY: f64 = 0.55;

impl Outcome {
    fn color(self) -> RGBColor {
        match self {
            Outcome::Ok => OK_COLOR,
            Outcome::Fail => FAIL_COLOR,
            Outcome::Info => INFO_COLOR,
        }
    }
}

/// Draws the timeline to `path` (an .svg file). `duration_us` is the length of the run.
pub fn render_svg(
    path: &Path,
    title: &str,
    duration_us: u64,
    ops: &[TimelineOp],
    faults: &[FaultWindow],
) -> Result<(), TimelineError> {
    let draw_error = |reason: String| TimelineError::Draw {
        path: path.display().to_string(),
        reason,
    };
    let layout = Layout::new(duration_us, ops, faults);
    let root =
        SVGBackend::new(path, (CANVAS_WIDTH_PX, layout.canvas_height_px())).into_drawing_area();
    draw_timeline(&root, title, &layout, ops, faults).map_err(|e| draw_error(e.to_string()))?;
    // The backend would also write the file when dropped, but silently
    // discard any I/O error; presenting explicitly surfaces it.
    root.present().map_err(|e| draw_error(e.to_string()))
}

/// Everything about the picture's geometry that can be decided before drawing.
struct Layout<'a> {
    axis_end_us: u64,
    lane_names: Vec<&'a str>,
    lane_of_op: Vec<usize>,
    fault_label_row: Vec<usize>,
    fault_label_rows: usize,
    lane_label_area_px: u32,
}

impl<'a> Layout<'a> {
    fn new(duration_us: u64, ops: &'a [TimelineOp], faults: &[FaultWindow]) -> Self {
        let axis_end_us = axis_end_us(duration_us, ops, faults);
        let (lane_names, lane_of_op) = assign_lanes(ops);
        let lane_label_area_px = lane_names
            .iter()
            .map(|name| estimated_text_width_px(&lane_label_text(name), LANE_FONT_SIZE))
            .max()
            .map_or(0, |width| width + 16)
            .max(MIN_LANE_LABEL_AREA_PX);
        let plot_width_px = CANVAS_WIDTH_PX.saturating_sub(lane_label_area_px + RIGHT_MARGIN_PX);
        let (fault_label_row, fault_label_rows) =
            assign_fault_label_rows(faults, axis_end_us, plot_width_px);
        Self {
            axis_end_us,
            lane_names,
            lane_of_op,
            fault_label_row,
            fault_label_rows,
            lane_label_area_px,
        }
    }

    /// An empty run still gets a few blank rows so the chart has a body to
    /// show its fault windows and the "no operations" note in.
    fn lane_rows(&self) -> usize {
        if self.lane_names.is_empty() {
            EMPTY_RUN_ROWS
        } else {
            self.lane_names.len()
        }
    }

    fn total_rows(&self) -> usize {
        self.fault_label_rows + self.lane_rows()
    }

    fn canvas_height_px(&self) -> u32 {
        let rows = u32::try_from(self.total_rows()).unwrap_or(u32::MAX);
        rows.saturating_mul(ROW_HEIGHT_PX)
            .saturating_add(HEADER_HEIGHT_PX + X_AXIS_AREA_PX)
    }
}

/// The run length on the x axis: the caller's duration when known, otherwise
/// the latest timestamp in the data, so a run with an unknown length still
/// shows everything.
fn axis_end_us(duration_us: u64, ops: &[TimelineOp], faults: &[FaultWindow]) -> u64 {
    if duration_us > 0 {
        return duration_us;
    }
    let op_times = ops
        .iter()
        .flat_map(|op| [Some(op.start_us), op.end_us])
        .flatten();
    let fault_times = faults
        .iter()
        .flat_map(|fault| [Some(fault.start_us), fault.end_us])
        .flatten();
    match op_times.chain(fault_times).max() {
        Some(latest) if latest > 0 => latest,
        _ => FALLBACK_AXIS_SPAN_US,
    }
}

/// Lanes in order of first appearance, and the lane of each operation.
fn assign_lanes(ops: &[TimelineOp]) -> (Vec<&str>, Vec<usize>) {
    let mut lane_names: Vec<&str> = Vec::new();
    let mut lane_index: HashMap<&str, usize> = HashMap::new();
    let lane_of_op = ops
        .iter()
        .map(|op| {
            *lane_index.entry(op.lane.as_str()).or_insert_with(|| {
                lane_names.push(op.lane.as_str());
                lane_names.len() - 1
            })
        })
        .collect();
    (lane_names, lane_of_op)
}

/// Clamps an interval into the run and makes sure it does not end before it starts.
fn clamp_interval(start_us: u64, end_us: Option<u64>, axis_end_us: u64) -> (u64, u64) {
    let start = start_us.min(axis_end_us);
    let end = end_us.unwrap_or(axis_end_us).clamp(start, axis_end_us);
    (start, end)
}

/// Greedily places each fault name in the first row where it does not collide
/// with an earlier name, so concurrent faults (a partition during a pause)
/// stay legible. Returns each fault's row and the number of rows used.
fn assign_fault_label_rows(
    faults: &[FaultWindow],
    axis_end_us: u64,
    plot_width_px: u32,
) -> (Vec<usize>, usize) {
    let mut order: Vec<usize> = (0..faults.len()).collect();
    order.sort_by_key(|&i| clamp_interval(faults[i].start_us, faults[i].end_us, axis_end_us).0);

    let mut row_of_fault = vec![0; faults.len()];
    let mut row_ends_px: Vec<u64> = Vec::new();
    for i in order {
        let (start_us, _) = clamp_interval(faults[i].start_us, faults[i].end_us, axis_end_us);
        let start_px = scale_to_px(start_us, axis_end_us, plot_width_px);
        let end_px =
            start_px + u64::from(estimated_text_width_px(&faults[i].name, FAULT_FONT_SIZE)) + 8;
        let row = match row_ends_px.iter().position(|&row_end| row_end <= start_px) {
            Some(free_row) => free_row,
            None if row_ends_px.len() < MAX_FAULT_LABEL_ROWS => {
                row_ends_px.push(0);
                row_ends_px.len() - 1
            }
            None => (0..row_ends_px.len())
                .min_by_key(|&row| row_ends_px[row])
                .unwrap_or(0),
        };
        row_ends_px[row] = end_px;
        row_of_fault[i] = row;
    }
    (row_of_fault, row_ends_px.len())
}

fn scale_to_px(time_us: u64, axis_end_us: u64, width_px: u32) -> u64 {
    let fraction = time_us.min(axis_end_us) as f64 / axis_end_us.max(1) as f64;
    (fraction * f64::from(width_px)).round() as u64
}

/// SVG carries no text metrics, so widths are estimated from a generous
/// average glyph width; the estimate only needs to keep labels from colliding.
fn estimated_text_width_px(text: &str, font_size: f64) -> u32 {
    let rendered_size = font_size / 1.24;
    (text.chars().count() as f64 * rendered_size * 0.6).ceil() as u32
}

fn lane_label_text(name: &str) -> String {
    if name.chars().count() <= MAX_LANE_LABEL_CHARS {
        name.to_owned()
    } else {
        let kept: String = name.chars().take(MAX_LANE_LABEL_CHARS - 1).collect();
        format!("{kept}…")
    }
}

/// Tick labels with as many decimals as the value needs, since plotters picks
/// tick steps from 1/2/5 × 10^k and a fixed precision would either round
/// half-second ticks or print long runs of zeros.
fn format_seconds(seconds: f64) -> String {
    let text = format!("{seconds:.6}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".to_owned()
    } else {
        text.to_owned()
    }
}

fn text_style(size: f64, color: RGBColor, h_pos: HPos, v_pos: VPos) -> TextStyle<'static> {
    (FONT_FAMILY, size)
        .into_font()
        .color(&color)
        .pos(Pos::new(h_pos, v_pos))
}

/// Pixel geometry of the plotting area, taken from plotters after it has laid
/// out the axes, so bars line up with its tick marks.
struct PlotGeometry {
    left: i32,
    right: i32,
    top: i32,
    bottom: i32,
    axis_end_us: u64,
    total_rows: usize,
}

impl PlotGeometry {
    fn x_of(&self, time_us: u64) -> i32 {
        let width = u32::try_from(self.right - self.left).unwrap_or(0);
        self.left + i32::try_from(scale_to_px(time_us, self.axis_end_us, width)).unwrap_or(0)
    }

    fn row_top(&self, row: usize) -> i32 {
        let row_height = f64::from(self.bottom - self.top) / self.total_rows.max(1) as f64;
        self.top + (row as f64 * row_height).round() as i32
    }

    /// The horizontal pixel span of an interval, at least one pixel wide so
    /// that very short operations in a long run remain visible.
    fn x_span(&self, start_us: u64, end_us: u64) -> (i32, i32) {
        let x0 = self.x_of(start_us);
        let x1 = self.x_of(end_us).max(x0 + 1);
        (x0, x1)
    }
}

fn draw_timeline<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    layout: &Layout,
    ops: &[TimelineOp],
    faults: &[FaultWindow],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;

    let axis_end_s = layout.axis_end_us as f64 / 1e6;
    let mut chart = ChartBuilder::on(root)
        .margin_top(HEADER_HEIGHT_PX)
        .margin_right(RIGHT_MARGIN_PX)
        .x_label_area_size(X_AXIS_AREA_PX)
        .y_label_area_size(layout.lane_label_area_px)
        .build_cartesian_2d(0f64..axis_end_s, 0f64..layout.total_rows() as f64)?;

    let (x_range, y_range) = chart.plotting_area().get_pixel_range();
    let plot = PlotGeometry {
        left: x_range.start,
        right: x_range.end,
        top: y_range.start,
        bottom: y_range.end,
        axis_end_us: layout.axis_end_us,
        total_rows: layout.total_rows(),
    };

    draw_lane_stripes(root, &plot, layout)?;

    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_labels(MAX_TICK_LABELS)
        .x_label_formatter(&|seconds| format_seconds(*seconds))
        .x_desc("seconds since start")
        .label_style((FONT_FAMILY, AXIS_FONT_SIZE))
        .axis_desc_style((FONT_FAMILY, AXIS_FONT_SIZE))
        .bold_line_style(GRID_COLOR)
        .light_line_style(GRID_COLOR.mix(0.35))
        .draw()?;

    draw_fault_shading(root, &plot, faults)?;
    draw_operation_bars(root, &plot, layout, ops)?;
    draw_fault_markers(root, &plot, layout, faults)?;
    draw_lane_labels(root, &plot, layout)?;
    if ops.is_empty() {
        let lanes_middle = (plot.row_top(layout.fault_label_rows) + plot.bottom) / 2;
        root.draw_text(
            "no operations recorded",
            &text_style(LANE_FONT_SIZE, MUTED_TEXT_COLOR, HPos::Center, VPos::Center),
            ((plot.left + plot.right) / 2, lanes_middle),
        )?;
    }
    draw_header(root, title, &plot)
}

/// Alternate lanes get a faint background so a bar can be followed to its
/// lane label across a wide chart.
fn draw_lane_stripes<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    plot: &PlotGeometry,
    layout: &Layout,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    for lane in (1..layout.lane_names.len()).step_by(2) {
        let row = layout.fault_label_rows + lane;
        root.draw(&Rectangle::new(
            [
                (plot.left, plot.row_top(row)),
                (plot.right, plot.row_top(row + 1)),
            ],
            LANE_STRIPE_COLOR.filled(),
        ))?;
    }
    Ok(())
}

fn draw_fault_shading<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    plot: &PlotGeometry,
    faults: &[FaultWindow],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    for fault in faults {
        let (start_us, end_us) = clamp_interval(fault.start_us, fault.end_us, plot.axis_end_us);
        let (x0, x1) = plot.x_span(start_us, end_us);
        root.draw(&Rectangle::new(
            [(x0, plot.top), (x1, plot.bottom)],
            FAULT_COLOR.mix(FAULT_SHADE_OPACITY).filled(),
        ))?;
    }
    Ok(())
}

fn draw_operation_bars<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    plot: &PlotGeometry,
    layout: &Layout,
    ops: &[TimelineOp],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let label_style = text_style(BAR_FONT_SIZE, TEXT_COLOR, HPos::Left, VPos::Center);
    let (open_ended, completed): (Vec<_>, Vec<_>) = ops
        .iter()
        .zip(&layout.lane_of_op)
        .partition(|(op, _)| op.end_us.is_none());

    // In a dense run many operations collapse onto the same pixels; drawing
    // each identical rectangle once keeps the file small without changing
    // the picture.
    let mut drawn: HashSet<(usize, i32, i32, Outcome, bool)> = HashSet::with_capacity(ops.len());
    for (op, &lane) in open_ended.into_iter().chain(completed) {
        let is_open_ended = op.end_us.is_none();
        let (start_us, end_us) = clamp_interval(op.start_us, op.end_us, plot.axis_end_us);
        let (x0, mut x1) = plot.x_span(start_us, end_us);
        // Back-to-back operations of one client would merge into a single
        // block; a one-pixel gap keeps them countable.
        if x1 - x0 >= 4 {
            x1 -= 1;
        }
        if !drawn.insert((lane, x0, x1, op.outcome, is_open_ended)) {
            continue;
        }

        let row = layout.fault_label_rows + lane;
        let (top, bottom) = (plot.row_top(row), plot.row_top(row + 1));
        let color = op.outcome.color();
        let fill = if is_open_ended {
            color.mix(OPEN_ENDED_OPACITY).filled()
        } else {
            color.filled()
        };
        root.draw(&Rectangle::new(
            [(x0, top + BAR_INSET_PX), (x1, bottom - BAR_INSET_PX)],
            fill,
        ))?;

        // The SVG backend has no way to attach hover text to an element, so
        // the label is written inside bars wide enough to hold it instead.
        let label_width = estimated_text_width_px(&op.label, BAR_FONT_SIZE);
        if !op.label.is_empty() && i64::from(x1 - x0) >= i64::from(label_width) + 6 {
            root.draw_text(&op.label, &label_style, (x0 + 3, (top + bottom) / 2))?;
        }
    }
    Ok(())
}

/// Window edges and names go on top of the bars, so the exact moment a fault
/// started is visible even in a fully packed lane.
fn draw_fault_markers<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    plot: &PlotGeometry,
    layout: &Layout,
    faults: &[FaultWindow],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let edge_style = FAULT_COLOR.mix(0.6).stroke_width(1);
    let name_style = text_style(FAULT_FONT_SIZE, FAULT_TEXT_COLOR, HPos::Left, VPos::Center);
    for (fault, &row) in faults.iter().zip(&layout.fault_label_row) {
        let (start_us, end_us) = clamp_interval(fault.start_us, fault.end_us, plot.axis_end_us);
        let (x0, x1) = plot.x_span(start_us, end_us);
        root.draw(&PathElement::new(
            vec![(x0, plot.top), (x0, plot.bottom)],
            edge_style,
        ))?;
        // A fault still active at the end of the run has no end to mark.
        if fault.end_us.is_some() {
            root.draw(&PathElement::new(
                vec![(x1, plot.top), (x1, plot.bottom)],
                edge_style,
            ))?;
        }

        let name_width = i32::try_from(estimated_text_width_px(&fault.name, FAULT_FONT_SIZE))
            .unwrap_or(i32::MAX);
        // Keep names of faults that start near the end of the run on the canvas.
        let name_x = (x0 + 4).min(plot.right - name_width).max(plot.left + 2);
        let name_y = (plot.row_top(row) + plot.row_top(row + 1)) / 2;
        root.draw_text(&fault.name, &name_style, (name_x, name_y))?;
    }
    Ok(())
}

fn draw_lane_labels<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    plot: &PlotGeometry,
    layout: &Layout,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let style = text_style(LANE_FONT_SIZE, TEXT_COLOR, HPos::Right, VPos::Center);
    for (lane, name) in layout.lane_names.iter().enumerate() {
        let row = layout.fault_label_rows + lane;
        let middle = (plot.row_top(row) + plot.row_top(row + 1)) / 2;
        root.draw_text(&lane_label_text(name), &style, (plot.left - 8, middle))?;
    }
    Ok(())
}

/// Title on the left, legend on the right, both above the plot.
fn draw_header<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    plot: &PlotGeometry,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let middle = i32::try_from(HEADER_HEIGHT_PX / 2).unwrap_or(0);
    root.draw_text(
        title,
        &text_style(TITLE_FONT_SIZE, TEXT_COLOR, HPos::Left, VPos::Center),
        (plot.left, middle),
    )?;

    let legend = [
        ("ok", OK_COLOR.filled()),
        ("fail", FAIL_COLOR.filled()),
        ("info (indeterminate)", INFO_COLOR.filled()),
        ("fault", FAULT_COLOR.mix(0.35).filled()),
    ];
    const SWATCH_PX: i32 = 12;
    const SWATCH_GAP_PX: i32 = 5;
    const ENTRY_GAP_PX: i32 = 18;
    let entry_widths: Vec<i32> = legend
        .iter()
        .map(|(name, _)| {
            let text = i32::try_from(estimated_text_width_px(name, AXIS_FONT_SIZE)).unwrap_or(0);
            SWATCH_PX + SWATCH_GAP_PX + text
        })
        .collect();
    let legend_width: i32 =
        entry_widths.iter().sum::<i32>() + ENTRY_GAP_PX * (legend.len() as i32 - 1);
    let label_style = text_style(AXIS_FONT_SIZE, TEXT_COLOR, HPos::Left, VPos::Center);
    let mut x = plot.right - legend_width;
    for ((name, swatch_style), width) in legend.iter().zip(entry_widths) {
        root.draw(&Rectangle::new(
            [
                (x, middle - SWATCH_PX / 2),
                (x + SWATCH_PX, middle + SWATCH_PX / 2),
            ],
            *swatch_style,
        ))?;
        root.draw_text(name, &label_style, (x + SWATCH_PX + SWATCH_GAP_PX, middle))?;
        x += width + ENTRY_GAP_PX;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn op(
        lane: &str,
        start_us: u64,
        end_us: Option<u64>,
        outcome: Outcome,
        label: &str,
    ) -> TimelineOp {
        TimelineOp {
            lane: lane.to_owned(),
            start_us,
            end_us,
            outcome,
            label: label.to_owned(),
        }
    }

    fn fault(name: &str, start_us: u64, end_us: Option<u64>) -> FaultWindow {
        FaultWindow {
            name: name.to_owned(),
            start_us,
            end_us,
        }
    }

    fn hex(color: RGBColor) -> String {
        format!("#{:02X}{:02X}{:02X}", color.0, color.1, color.2)
    }

    fn render_to_string(duration_us: u64, ops: &[TimelineOp], faults: &[FaultWindow]) -> String {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("timeline.svg");
        render_svg(&path, "test run", duration_us, ops, faults).expect("render");
        fs::read_to_string(&path).expect("read svg")
    }

    fn assert_svg(text: &str) {
        let head = text.trim_start();
        assert!(
            head.starts_with("<svg") || head.starts_with("<?xml"),
            "not SVG: {}",
            &head[..head.len().min(80)]
        );
        assert!(text.trim_end().ends_with("</svg>"), "SVG not closed");
    }

    #[test]
    fn small_run_has_lanes_title_faults_and_outcome_colours() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("small.svg");
        let ops = vec![
            op("client 0", 100_000, Some(900_000), Outcome::Ok, "write 1"),
            op(
                "client 1",
                200_000,
                Some(1_500_000),
                Outcome::Fail,
                "cas 3->4",
            ),
            op(
                "client 0",
                1_000_000,
                Some(1_200_000),
                Outcome::Ok,
                "read 1",
            ),
            op("register p12", 2_000_000, None, Outcome::Info, "write 7"),
            op(
                "client 1",
                3_000_000,
                Some(3_500_000),
                Outcome::Info,
                "read",
            ),
        ];
        let faults = vec![
            fault("partition majorities-ring", 1_000_000, Some(4_000_000)),
            fault("kill n3", 5_000_000, None),
        ];
        render_svg(&path, "register, 5 nodes", 10_000_000, &ops, &faults).expect("render");

        assert!(path.exists());
        let text = fs::read_to_string(&path).expect("read svg");
        assert_svg(&text);
        for expected in [
            "client 0",
            "client 1",
            "register p12",
            "register, 5 nodes",
            "partition majorities-ring",
            "kill n3",
            "seconds since start",
        ] {
            assert!(text.contains(expected), "missing {expected:?}");
        }
        // Each outcome colour fills its legend swatch and at least one bar.
        for color in [OK_COLOR, FAIL_COLOR, INFO_COLOR] {
            let fill = format!("fill=\"{}\"", hex(color));
            let uses = text.matches(&fill).count();
            assert!(uses >= 2, "colour {} used {uses} times", hex(color));
        }
        // Labels are written inside wide bars, escaped for XML.
        assert!(text.contains("cas 3-&gt;4"), "missing escaped bar label");
    }

    #[test]
    fn lanes_are_ordered_by_first_appearance() {
        let ops = vec![
            op("zeta", 0, Some(1), Outcome::Ok, ""),
            op("alpha", 0, Some(1), Outcome::Ok, ""),
            op("zeta", 2, Some(3), Outcome::Ok, ""),
            op("mid", 0, Some(1), Outcome::Ok, ""),
        ];
        let (names, lane_of_op) = assign_lanes(&ops);
        assert_eq!(names, vec!["zeta", "alpha", "mid"]);
        assert_eq!(lane_of_op, vec![0, 1, 0, 2]);
    }

    #[test]
    fn empty_run_still_draws_chart_with_faults() {
        let text = render_to_string(
            5_000_000,
            &[],
            &[fault("pause n1", 1_000_000, Some(2_000_000))],
        );
        assert_svg(&text);
        assert!(text.contains("pause n1"));
        assert!(text.contains("no operations recorded"));
        assert!(text.contains("test run"));

        let text = render_to_string(0, &[], &[]);
        assert_svg(&text);
    }

    #[test]
    fn degenerate_input_is_clamped_not_rejected() {
        let ops = vec![
            op("", 500, Some(100), Outcome::Ok, "ends before it starts"),
            op(
                "client 0",
                u64::MAX,
                None,
                Outcome::Info,
                "starts after the run",
            ),
            op(
                "client 0",
                0,
                Some(u64::MAX),
                Outcome::Fail,
                "ends after the run",
            ),
        ];
        let faults = vec![
            fault("", 10, Some(5)),
            fault("late", u64::MAX, Some(u64::MAX)),
        ];
        for duration_us in [0, 1, 1_000] {
            let text = render_to_string(duration_us, &ops, &faults);
            assert_svg(&text);
        }
        assert_eq!(clamp_interval(500, Some(100), 1_000), (500, 500));
        assert_eq!(clamp_interval(2_000, None, 1_000), (1_000, 1_000));
        assert_eq!(clamp_interval(10, Some(5_000), 1_000), (10, 1_000));
    }

    #[test]
    fn very_short_operation_is_at_least_one_pixel_wide() {
        let ops = vec![op(
            "client 0",
            50_000_000,
            Some(50_000_001),
            Outcome::Fail,
            "",
        )];
        let text = render_to_string(100_000_000, &ops, &[]);
        let fill = format!("fill=\"{}\"", hex(FAIL_COLOR));
        let fail_rects: Vec<&str> = text
            .lines()
            .filter(|line| line.starts_with("<rect") && line.contains(&fill))
            .collect();
        // One legend swatch plus the bar itself.
        assert_eq!(fail_rects.len(), 2, "{fail_rects:?}");
        assert!(
            fail_rects.iter().any(|rect| rect.contains("width=\"1\"")),
            "no one-pixel bar among {fail_rects:?}"
        );
    }

    #[test]
    fn concurrent_fault_names_get_separate_rows() {
        let faults = vec![
            fault("partition", 1_000_000, Some(5_000_000)),
            fault("pause n2", 1_100_000, Some(2_000_000)),
            fault("kill n4", 9_000_000, None),
        ];
        let (rows, row_count) = assign_fault_label_rows(&faults, 10_000_000, 1_400);
        assert_ne!(rows[0], rows[1]);
        assert_eq!(rows[2], 0, "a later, distant fault reuses the first row");
        assert_eq!(row_count, 2);

        let (rows, row_count) = assign_fault_label_rows(&[], 10_000_000, 1_400);
        assert!(rows.is_empty());
        assert_eq!(row_count, 0);
    }

    #[test]
    fn tick_labels_use_only_needed_decimals() {
        assert_eq!(format_seconds(0.0), "0");
        assert_eq!(format_seconds(10.0), "10");
        assert_eq!(format_seconds(0.5), "0.5");
        assert_eq!(format_seconds(0.30000000000000004), "0.3");
        assert_eq!(format_seconds(0.0025), "0.0025");
    }

    #[test]
    fn twenty_thousand_operations_stay_bounded_in_size() {
        let lanes = 20;
        let ops: Vec<TimelineOp> = (0..20_000u64)
            .map(|i| {
                let lane = i % lanes;
                let start_us = i * 3_000 + lane * 100;
                let outcome = match i % 10 {
                    0 => Outcome::Fail,
                    1 => Outcome::Info,
                    _ => Outcome::Ok,
                };
                let end_us = (i % 97 != 0).then_some(start_us + 2_500);
                op(&format!("client {lane}"), start_us, end_us, outcome, "read")
            })
            .collect();
        let faults: Vec<FaultWindow> = (0..12u64)
            .map(|i| {
                fault(
                    &format!("fault {i}"),
                    i * 5_000_000,
                    Some(i * 5_000_000 + 2_000_000),
                )
            })
            .collect();

        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("large.svg");
        render_svg(&path, "large run", 60_000_000, &ops, &faults).expect("render");
        let size = fs::metadata(&path).expect("svg written").len();
        assert!(size > 0);
        assert!(size < 20 * 1024 * 1024, "timeline is {size} bytes");
        let text = fs::read_to_string(&path).expect("read svg");
        assert_svg(&text);
        assert!(text.contains("client 19"));
    }

    #[test]
    fn unwritable_path_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("missing-dir").join("timeline.svg");
        let error = render_svg(&path, "t", 1_000, &[], &[]).expect_err("no such directory");
        let TimelineError::Draw { path: reported, .. } = &error;
        assert!(reported.contains("missing-dir"));
        assert!(error.to_string().starts_with("cannot draw the timeline"));
    }
}
