//! Who may talk to the server, decided before any handler runs: the `Host`
//! a request names (DNS rebinding), the `Origin` a browser adds (cross-site
//! requests), the body's media type (browsers' "simple" requests), and the
//! bearer key with its scope (admin or inference only). Plain functions over
//! headers; `mod.rs` calls them from its middleware.

use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::v2::{CORS_ALLOWED_HEADERS, HEADER_LENGTH, HEADER_LENGTH_NAME};

/// A key the server checks: never printed, never served.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// `None` for an absent or blank key.
    pub fn new(key: Option<String>) -> Option<Secret> {
        key.map(|k| k.trim().to_string()).filter(|k| !k.is_empty()).map(Secret)
    }

    /// Equal to `token`, compared in time independent of where they differ.
    pub fn matches(&self, token: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), token.as_bytes());
        a.len() == b.len() && bool::from(a.ct_eq(b))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// The access rules fixed at start.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Everything: load, unload, pin, inference, reading.
    pub admin_key: Option<Secret>,
    /// Inference and the read-only endpoints only.
    pub infer_key: Option<Secret>,
    /// Extra names a loopback server answers to (`MODELDOCK_ALLOWED_HOSTS`).
    pub allowed_hosts: Vec<String>,
    /// Extra browser origins allowed (`MODELDOCK_ORIGINS`, `*` wildcards).
    pub allowed_origins: Vec<String>,
}

/// A comma-separated list from the environment, trimmed, blanks dropped.
pub fn env_list(name: &str) -> Vec<String> {
    std::env::var(name)
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

impl Access {
    /// Keys from `MODELDOCK_API_KEY` / `MODELDOCK_INFER_KEY`, names from
    /// `MODELDOCK_ALLOWED_HOSTS` / `MODELDOCK_ORIGINS`.
    pub fn from_env() -> Access {
        Access {
            admin_key: Secret::new(std::env::var("MODELDOCK_API_KEY").ok()),
            infer_key: Secret::new(std::env::var("MODELDOCK_INFER_KEY").ok()),
            allowed_hosts: env_list("MODELDOCK_ALLOWED_HOSTS"),
            allowed_origins: env_list("MODELDOCK_ORIGINS"),
        }
    }
}

/// `*` matches any run of characters (none included); the rest literally,
/// ignoring ASCII case.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.to_ascii_lowercase(), text.to_ascii_lowercase());
    let parts: Vec<&str> = p.split('*').collect();
    if parts.len() == 1 {
        return p == t;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !t.starts_with(first) || t.len() < first.len() + last.len() || !t.ends_with(last) {
        return false;
    }
    let mut rest = &t[first.len()..t.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// The host name of a `Host` header or an origin's authority, without the
/// port; `[::1]` keeps its brackets.
fn host_name(authority: &str) -> &str {
    let a = authority.trim();
    if let Some(end) = a.find(']') {
        return &a[..=end];
    }
    match a.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => a,
    }
}

fn is_loopback_name(name: &str) -> bool {
    let n = name.trim_end_matches('.').to_ascii_lowercase();
    if n == "localhost" {
        return true;
    }
    let ip = n.trim_start_matches('[').trim_end_matches(']');
    ip.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A loopback server answers only to loopback names and the ones listed:
/// a page whose name was re-pointed at 127.0.0.1 (DNS rebinding) still
/// sends its own name. A request without `Host` (HTTP/1.0) is no browser's.
pub fn host_allowed(host: Option<&str>, allowed: &[String]) -> bool {
    let Some(host) = host else { return true };
    let name = host_name(host);
    is_loopback_name(name)
        || allowed
            .iter()
            .any(|a| wildcard_match(a, name) || wildcard_match(a, host))
}

/// Loopback origins (`http://localhost:*`, `http://127.0.0.1:*`,
/// `http://[::1]:*`, https too) and the ones listed.
pub fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    let o = origin.trim();
    let loopback = ["http://", "https://"]
        .iter()
        .find_map(|s| o.strip_prefix(s))
        .is_some_and(|rest| !rest.contains('/') && is_loopback_name(host_name(rest)));
    loopback || allowed.iter().any(|a| wildcard_match(a, o))
}

/// What a route may do, for the key scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Inference and reading: the infer key suffices.
    Use,
    /// Changing what is resident: the admin key only.
    Admin,
}

/// `POST /v2/models/…/infer` and the repository index (a read) are use;
/// every other `POST` changes the engine's state.
pub fn scope_of(method: &Method, path: &str) -> Scope {
    if method == Method::GET || method == Method::HEAD || method == Method::OPTIONS {
        return Scope::Use;
    }
    if path == "/v2/repository/index" || (path.starts_with("/v2/models/") && path.ends_with("/infer")) {
        return Scope::Use;
    }
    Scope::Admin
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The key check: nothing when no key is set; else the admin key opens
/// everything and the infer key opens [`Scope::Use`]. Messages never echo
/// the token.
pub fn authorise(access: &Access, headers: &HeaderMap, scope: Scope) -> Result<(), ApiError> {
    if access.admin_key.is_none() && access.infer_key.is_none() {
        return Ok(());
    }
    let token = bearer(headers).unwrap_or("");
    if access.admin_key.as_ref().is_some_and(|k| k.matches(token)) {
        return Ok(());
    }
    let infer_ok = access.infer_key.as_ref().is_some_and(|k| k.matches(token));
    if infer_ok && scope == Scope::Use {
        return Ok(());
    }
    if infer_ok {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this key allows inference and reading only; load, unload and pin need the admin key (MODELDOCK_API_KEY)",
        ));
    }
    Err(ApiError::new(
        StatusCode::UNAUTHORIZED,
        "missing or wrong API key (Authorization: Bearer …)",
    ))
}

