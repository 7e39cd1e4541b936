//! Medians, percentiles, per-pair ratios, and the report table.

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

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

pub fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<12} {:<28} {:>11} {:>11} {:>11} {:>11} {:>8} {:>5}\n",
        "scenario", "peer", "moat p50", "moat p99", "peer p50", "peer p99", "ratio", "runs"
    );
    for row in rows {
        out.push_str(&format!(
            "{:<12} {:<28} {:>11} {:>11} {:>11} {:>11} {:>7.2}x {:>5}\n",
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

pub fn json(rows: &[Row]) -> serde_json::Value {
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
}
