//! A v2 server's infer reply → the tensor a remote network hands back
//! (`v2::tensor_infer::decode_reply`), and any error body → its one-line message.
//! Servers are other people's programs: nothing they send may panic or
//! allocate beyond the reply's own size.
//!
//! Input: either `#<header length>\n<body>` (the reply carries
//! `Inference-Header-Content-Length`) or just `<body>`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modeldock::v2::tensor_infer::{decode_reply, error_message};
use modeldock::v2::Tensor32;

fuzz_target!(|data: &[u8]| {
    let (header_len, body) = match data.strip_prefix(b"#") {
        Some(rest) => match rest.iter().position(|&b| b == b'\n') {
            Some(i) => match std::str::from_utf8(&rest[..i]).ok().and_then(|v| v.parse::<usize>().ok()) {
                Some(n) => (Some(n), &rest[i + 1..]),
                None => return,
            },
            None => return,
        },
        None => (None, data),
    };
    if let Ok(t) = decode_reply(body, header_len, "output") {
        assert_eq!(Tensor32::elements(&t.shape), Some(t.data.len()));
        assert!(t.data.len() <= body.len(), "more values than bytes");
    }
    let status = data.first().map(|&b| 400 + u16::from(b)).unwrap_or(500);
    let msg = error_message(status, body);
    assert!(!msg.contains('\n'), "{msg:?}");
});
