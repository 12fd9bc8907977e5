//! The latency-against-offered-load plot, drawn as SVG.

use std::path::Path;

use plotters::prelude::*;

use crate::saga::LoadRun;

/// A line of the plot: its name, the latency it shows, its colour.
type Series = (&'static str, fn(&LoadRun) -> u64, RGBColor);

/// Latency (p50 and p99) against offered load, one point per rate.
pub fn latency_against_load(open: &[(f64, LoadRun)], path: &Path) -> anyhow::Result<()> {
    let max_rate = open.iter().map(|(r, _)| *r).fold(0.0, f64::max) * 1.1;
    let max_latency = open
        .iter()
        .map(|(_, run)| run.summary.latency_ms.p99 as f64)
        .fold(0.0, f64::max)
        * 1.15;
    let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "POST -> terminal event latency against offered load",
            ("sans-serif", 22),
        )
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..max_rate.max(1.0), 0.0..max_latency.max(1.0))?;
    chart
        .configure_mesh()
        .x_desc("offered orders/s (open loop)")
        .y_desc("latency (ms)")
        .draw()?;
    let series: [Series; 2] = [
        ("p50", |run| run.summary.latency_ms.p50, BLUE),
        ("p99", |run| run.summary.latency_ms.p99, RED),
    ];
    for (name, pick, color) in series {
        let points: Vec<(f64, f64)> = open
            .iter()
            .map(|(rate, run)| (*rate, pick(run) as f64))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 4, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;
    root.present()?;
    Ok(())
}
