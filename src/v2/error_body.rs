//! The error body of a v2 reply, read one way for every client: `{"error":
//! "…"}` (Triton, KServe, modeldock), `{"detail": …}` (MLServer, FastAPI),
//! `{"message": …}`, else the start of the text.

use serde_json::{Map, Value};

/// The message an error body carries, on one line; `None` when it names
/// none.
pub fn error_text(body: &[u8]) -> Option<String> {
    let v: Option<Map<String, Value>> = serde_json::from_slice(body).ok();
    let m = v.as_ref()?;
    for key in ["error", "detail", "message"] {
        match m.get(key) {
            Some(Value::String(s)) => return Some(s.lines().next().unwrap_or("").trim().to_string()),
            Some(Value::Null) | None => {}
            Some(other) => return Some(other.to_string()),
        }
    }
    None
}

/// The one-line message of an error reply: `HTTP {status}: {message}`.
pub fn error_message(status: u16, body: &[u8]) -> String {
    match error_text(body) {
        Some(m) => format!("HTTP {status}: {m}"),
        None => {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).trim().to_string();
            if text.is_empty() {
                format!("HTTP {status}")
            } else {
                format!("HTTP {status}: {}", text.lines().next().unwrap_or(""))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_become_one_line() {
        assert_eq!(
            error_message(400, br#"{"error":"Request for unknown model: 'x' is not found"}"#),
            "HTTP 400: Request for unknown model: 'x' is not found"
        );
        assert_eq!(error_message(500, br#"{"detail":"boom\nmore"}"#), "HTTP 500: boom");
        assert_eq!(error_message(502, b""), "HTTP 502");
    }
}
