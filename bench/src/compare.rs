//! This run against the committed one (`docs/benchmarks.json`): each ratio the targets are
//! about, side by side, flagged when it fell by more than a quarter. Ratios, not absolute
//! rates, so that a slower or faster machine does not flag everything.

use serde_json::Value;

/// A fall larger than this share of the committed figure is flagged.
const FLAGGED_FALL: f64 = 0.25;

/// One line per figure, flagged ones marked; empty when there is nothing committed to read.
pub fn against_committed(now: &Value, committed: &Value) -> Vec<String> {
    let mut lines = Vec::new();
    for (name, higher_is_better, read) in figures() {
        let (Some(now_value), Some(then_value)) = (read(now), read(committed)) else {
            continue;
        };
        // Latency: lower is better, so the fall is how much it grew.
        let fell = if higher_is_better {
            1.0 - now_value / then_value
        } else {
            1.0 - then_value / now_value
        };
        let flag = if fell > FLAGGED_FALL {
            "  FELL by more than a quarter"
        } else {
            ""
        };
        lines.push(format!(
            "{name}: {now_value:.2} now, {then_value:.2} committed{flag}"
        ));
    }
    lines
}

type Reader = fn(&Value) -> Option<f64>;

/// What is compared: its name, whether more is better, and where it is in a report.
fn figures() -> Vec<(&'static str, bool, Reader)> {
    vec![
        ("consumer runner / raw consume", true, |r| {
            ratio(&r["plumbing"]["runner"], &r["plumbing"]["raw_consumer"])
        }),
        ("relay / raw producer", true, |r| {
            ratio(&r["plumbing"]["relay"], &r["plumbing"]["raw_producer"])
        }),
        ("saga closed loop / PostgreSQL-only replay", true, |r| {
            ratio(
                &r["closed"]["summary"]["orders_per_second"],
                &r["replay"]["orders_per_second"],
            )
        }),
        (
            "achieved / offered at the highest open-loop rate",
            true,
            |r| {
                let (rate, run) = highest_open_rate(r)?;
                Some(run["summary"]["orders_per_second"].as_f64()? / rate)
            },
        ),
        ("p99 ms at the lowest open-loop rate", false, |r| {
            let runs = r["open"].as_array()?;
            let (_, run) = runs
                .iter()
                .filter_map(|pair| Some((pair[0].as_f64()?, &pair[1])))
                .min_by(|a, b| a.0.total_cmp(&b.0))?;
            run["summary"]["latency_ms"]["p99"].as_f64()
        }),
        (
            "one poisoned order: other orders' p99 / a clean run's",
            false,
            |r| {
                ratio(
                    &r["poison"]["poisoned"]["p99_ms"],
                    &r["poison"]["clean"]["p99_ms"],
                )
            },
        ),
        // The demo's figures are what a user sees: absolute, as the README states them.
        (
            "demo: broker's share of a core with no orders",
            false,
            |r| r["demo"]["idle_cores"]["kafka"].as_f64(),
        ),
        ("demo: closed-loop orders/s", true, |r| {
            r["demo"]["closed"]["summary"]["orders_per_second"].as_f64()
        }),
        ("demo: p99 ms of its open loop", false, |r| {
            r["demo"]["open"][1]["summary"]["latency_ms"]["p99"].as_f64()
        }),
    ]
}

fn ratio(numerator: &Value, denominator: &Value) -> Option<f64> {
    let denominator = denominator.as_f64().filter(|d| *d > 0.0)?;
    Some(numerator.as_f64()? / denominator)
}

fn highest_open_rate(report: &Value) -> Option<(f64, &Value)> {
    report["open"]
        .as_array()?
        .iter()
        .filter_map(|pair| Some((pair[0].as_f64()?, &pair[1])))
        .max_by(|a, b| a.0.total_cmp(&b.0))
}

#[cfg(test)]
mod tests {
    use super::against_committed;
    use serde_json::json;

    fn report(runner: f64, p99: u64) -> serde_json::Value {
        json!({
            "plumbing": {"runner": runner, "raw_consumer": 100.0, "relay": 50.0, "raw_producer": 100.0},
            "replay": {"orders_per_second": 1000.0},
            "closed": {"summary": {"orders_per_second": 500.0}},
            "open": [[100.0, {"summary": {"orders_per_second": 100.0, "latency_ms": {"p99": p99}}}]],
        })
    }

    #[test]
    fn a_ratio_that_fell_by_more_than_a_quarter_is_flagged_and_others_are_not() {
        let lines = against_committed(&report(30.0, 100), &report(50.0, 100));
        let flagged: Vec<&String> = lines.iter().filter(|l| l.contains("FELL")).collect();
        assert_eq!(flagged.len(), 1, "{lines:#?}");
        assert!(flagged[0].starts_with("consumer runner"));
        assert_eq!(lines.len(), 5);
    }

    #[test]
    fn a_latency_that_grew_by_more_than_a_third_is_flagged() {
        let lines = against_committed(&report(50.0, 140), &report(50.0, 100));
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("p99") && l.contains("FELL"))
        );
        let lines = against_committed(&report(50.0, 130), &report(50.0, 100));
        assert!(!lines.iter().any(|l| l.contains("FELL")), "{lines:#?}");
    }

    #[test]
    fn nothing_committed_compares_nothing() {
        assert!(against_committed(&report(50.0, 100), &serde_json::Value::Null).is_empty());
    }
}
