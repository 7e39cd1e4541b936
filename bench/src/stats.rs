//! Medians, percentiles, per-pair ratios, and the report tables: rows
//! (moat against a peer, measured pairwise) and figures (one measured
//! quantity, with the target it is held to).

use std::time::Duration;

/// One comparison: moat against one peer, measured pairwise.
pub struct Row {
    pub scenario: String,
    pub peer: String,
    pub moat: Vec<Duration>,
    pub other: Vec<Duration>,
}

pub fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

pub fn median(samples: &[Duration]) -> Duration {
    percentile(samples, 50.0)
}

/// The median of moat/peer over the pairs measured back to back.
pub fn pair_ratio(row: &Row) -> f64 {
    let mut ratios: Vec<f64> = row
        .moat
        .iter()
        .zip(&row.other)
        .map(|(a, b)| a.as_secs_f64() / b.as_secs_f64().max(1e-9))
        .collect();
    ratios.sort_by(|a, b| a.total_cmp(b));
    if ratios.is_empty() {
        return f64::NAN;
    }
    ratios[ratios.len() / 2]
}

/// Milliseconds, or microseconds below one millisecond.
fn ms(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{:.1} µs", d.as_secs_f64() * 1e6)
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1000.0)
    }
}

/// One measured quantity of a scenario: a rate, a latency, a count.
pub struct Figure {
    pub scenario: String,
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    /// What the issue asks for (`≥ 3000 /s/core`) and whether this run met it.
    pub target: Option<(String, bool)>,
    /// How many runs (or calls) the value summarizes.
    pub runs: usize,
}

impl Figure {
    pub fn new(scenario: &str, name: impl Into<String>, value: f64, unit: &'static str) -> Figure {
        Figure {
            scenario: scenario.into(),
            name: name.into(),
            value,
            unit,
            target: None,
            runs: 1,
        }
    }

    pub fn runs(mut self, runs: usize) -> Figure {
        self.runs = runs;
        self
    }

    /// Held to `value ≥ floor`.
    pub fn at_least(mut self, floor: f64, label: &str) -> Figure {
        self.target = Some((format!("≥ {label}"), self.value >= floor));
        self
    }

    /// Held to `value ≤ ceiling`.
    pub fn at_most(mut self, ceiling: f64, label: &str) -> Figure {
        self.target = Some((format!("≤ {label}"), self.value <= ceiling));
        self
    }

    /// Adds a second bound: the figure meets its target only if it meets
    /// both.
    pub fn and_at_most(mut self, ceiling: f64, label: &str) -> Figure {
        let (text, met) = self.target.take().unwrap_or_default();
        let joined = if text.is_empty() {
            String::new()
        } else {
            format!("{text}, ")
        };
        let met = (met || joined.is_empty()) && self.value <= ceiling;
        self.target = Some((format!("{joined}≤ {label}"), met));
        self
    }

    /// Adds a second floor, as [`Figure::and_at_most`] adds a ceiling.
    pub fn and_at_least(mut self, floor: f64, label: &str) -> Figure {
        let (text, met) = self.target.take().unwrap_or_default();
        let joined = if text.is_empty() {
            String::new()
        } else {
            format!("{text}, ")
        };
        let met = (met || joined.is_empty()) && self.value >= floor;
        self.target = Some((format!("{joined}≥ {label}"), met));
        self
    }
}

