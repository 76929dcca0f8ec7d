//! The one way this process speaks HTTP to a v2 server (a backend, a
//! modeldock server it attaches to or asks): the URL normalised once, one
//! pooled agent setup (timeouts, TLS roots), the headers every request
//! carries, and one reader of replies and of their error bodies. The
//! backends' [`super::V2Client`] (retries, reachability, health thread) and
//! the CLI/app's `client::HttpClient` are both built on an [`Endpoint`].

use std::time::Duration;

use serde_json::Value;

use super::transport;
use crate::error::{Error, Result};

/// `http://host:port` (no trailing slash) from a URL, or why not.
pub fn normalise_url(url: &str) -> Result<String> {
    let u = url.trim().trim_end_matches('/');
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"))
        .ok_or_else(|| Error::usage(format!("'{url}': expected an http:// or https:// URL")))?;
    if rest.is_empty() || rest.contains(char::is_whitespace) || rest.contains(['?', '#']) {
        return Err(Error::usage(format!("'{url}': expected http://host:port")));
    }
    Ok(u.to_string())
}

/// A connection error: nothing reached the server, or the connection broke
/// (worth a retry; the server is unreachable, not refusing).
pub fn is_connection_error(e: &ureq::Error) -> bool {
    use std::io::ErrorKind as K;
    match e {
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => true,
        ureq::Error::Io(io) => matches!(
            io.kind(),
            K::ConnectionRefused
                | K::ConnectionReset
                | K::ConnectionAborted
                | K::BrokenPipe
                | K::NotConnected
                | K::UnexpectedEof
                | K::AddrNotAvailable
        ),
        _ => false,
    }
}

/// A request body: bytes, content type and, for the binary tensor
/// extension, the JSON head's length.
#[derive(Clone, Copy)]
pub struct Body<'a> {
    pub bytes: &'a [u8],
    pub content_type: &'a str,
    pub header_length: Option<usize>,
}

impl<'a> Body<'a> {
    pub fn json(bytes: &'a [u8]) -> Body<'a> {
        Body {
            bytes,
            content_type: "application/json",
            header_length: None,
        }
    }
}

/// A reply: status, body and the binary extension's header length.
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    pub header_length: Option<usize>,
}

impl Reply {
    /// The body as JSON; an empty body is `null`.
    pub fn json(&self) -> Result<Value> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.body).map_err(|e| Error::msg(format!("the reply is not JSON: {e}")))
    }

    /// The reply if its status is 2xx, else an [`Error::Remote`] carrying
    /// the status and the one-line message of its body.
    pub fn ok(self, what: &str) -> Result<Reply> {
        if (200..300).contains(&self.status) {
            Ok(self)
        } else {
            Err(Error::remote(
                self.status,
                format!(
                    "{what}: {}",
                    crate::v2::error_body::error_message(self.status, &self.body)
                ),
            ))
        }
    }
}

/// One v2 server: its base URL, a pooled keep-alive agent and the headers
/// every request to it carries.
#[derive(Clone)]
pub struct Endpoint {
    base: String,
    agent: ureq::Agent,
    headers: Vec<(String, String)>,
}

impl Endpoint {
    /// The server at `url` (normalised), `timeout` for a whole exchange;
    /// fails on a malformed URL or an unreadable `MODELDOCK_CA_BUNDLE`.
    pub fn new(url: &str, timeout: Option<Duration>, headers: Vec<(String, String)>) -> Result<Endpoint> {
        Ok(Endpoint {
            base: normalise_url(url)?,
            agent: transport::agent(timeout)?,
            headers,
        })
    }

    /// [`Endpoint::new`] for a base already made from a host spec: the
    /// default TLS roots when the bundle cannot be read (requests that need
    /// it then fail, naming it).
    pub fn lenient(base: &str, timeout: Option<Duration>, headers: Vec<(String, String)>) -> Endpoint {
        Endpoint {
            base: normalise_url(base).unwrap_or_else(|_| base.trim_end_matches('/').to_string()),
            agent: transport::agent_or_default(timeout),
            headers,
        }
    }

    /// The same server and headers with another exchange timeout (`None`:
    /// none, for a stream).
    pub fn with_timeout(&self, timeout: Option<Duration>) -> Endpoint {
        Endpoint {
            base: self.base.clone(),
            agent: transport::agent_or_default(timeout),
            headers: self.headers.clone(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends `GET path` (no body) or `POST path` with `body` (`{}` when
    /// none); the response is not read yet. Any HTTP status is an answer;
    /// `Err` is a connection or protocol failure.
    pub fn send(
        &self,
        path: &str,
        body: Option<Body>,
    ) -> std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        let url = self.url(path);
        match body {
            None => transport::with_headers(self.agent.get(&url), &self.headers).call(),
            Some(b) => {
                let mut r = transport::with_headers(self.agent.post(&url), &self.headers)
                    .header("Content-Type", b.content_type);
                if let Some(n) = b.header_length {
                    r = r.header(crate::v2::HEADER_LENGTH_NAME, n.to_string());
                }
                r.send(b.bytes)
            }
        }
    }

    /// Sends and reads the whole reply, at most `limit` bytes of it.
    pub fn exchange(&self, path: &str, body: Option<Body>, limit: u64) -> std::result::Result<Reply, ureq::Error> {
        read_reply(self.send(path, body)?, limit)
    }

    /// `GET url`, a URL beside the server's (its metrics port), on the same
    /// agent and without the server's headers.
    pub fn get_beside(&self, url: &str, limit: u64) -> std::result::Result<Reply, ureq::Error> {
        read_reply(self.agent.get(url).call()?, limit)
    }
}

/// Reads a whole response, at most `limit` bytes of its body.
fn read_reply(mut r: ureq::http::Response<ureq::Body>, limit: u64) -> std::result::Result<Reply, ureq::Error> {
    let status = r.status().as_u16();
    let header_length = r
        .headers()
        .get(crate::v2::HEADER_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    let body = r.body_mut().with_config().limit(limit).read_to_vec()?;
    Ok(Reply {
        status,
        body,
        header_length,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_normalised_once_or_refused_in_one_line() {
        assert_eq!(normalise_url(" http://h:1/ ").ok(), Some("http://h:1".to_string()));
        assert_eq!(normalise_url("https://h").ok(), Some("https://h".to_string()));
        for bad in ["h:1", "ftp://h", "http://", "http://h 1", "http://h?x"] {
            let e = normalise_url(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains(bad.trim()) && !e.contains('\n'), "{bad}: {e}");
        }
    }

    #[test]
    fn an_error_reply_carries_its_status_and_message() {
        let r = Reply {
            status: 404,
            body: br#"{"error":"unknown model 'x'"}"#.to_vec(),
            header_length: None,
        };
        let e = r.ok("infer").err();
        assert_eq!(e.as_ref().and_then(Error::status), Some(404));
        assert_eq!(
            e.map(|e| e.to_string()).as_deref(),
            Some("infer: HTTP 404: unknown model 'x'")
        );
    }
}
