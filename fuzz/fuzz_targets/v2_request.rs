//! A v2 inference request body → what the server does with it before any
//! model runs: `split_body` (JSON header / binary tail, by the
//! `Inference-Header-Content-Length` value), `parse_infer`, and the binary
//! BYTES element decoder on its own; and the server's checks on headers
//! before any handler runs (`Host`, `Origin`, `Content-Type`), with the
//! header value as each of them.
//!
//! Input: either `#<header value>\n<body>` (the request carries
//! `Inference-Header-Content-Length: <header value>`) or just `<body>`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modeldock::server::security::{body_type_ok, host_allowed, origin_allowed};
use modeldock::v2::image_infer::{decode_bytes_elements, parse_infer, split_body, MAX_BATCH};

/// The header checks on `v`: a loopback-allowed origin is an http(s) URL, and
/// a body type that passes is JSON, octet-stream or none.
fn header_checks(v: &str, binary: bool) {
    let _ = host_allowed(Some(v), &[]);
    if origin_allowed(v, &[]) {
        let o = v.trim();
        assert!(o.starts_with("http://") || o.starts_with("https://"), "{v:?}");
    }
    let mut h = axum::http::HeaderMap::new();
    if let Ok(val) = axum::http::HeaderValue::from_str(v) {
        h.insert(axum::http::header::CONTENT_TYPE, val);
        if binary {
            h.insert("inference-header-content-length", axum::http::HeaderValue::from_static("1"));
        }
        if body_type_ok(&axum::http::Method::POST, &h).is_ok() {
            let t = v.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            assert!(t == "application/json" || t == "application/octet-stream", "{v:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (header_len, body) = match data.strip_prefix(b"#") {
        Some(rest) => match rest.iter().position(|&b| b == b'\n') {
            Some(i) => match std::str::from_utf8(&rest[..i]) {
                Ok(v) => (Some(v), &rest[i + 1..]),
                Err(_) => return,
            },
            None => return,
        },
        None => (None, data),
    };
    if let Some(v) = header_len {
        header_checks(v, data.len() % 2 == 0);
    }
    if let Ok((head, tail)) = split_body(body, header_len) {
        assert_eq!(head.len() + tail.len(), body.len());
        if let Ok(req) = parse_infer(head, tail) {
            assert!(!req.images.is_empty() && req.images.len() <= MAX_BATCH);
            for (c, i) in [(req.conf, 0), (req.iou, 1)] {
                if let Some(v) = c {
                    assert!((0.0..=1.0).contains(&v), "{}", ["conf", "iou"][i]);
                }
            }
        }
    }
    // The element decoder alone, expecting as many elements as the first byte says.
    if let Some((&n, rest)) = data.split_first() {
        if let Ok(items) = decode_bytes_elements(rest, n as usize, "fuzz") {
            assert_eq!(items.len(), n as usize);
            let total: usize = items.iter().map(|i| i.len() + 4).sum();
            assert_eq!(total, rest.len());
        }
    }
});