/// A value with a sensible number of digits for its size.
pub fn amount(value: f64) -> String {
    if value.abs() >= 1000.0 {
        let whole = format!("{:.0}", value.abs());
        let mut grouped = String::new();
        for (i, c) in whole.chars().enumerate() {
            if i > 0 && (whole.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        if value < 0.0 {
            format!("-{grouped}")
        } else {
            grouped
        }
    } else if value.abs() >= 10.0 || value == 0.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

pub fn figure_table(figures: &[Figure]) -> String {
    let mut out = format!(
        "{:<14} {:<46} {:>16} {:<26} {:>5}\n",
        "scenario", "figure", "value", "target", "runs"
    );
    for f in figures {
        let target = match &f.target {
            Some((text, met)) => format!("{text} {}", if *met { "met" } else { "NOT met" }),
            None => String::new(),
        };
        out.push_str(&format!(
            "{:<14} {:<46} {:>16} {:<26} {:>5}\n",
            f.scenario,
            f.name,
            format!("{} {}", amount(f.value), f.unit),
            target,
            f.runs,
        ));
    }
    out.pop();
    out
}

pub fn table(rows: &[Row]) -> String {
    // The label columns are as wide as their widest label.
    let width = |label: fn(&Row) -> &str, least: usize| {
        rows.iter()
            .map(|r| label(r).chars().count())
            .fold(least, usize::max)
    };
    let (s, p) = (width(|r| &r.scenario, 22), width(|r| &r.peer, 30));
    let mut out = format!(
        "{:<s$} {:<p$} {:>11} {:>11} {:>11} {:>11} {:>8} {:>5}\n",
        "scenario", "peer", "moat p50", "moat p99", "peer p50", "peer p99", "ratio", "runs"
    );
    for row in rows {
        out.push_str(&format!(
            "{:<s$} {:<p$} {:>11} {:>11} {:>11} {:>11} {:>7.2}x {:>5}\n",
            row.scenario,
            row.peer,
            ms(median(&row.moat)),
            ms(percentile(&row.moat, 99.0)),
            ms(median(&row.other)),
            ms(percentile(&row.other, 99.0)),
            pair_ratio(row),
            row.moat.len().min(row.other.len()),
        ));
    }
    out.push_str(
        "ratio = median over runs of (moat time / peer time), each pair measured back to back",
    );
    out
}

/// Rows, then figures (told apart by their `figure` field).
pub fn json(rows: &[Row], figures: &[Figure]) -> serde_json::Value {
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    serde_json::Value::Array(
        rows.iter()
            .map(|r| {
                serde_json::json!({
                    "scenario": r.scenario,
                    "peer": r.peer,
                    "runs": r.moat.len().min(r.other.len()),
                    "moat_p50_us": us(median(&r.moat)),
                    "moat_p99_us": us(percentile(&r.moat, 99.0)),
                    "peer_p50_us": us(median(&r.other)),
                    "peer_p99_us": us(percentile(&r.other, 99.0)),
                    "ratio": pair_ratio(r),
                })
            })
            .chain(figures.iter().map(|f| {
                serde_json::json!({
                    "scenario": f.scenario,
                    "figure": f.name,
                    "value": f.value,
                    "unit": f.unit,
                    "target": f.target.as_ref().map(|(text, _)| text),
                    "met": f.target.as_ref().map(|(_, met)| met),
                    "runs": f.runs,
                })
            }))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_is_the_median_of_pairs() {
        let d = Duration::from_millis;
        let row = Row {
            scenario: "x".into(),
            peer: "y".into(),
            moat: vec![d(10), d(20), d(30)],
            other: vec![d(20), d(20), d(10)],
        };
        assert_eq!(pair_ratio(&row), 1.0);
        assert_eq!(median(&row.moat), d(20));
        assert_eq!(percentile(&row.moat, 99.0), d(30));
    }

    #[test]
    fn targets_join_and_amounts_group() {
        let f = Figure::new("p", "added p50", 120.0, "µs")
            .at_most(100.0, "100 µs")
            .and_at_most(200.0, "nginx");
        assert_eq!(f.target, Some(("≤ 100 µs, ≤ nginx".into(), false)));
        let f = Figure::new("h", "rate", 3500.0, "/s").at_least(3000.0, "3000");
        assert_eq!(f.target, Some(("≥ 3000".into(), true)));
        assert_eq!(amount(1234567.0), "1,234,567");
        assert_eq!(amount(-1500.0), "-1,500");
        assert_eq!(amount(42.25), "42.2");
        assert_eq!(amount(2.5), "2.50");
    }
}
