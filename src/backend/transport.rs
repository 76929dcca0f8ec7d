//! What every HTTP client of modeldock shares: the agent's TLS roots (Mozilla's,
//! plus `MODELDOCK_CA_BUNDLE`), and the extra headers a remote server asks
//! for (`MODELDOCK_REMOTE_HEADERS`, `--remote-header`, a backend's
//! `headers` table) with `${VAR}` expansion and redaction.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The roots HTTPS servers are verified against: Mozilla's (webpki), and
/// with `MODELDOCK_CA_BUNDLE` the certificates of that PEM file as well.
/// There is no way to turn verification off.
fn tls_config() -> Result<ureq::tls::TlsConfig> {
    static TLS: OnceLock<Result<ureq::tls::TlsConfig>> = OnceLock::new();
    TLS.get_or_init(|| {
        let Some(path) = std::env::var_os("MODELDOCK_CA_BUNDLE").filter(|p| !p.is_empty()) else {
            return Ok(ureq::tls::TlsConfig::default());
        };
        let shown = std::path::Path::new(&path).display().to_string();
        let pem = std::fs::read(&path).map_err(|e| Error::usage(format!("MODELDOCK_CA_BUNDLE {shown}: {e}")))?;
        let mut certs: Vec<ureq::tls::Certificate<'static>> = webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .map(|c| ureq::tls::Certificate::from_der(c.as_ref()))
            .collect();
        let before = certs.len();
        for item in ureq::tls::parse_pem(&pem) {
            match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
                Ok(_) => {}
                Err(e) => {
                    return Err(Error::usage(format!(
                        "MODELDOCK_CA_BUNDLE {shown}: not a PEM certificate file: {e}"
                    )))
                }
            }
        }
        if certs.len() == before {
            return Err(Error::usage(format!(
                "MODELDOCK_CA_BUNDLE {shown}: no certificate in the file"
            )));
        }
        Ok(ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)))
            .build())
    })
    .clone()
}

/// A pooled keep-alive agent: `timeout` for a whole exchange, 3 s to
/// connect, HTTP errors as answers (not `Err`), the TLS roots above. Fails
/// only when `MODELDOCK_CA_BUNDLE` cannot be read.
pub fn agent(timeout: Option<Duration>) -> Result<ureq::Agent> {
    Ok(agent_with(timeout, tls_config()?))
}

/// [`agent`], or with the default roots when `MODELDOCK_CA_BUNDLE` cannot
/// be read (requests that need the bundle then fail; [`check_tls`] names
/// the file).
pub fn agent_or_default(timeout: Option<Duration>) -> ureq::Agent {
    agent_with(timeout, tls_config().unwrap_or_default())
}

fn agent_with(timeout: Option<Duration>, tls: ureq::tls::TlsConfig) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(timeout)
        .timeout_connect(Some(Duration::from_secs(3)))
        .http_status_as_error(false)
        .tls_config(tls)
        .build()
        .into()
}

/// For an `https://` base: the one-line error of an unreadable
/// `MODELDOCK_CA_BUNDLE`, before anything is sent.
pub fn check_tls(base: &str) -> Result<()> {
    if base.starts_with("https://") {
        tls_config()?;
    }
    Ok(())
}

/// Header names and values a remote server needs (access tokens, gateway
/// credentials). `Debug` and `Serialize` show the values as `***`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Headers(pub BTreeMap<String, String>);

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.0.keys().map(|k| (k, "***"))).finish()
    }
}

impl Serialize for Headers {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_map(self.0.keys().map(|k| (k, "***")))
    }
}

fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Checks one header; `what` names where it came from. Values are never
/// quoted in messages.
pub fn check_header(name: &str, value: &str, what: &str) -> Result<()> {
    if !is_token(name) {
        return Err(Error::usage(format!("{what}: '{name}' is not a header name")));
    }
    if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(Error::usage(format!("{what}: the value of {name} has a line break")));
    }
    Ok(())
}

impl Headers {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `${VAR}` in each value replaced by the environment's `VAR`; a
    /// missing variable is an error naming it and the header.
    pub fn expand(&self, what: &str) -> Result<Vec<(String, String)>> {
        self.0
            .iter()
            .map(|(k, v)| {
                let v = expand_env(v, |name| std::env::var(name).ok()).map_err(|MissingVar(var)| {
                    Error::usage(format!("{what}.{k}: environment variable {var} is not set"))
                })?;
                check_header(k, &v, what)?;
                Ok((k.clone(), v))
            })
            .collect()
    }

    /// Names and unexpanded values are well formed.
    pub fn validate(&self, what: &str) -> Result<()> {
        self.0.iter().try_for_each(|(k, v)| check_header(k, v, what))
    }
}

/// A `${NAME}` whose variable is not set: its name.
#[derive(Debug, PartialEq, Eq)]
pub struct MissingVar(pub String);

