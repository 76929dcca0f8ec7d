//! Engine events as JSON, both ways: the name and body `/api/events` sends
//! (and the CLI's progress bar reads), and the typed event a client builds
//! back from them. One codec, so the server and `client::remote` cannot
//! drift apart.

use serde_json::{json, Value};

use super::residency::FreeReason;
use super::Event;

/// An event as the SSE stream and the CLI's progress bar see it: a name and a JSON body.
pub fn describe(ev: &Event) -> Option<(&'static str, Value)> {
    Some(match ev {
        Event::LoadStarted { model, bytes_total } => {
            ("load_started", json!({"model": model, "bytes_total": bytes_total}))
        }
        Event::LoadProgress {
            model,
            bytes_done,
            bytes_total,
            eta_ms,
            downloading,
        } => (
            "progress",
            json!({
                "model": model,
                "bytes_done": bytes_done,
                "bytes_total": bytes_total,
                "eta_ms": eta_ms,
                "phase": if *downloading { "downloading" } else { "loading" },
            }),
        ),
        Event::Loaded {
            model,
            predicted_bytes,
            measured_bytes,
            load_ms,
        } => (
            "loaded",
            json!({"model": model, "predicted_bytes": predicted_bytes, "measured_bytes": measured_bytes, "load_ms": load_ms}),
        ),
        Event::Freed { model, reason } => {
            let kind = match reason {
                FreeReason::Evicted { .. } => "evicted",
                FreeReason::Idle => "expired",
                FreeReason::Unloaded | FreeReason::Cancelled => "unloaded",
            };
            let mut body = serde_json::to_value(reason).unwrap_or_else(|_| json!({}));
            if let Some(o) = body.as_object_mut() {
                o.insert("model".into(), json!(model));
                o.insert("reason".into(), json!(reason.to_string()));
            }
            (kind, body)
        }
        Event::LoadFailed { model, error } => ("failed", json!({"model": model, "error": error})),
        Event::Answer(_) | Event::Changed => return None,
    })
}

/// The typed event behind an `/api/events` name and body; `None` for names
/// this build does not know or a body that does not fit.
pub fn read(name: &str, v: &Value) -> Option<Event> {
    let model = v.get("model")?.as_str()?.to_string();
    let u64_of = |k: &str| v.get(k).and_then(Value::as_u64);
    Some(match name {
        "load_started" => Event::LoadStarted {
            model,
            bytes_total: u64_of("bytes_total")?,
        },
        "progress" => Event::LoadProgress {
            model,
            bytes_done: u64_of("bytes_done")?,
            bytes_total: u64_of("bytes_total")?,
            eta_ms: u64_of("eta_ms"),
            downloading: v.get("phase").and_then(Value::as_str) == Some("downloading"),
        },
        "loaded" => Event::Loaded {
            model,
            predicted_bytes: u64_of("predicted_bytes")?,
            measured_bytes: u64_of("measured_bytes"),
            load_ms: v.get("load_ms").and_then(Value::as_f64)?,
        },
        "evicted" | "expired" | "unloaded" => Event::Freed {
            model,
            reason: serde_json::from_value(v.clone()).ok()?,
        },
        "failed" => Event::LoadFailed {
            model,
            error: v
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("load failed")
                .to_string(),
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_model_event_reads_back_as_itself() {
        let events = [
            Event::LoadStarted {
                model: "a".into(),
                bytes_total: 7,
            },
            Event::LoadProgress {
                model: "a".into(),
                bytes_done: 3,
                bytes_total: 7,
                eta_ms: Some(20),
                downloading: true,
            },
            Event::Loaded {
                model: "a".into(),
                predicted_bytes: 7,
                measured_bytes: Some(9),
                load_ms: 1.5,
            },
            Event::Freed {
                model: "a".into(),
                reason: FreeReason::Evicted { for_model: "b".into() },
            },
            Event::Freed {
                model: "a".into(),
                reason: FreeReason::Idle,
            },
            Event::Freed {
                model: "a".into(),
                reason: FreeReason::Cancelled,
            },
            Event::LoadFailed {
                model: "a".into(),
                error: "bad".into(),
            },
        ];
        for e in events {
            let (name, body) = describe(&e).unwrap_or(("none", Value::Null));
            let back = read(name, &body);
            assert_eq!(format!("{back:?}"), format!("{:?}", Some(e)), "{name} {body}");
        }
        assert!(describe(&Event::Changed).is_none());
        assert!(read("loaded", &json!({"model": "a"})).is_none());
    }

    #[test]
    fn a_freed_event_keeps_its_text_and_names_its_kind() {
        let e = Event::Freed {
            model: "a".into(),
            reason: FreeReason::Evicted { for_model: "b".into() },
        };
        let (name, body) = describe(&e).unwrap_or(("none", Value::Null));
        assert_eq!(name, "evicted");
        assert_eq!(body["reason"], "evicted (least recently used) to make room for b");
        assert_eq!(body["cause"], "evicted");
        assert_eq!(body["for_model"], "b");
    }
}