fn media_type(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get(header::CONTENT_TYPE) {
        None => Ok(None),
        Some(v) => {
            let v = v
                .to_str()
                .map_err(|_| ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Type is not text"))?;
            let essence = v.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            Ok(Some(essence))
        }
    }
}

/// Bodies by media type: JSON bodies are `application/json` (or carry no
/// type, as tritonclient sends them); a v2 binary body is
/// `application/octet-stream` (or untyped) with `Inference-Header-Content-Length`.
/// `text/plain`, forms and the rest (what a page may send without asking
/// first) are 415.
pub fn body_type_ok(method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
    if method != Method::POST && method != Method::PUT {
        return Ok(());
    }
    let binary = headers.contains_key(HEADER_LENGTH);
    let unsupported = |m: String| Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, m));
    match media_type(headers)?.as_deref() {
        None => Ok(()),
        Some("application/json") if !binary => Ok(()),
        Some("application/octet-stream") if binary => Ok(()),
        Some("application/octet-stream") => unsupported(format!(
            "Content-Type application/octet-stream needs {HEADER_LENGTH_NAME} (the v2 binary tensor extension)"
        )),
        Some(t) if binary => unsupported(format!(
            "Content-Type {t}: a binary tensor body is application/octet-stream"
        )),
        Some(t) => unsupported(format!("Content-Type {t}: request bodies are application/json")),
    }
}

/// The CORS headers of an allowed origin's answer.
pub fn cors_headers(h: &mut HeaderMap, origin: &str, preflight: bool) {
    if let Ok(v) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    if preflight {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(CORS_ALLOWED_HEADERS),
        );
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_like_ollama_origins() {
        assert!(wildcard_match("https://*.example.com", "https://app.example.com"));
        assert!(!wildcard_match("https://*.example.com", "https://example.org"));
        assert!(wildcard_match("*", "http://anything"));
        assert!(wildcard_match("app://*", "app://x"));
        assert!(!wildcard_match("http://a.b", "http://a.b.evil"));
        assert!(wildcard_match("a*b*c", "aXbYc"));
        assert!(!wildcard_match("a*b*c", "aXcYb"));
    }

    #[test]
    fn hosts_and_origins() {
        let none: Vec<String> = vec![];
        for h in [
            "localhost",
            "localhost:8765",
            "127.0.0.1:1",
            "[::1]:9",
            "[::1]",
            "LOCALHOST",
        ] {
            assert!(host_allowed(Some(h), &none), "{h}");
        }
        for h in [
            "evil.example",
            "evil.example:8765",
            "127.0.0.1.nip.io:80",
            "localhost.evil",
        ] {
            assert!(!host_allowed(Some(h), &none), "{h}");
        }
        assert!(host_allowed(Some("proxy.lan:80"), &["proxy.lan".into()]));
        for o in [
            "http://localhost:3000",
            "http://127.0.0.1:8765",
            "http://[::1]:1",
            "https://localhost",
        ] {
            assert!(origin_allowed(o, &none), "{o}");
        }
        for o in ["http://evil.example", "null", "http://localhost.evil:80", "file://"] {
            assert!(!origin_allowed(o, &none), "{o}");
        }
        assert!(origin_allowed(
            "https://app.example.com",
            &["https://*.example.com".into()]
        ));
    }

    #[test]
    fn keys_scope_and_compare() {
        let a = Access {
            admin_key: Secret::new(Some("adm".into())),
            infer_key: Secret::new(Some("inf".into())),
            ..Access::default()
        };
        let with = |t: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
            );
            h
        };
        assert!(authorise(&a, &with("adm"), Scope::Admin).is_ok());
        assert!(authorise(&a, &with("inf"), Scope::Use).is_ok());
        assert_eq!(authorise(&a, &with("inf"), Scope::Admin).unwrap_err().status, 403);
        assert_eq!(authorise(&a, &with("ad"), Scope::Use).unwrap_err().status, 401);
        assert_eq!(authorise(&a, &HeaderMap::new(), Scope::Use).unwrap_err().status, 401);
        assert_eq!(format!("{:?}", a.admin_key), "Some(***)");
        assert_eq!(scope_of(&Method::POST, "/api/load"), Scope::Admin);
        assert_eq!(scope_of(&Method::POST, "/v2/models/x/infer"), Scope::Use);
        assert_eq!(scope_of(&Method::POST, "/v2/repository/models/x/load"), Scope::Admin);
    }

    #[test]
    fn body_types() {
        let ct = |t: &str, bin: bool| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_str(t).unwrap());
            if bin {
                h.insert(HEADER_LENGTH, HeaderValue::from_static("10"));
            }
            body_type_ok(&Method::POST, &h).map_err(|e| e.status.as_u16())
        };
        assert_eq!(ct("application/json; charset=utf-8", false), Ok(()));
        assert_eq!(ct("text/plain", false), Err(415));
        assert_eq!(ct("application/x-www-form-urlencoded", false), Err(415));
        assert_eq!(ct("multipart/form-data; boundary=x", false), Err(415));
        assert_eq!(ct("application/octet-stream", true), Ok(()));
        assert_eq!(ct("application/octet-stream", false), Err(415));
        assert_eq!(ct("text/plain", true), Err(415));
        assert_eq!(
            body_type_ok(&Method::POST, &HeaderMap::new()).map_err(|e| e.status),
            Ok(())
        );
    }
}
