//! Docker's JSON progress messages (`pkg/jsonmessage`), one per line, as
//! the docker CLI reads them to draw a line (and a bar) per layer:
//! `{"status":"Downloading","progressDetail":{"current":..,"total":..},
//! "progress":"[==>  ] ...","id":"<12 hex>"}`; errors as
//! `{"errorDetail":{"message":..},"error":..}`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedSender;

/// How often a layer's byte count is reported.
const BYTES_INTERVAL: Duration = Duration::from_millis(100);

/// Where progress goes: a channel the response body reads. A client that
/// went away makes sends no-ops; the operation goes on.
#[derive(Clone)]
pub struct Progress {
    tx: Option<UnboundedSender<Bytes>>,
}

impl Progress {
    pub fn new(tx: UnboundedSender<Bytes>) -> Progress {
        Progress { tx: Some(tx) }
    }

    /// Progress nobody reads (tests, internal pulls).
    pub fn discard() -> Progress {
        Progress { tx: None }
    }

    fn send(&self, value: Value) {
        if let Some(tx) = &self.tx {
            let mut line = serde_json::to_vec(&value).unwrap_or_default();
            line.push(b'\n');
            let _ = tx.send(line.into());
        }
    }

    /// `{"status": ...}`: a line of its own.
    pub fn status(&self, status: &str) {
        self.send(json!({ "status": status }));
    }

    /// A layer's line: `{"status":..,"progressDetail":{},"id":..}`.
    pub fn layer(&self, id: &str, status: &str) {
        self.send(json!({ "status": status, "progressDetail": {}, "id": id }));
    }

    /// A layer's bytes so far, with the bar the CLI shows as is.
    pub fn bytes(&self, id: &str, status: &str, current: u64, total: u64) {
        self.send(json!({
            "status": status,
            "progressDetail": { "current": current, "total": total },
            "progress": bar(current, total),
            "id": id,
        }));
    }

    /// `{"progressDetail":{},"aux":{...}}` (push's tag, digest and size).
    pub fn aux(&self, aux: Value) {
        self.send(json!({ "progressDetail": {}, "aux": aux }));
    }

    pub fn error(&self, message: &str) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(error_line(message));
        }
    }
}

/// Docker's error line: `{"errorDetail":{"message":..},"error":..}`.
pub fn error_line(message: &str) -> Bytes {
    let mut line =
        serde_json::to_vec(&json!({ "errorDetail": { "message": message }, "error": message }))
            .unwrap_or_default();
    line.push(b'\n');
    line.into()
}

/// Reports a layer's bytes at most every [`BYTES_INTERVAL`].
pub struct ByteCounter {
    progress: Progress,
    id: String,
    status: &'static str,
    total: u64,
    current: u64,
    last: Option<Instant>,
}

impl ByteCounter {
    pub fn new(progress: &Progress, id: &str, status: &'static str, total: u64) -> ByteCounter {
        ByteCounter {
            progress: progress.clone(),
            id: id.to_owned(),
            status,
            total,
            current: 0,
            last: None,
        }
    }

    pub fn add(&mut self, n: usize) {
        self.current += n as u64;
        let due = self.last.is_none_or(|t| t.elapsed() >= BYTES_INTERVAL);
        if due || self.current == self.total {
            self.last = Some(Instant::now());
            self.progress
                .bytes(&self.id, self.status, self.current, self.total);
        }
    }
}

/// `[=====>        ]  1.2MB/3.4MB`, as Docker's `JSONProgress.String`.
fn bar(current: u64, total: u64) -> String {
    const WIDTH: u64 = 50;
    let filled = (current.min(total) * WIDTH).checked_div(total).unwrap_or(0);
    let mut bar = "=".repeat(filled as usize);
    if filled < WIDTH {
        bar.push('>');
        bar.push_str(&" ".repeat((WIDTH - filled - 1) as usize));
    }
    format!("[{bar}] {:>8}/{}", human(current), human(total))
}

/// Decimal units with four significant digits, as Docker's
/// `units.HumanSize`.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    let decimals = match value {
        v if v >= 100.0 => 1,
        v if v >= 10.0 => 2,
        _ => 3,
    };
    let text = format!("{value:.decimals$}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}{}", UNITS[unit])
}

/// The 12 hex digits Docker shows for a blob or diff id.
pub fn short_id(digest: &str) -> String {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    hex.chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_in_docker_shape() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let progress = Progress::new(tx);
        progress.layer("0123456789ab", "Pulling fs layer");
        progress.bytes("0123456789ab", "Downloading", 500, 1000);
        progress.error("boom");
        let lines: Vec<Value> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|b| serde_json::from_slice(&b).unwrap())
            .collect();
        assert_eq!(
            lines[0],
            json!({"status":"Pulling fs layer","progressDetail":{},"id":"0123456789ab"})
        );
        assert_eq!(
            lines[1]["progressDetail"],
            json!({"current":500,"total":1000})
        );
        assert!(
            lines[1]["progress"]
                .as_str()
                .unwrap()
                .starts_with("[=========================>")
        );
        assert_eq!(
            lines[2],
            json!({"errorDetail":{"message":"boom"},"error":"boom"})
        );
        assert_eq!(short_id("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(human(2_811_478), "2.811MB");
        assert_eq!(human(999), "999B");
    }
}