/// `${NAME}` replaced through `lookup`; [`MissingVar`] for the first one it
/// lacks. `$` elsewhere is kept.
pub fn expand_env(s: &str, lookup: impl Fn(&str) -> Option<String>) -> std::result::Result<String, MissingVar> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[i..]);
            return Ok(out);
        };
        let name = &after[..end];
        out.push_str(&lookup(name).ok_or_else(|| MissingVar(name.to_string()))?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `Name=Value;Name2=Value2` (`MODELDOCK_REMOTE_HEADERS`) or one
/// `NAME=VALUE` (`--remote-header`).
pub fn parse_header_list(spec: &str, what: &str) -> Result<Vec<(String, String)>> {
    spec.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|pair| {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| Error::usage(format!("{what}: expected Name=Value, got an entry without '='")))?;
            let (k, v) = (k.trim(), v.trim());
            check_header(k, v, what)?;
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

/// Header name and value pairs, as sent.
pub type HeaderList = Vec<(String, String)>;

fn remote_table() -> &'static Mutex<HashMap<String, HeaderList>> {
    static T: OnceLock<Mutex<HashMap<String, HeaderList>>> = OnceLock::new();
    T.get_or_init(Default::default)
}

fn key(base: &str) -> String {
    base.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// The headers of `MODELDOCK_REMOTE_HEADERS` and `--remote-header` go to
/// every request to `base` (the server `--remote` or `MODELDOCK_HOST`
/// names), and to no other server.
pub fn set_remote_headers(base: &str, cli: &[String]) -> Result<()> {
    let mut all = match std::env::var("MODELDOCK_REMOTE_HEADERS") {
        Ok(v) => parse_header_list(&v, "MODELDOCK_REMOTE_HEADERS")?,
        Err(_) => Vec::new(),
    };
    for c in cli {
        all.extend(parse_header_list(c, "--remote-header")?);
    }
    let mut t = remote_table().lock().unwrap_or_else(|p| p.into_inner());
    if all.is_empty() {
        t.remove(&key(base));
    } else {
        t.insert(key(base), all);
    }
    Ok(())
}

/// The extra headers for requests to `base`.
pub fn remote_headers(base: &str) -> Vec<(String, String)> {
    let t = remote_table().lock().unwrap_or_else(|p| p.into_inner());
    t.get(&key(base)).cloned().unwrap_or_default()
}

/// Adds `headers` to a request.
pub fn with_headers<B>(mut r: ureq::RequestBuilder<B>, headers: &[(String, String)]) -> ureq::RequestBuilder<B> {
    for (k, v) in headers {
        r = r.header(k.as_str(), v.as_str());
    }
    r
}

/// The header a refusing server asks for, when its message names one
/// (Triton: "This API is restricted, expecting header 'triton-access-token'").
pub fn header_asked_for(message: &str) -> Option<String> {
    let i = message.find("expecting header")?;
    let rest = &message[i + "expecting header".len()..];
    let name: String = rest
        .trim_start()
        .trim_start_matches(['\'', '"'])
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_expansion_names_the_missing_variable() {
        let env = |n: &str| (n == "T").then(|| "tok".to_string());
        assert_eq!(expand_env("Bearer ${T}", env).as_deref(), Ok("Bearer tok"));
        assert_eq!(expand_env("${T}${T}$x", env).as_deref(), Ok("toktok$x"));
        assert_eq!(expand_env("a ${NOPE} b", env), Err(MissingVar("NOPE".to_string())));
        assert_eq!(expand_env("${open", env).as_deref(), Ok("${open"));
    }

    #[test]
    fn header_lists_parse_and_refuse_bad_names() {
        let h = parse_header_list("triton-access-token=abc; Authorization=Bearer x=y", "M").unwrap();
        assert_eq!(h[0], ("triton-access-token".into(), "abc".into()));
        assert_eq!(h[1], ("Authorization".into(), "Bearer x=y".into()));
        assert!(parse_header_list("novalue", "M")
            .unwrap_err()
            .to_string()
            .starts_with("M:"));
        assert!(parse_header_list("bad name=1", "M").is_err());
        assert!(parse_header_list("X=a\nb", "M")
            .unwrap_err()
            .to_string()
            .contains("line break"));
    }

    #[test]
    fn values_are_redacted_and_the_asked_header_is_found() {
        let h = Headers([("triton-access-token".to_string(), "s3cret".to_string())].into());
        assert!(!format!("{h:?}").contains("s3cret"));
        assert!(!serde_json::to_string(&h).unwrap().contains("s3cret"));
        assert_eq!(
            header_asked_for("HTTP 403: This API is restricted, expecting header 'triton-access-token'").as_deref(),
            Some("triton-access-token")
        );
        assert_eq!(header_asked_for("HTTP 403: forbidden"), None);
    }

    #[test]
    fn remote_headers_go_only_to_their_server() {
        set_remote_headers("http://a.test:1", &["X-Token=1".into()]).unwrap();
        assert_eq!(remote_headers("http://a.test:1/").len(), 1);
        assert!(remote_headers("http://b.test:1").is_empty());
    }
}
