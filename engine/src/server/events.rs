//! `/events`: what happened to containers and images, as a stream.

use std::collections::VecDeque;
use std::sync::Mutex;

use axum::response::Response;
use bytes::Bytes;
use moat_api::query::Query;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::broadcast;

use super::{ApiError, ApiResult};
use crate::runtime::ContainerRecord;

/// Events kept for `since`; older ones are gone, as in dockerd.
const HISTORY: usize = 1024;

pub struct Events {
    tx: broadcast::Sender<Value>,
    history: Mutex<VecDeque<Value>>,
}

impl Default for Events {
    fn default() -> Self {
        Events::new()
    }
}

impl Events {
    pub fn new() -> Events {
        Events {
            tx: broadcast::channel(256).0,
            history: Mutex::new(VecDeque::with_capacity(HISTORY)),
        }
    }

    pub fn container(&self, record: &ContainerRecord, action: &str) {
        self.container_with(record, action, &[]);
    }

    pub fn container_with(&self, record: &ContainerRecord, action: &str, extra: &[(&str, String)]) {
        let mut attributes = serde_json::Map::new();
        attributes.insert("name".into(), json!(record.name));
        attributes.insert("image".into(), json!(record.image));
        for (k, v) in &record.config.labels {
            attributes.insert(k.clone(), json!(v));
        }
        for (k, v) in extra {
            attributes.insert((*k).into(), json!(v));
        }
        self.publish(
            "container",
            action,
            &record.id,
            Value::Object(attributes),
            Some(&record.image),
        );
    }

    pub fn image(&self, id: &str, action: &str, name: &str) {
        self.publish("image", action, id, json!({ "name": name }), None);
    }

    fn publish(&self, kind: &str, action: &str, id: &str, attributes: Value, from: Option<&str>) {
        let now = OffsetDateTime::now_utc();
        let nanos = now.unix_timestamp_nanos();
        let mut event = json!({
            "Type": kind,
            "Action": action,
            "Actor": { "ID": id, "Attributes": attributes },
            "scope": "local",
            "time": now.unix_timestamp(),
            "timeNano": nanos as i64,
        });
        if kind == "container" {
            event["status"] = json!(action);
            event["id"] = json!(id);
            if let Some(from) = from {
                event["from"] = json!(from);
            }
        }
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(event.clone());
        let _ = self.tx.send(event);
    }

    /// The stream for `GET /events`: past events from `since`, then live
    /// ones, until `until` (or the client leaves).
    pub fn stream(&self, query: &Query) -> ApiResult {
        let since = time_param(query.get("since"))?;
        let until = time_param(query.get("until"))?;
        let filters = query.filters()?;
        let matches = move |event: &Value| -> bool {
            filters.iter().all(|(key, values)| {
                // Every label filter must match, as in Docker: the gateway
                // narrows a caller's events by adding one.
                if key == "label" {
                    return values.iter().all(|v| {
                        let (k, val) = v.split_once('=').unwrap_or((v.as_str(), ""));
                        let attr = &event["Actor"]["Attributes"][k];
                        !attr.is_null() && (val.is_empty() || attr == val)
                    });
                }
                values.is_empty()
                    || values.iter().any(|v| match key.as_str() {
                        "type" => event["Type"] == *v.as_str(),
                        "event" => event["Action"] == *v.as_str(),
                        "container" => {
                            event["Type"] == "container"
                                && (event["Actor"]["ID"]
                                    .as_str()
                                    .is_some_and(|id| id.starts_with(v.as_str()))
                                    || event["Actor"]["Attributes"]["name"] == *v.as_str())
                        }
                        "image" => {
                            event["Actor"]["Attributes"]["image"] == *v.as_str()
                                || event["from"] == *v.as_str()
                        }
                        _ => false,
                    })
            })
        };
        let in_window = move |event: &Value| -> bool {
            let t = event["timeNano"].as_i64().unwrap_or(0) as i128;
            since.is_none_or(|s| t >= s) && until.is_none_or(|u| t <= u)
        };
        let mut rx = self.tx.subscribe();
        let past: Vec<Value> = if since.is_some() {
            let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
            history
                .iter()
                .filter(|e| in_window(e) && matches(e))
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        let (tx, body) = tokio::sync::mpsc::channel::<Bytes>(64);
        let now = OffsetDateTime::now_utc().unix_timestamp_nanos();
        tokio::spawn(async move {
            for event in past {
                if tx.send(Bytes::from(format!("{event}\n"))).await.is_err() {
                    return;
                }
            }
            if until.is_some_and(|u| u <= now) {
                return;
            }
            loop {
                let deadline = until.map(|u| {
                    let left = (u - OffsetDateTime::now_utc().unix_timestamp_nanos()).max(0);
                    std::time::Duration::from_nanos(left as u64)
                });
                let next = async {
                    match deadline {
                        Some(d) => tokio::time::timeout(d, rx.recv()).await.ok(),
                        None => Some(rx.recv().await),
                    }
                };
                tokio::select! {
                    event = next => match event {
                        None | Some(Err(broadcast::error::RecvError::Closed)) => return,
                        Some(Err(broadcast::error::RecvError::Lagged(_))) => continue,
                        Some(Ok(event)) => {
                            if matches(&event) && tx.send(Bytes::from(format!("{event}\n"))).await.is_err() {
                                return;
                            }
                        }
                    },
                    _ = tx.closed() => return,
                }
            }
        });
        let mut response = Response::new(super::stream_body(body));
        response.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        );
        Ok(response)
    }
}

/// Unix seconds (with an optional fraction) → nanoseconds.
fn time_param(value: Option<&str>) -> Result<Option<i128>, ApiError> {
    let Some(v) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let bad = || ApiError::bad_request(format!("invalid time: {v}"));
    let (secs, frac) = v.split_once('.').unwrap_or((v, "0"));
    let secs: i128 = secs.parse().map_err(|_| bad())?;
    let frac = format!("{frac:0<9}");
    let nanos: i128 = frac.get(..9).ok_or_else(bad)?.parse().map_err(|_| bad())?;
    Ok(Some(secs * 1_000_000_000 + nanos))
}
