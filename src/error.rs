//! One error type for the whole crate: a single line that names what went
//! wrong, and a kind that says whose fault it was (so `main` can pick the exit
//! code and the server the HTTP status).

use std::fmt;

/// A one-line, user-facing error. The message always names the file, model or
/// device involved and the problem, so it can be shown as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The work failed: a bad image, model file, manifest, a failed load.
    #[error("{0}")]
    Failed(String),
    /// The caller asked for something malformed (flags, request fields).
    #[error("{0}")]
    Usage(String),
    /// Something named does not exist (a model id, a file).
    #[error("{0}")]
    NotFound(String),
    /// The engine or server cannot take the work now (stopped, full, unreachable).
    #[error("{0}")]
    Unavailable(String),
    /// A v2 server (a backend, a server attached to) answered with an HTTP
    /// error status; the status is a field, not a word to search for.
    #[error("{message}")]
    Remote { status: u16, message: String },
}

pub type Result<T> = std::result::Result<T, Error>;

fn one_line(m: impl Into<String>) -> String {
    let m: String = m.into();
    m.replace('\n', " ")
}

impl Error {
    /// A failure of the work itself (exit code 1).
    pub fn msg(m: impl Into<String>) -> Self {
        Error::Failed(one_line(m))
    }

    /// A usage error (exit code 2, HTTP 400).
    pub fn usage(m: impl Into<String>) -> Self {
        Error::Usage(one_line(m))
    }

    pub fn not_found(m: impl Into<String>) -> Self {
        Error::NotFound(one_line(m))
    }

    pub fn unavailable(m: impl Into<String>) -> Self {
        Error::Unavailable(one_line(m))
    }

    /// A v2 server's answer with HTTP `status`.
    pub fn remote(status: u16, m: impl Into<String>) -> Self {
        Error::Remote {
            status,
            message: one_line(m),
        }
    }

    /// The HTTP status a v2 server answered with, for [`Error::Remote`].
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Remote { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The message, without the kind.
    pub fn message(&self) -> &str {
        match self {
            Error::Failed(m) | Error::Usage(m) | Error::NotFound(m) | Error::Unavailable(m) => m,
            Error::Remote { message, .. } => message,
        }
    }

    /// Prefix the message with what it concerns (a file name, a model id).
    pub fn context(self, what: impl fmt::Display) -> Self {
        let m = format!("{what}: {}", self.message());
        match self {
            Error::Failed(_) => Error::Failed(m),
            Error::Usage(_) => Error::Usage(m),
            Error::NotFound(_) => Error::NotFound(m),
            Error::Unavailable(_) => Error::Unavailable(m),
            Error::Remote { status, .. } => Error::Remote { status, message: m },
        }
    }

    /// The process exit code for this error: 2 for usage errors (a malformed
    /// flag, an unknown model id), 1 when the work failed.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::NotFound(_) => 2,
            _ => 1,
        }
    }
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        // candle errors may carry a backtrace on following lines; keep the first.
        let s = e.to_string();
        Error::msg(s.lines().next().unwrap_or("tensor error").to_string())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::msg(e.to_string())
    }
}

/// `with_context` for results: `read(p).ctx(p.display())?`.
pub trait Context<T> {
    fn ctx(self, what: impl fmt::Display) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn ctx(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.into().context(what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_exit_codes_and_keep_one_line() {
        assert_eq!(Error::usage("bad\nflag").to_string(), "bad flag");
        assert_eq!(Error::usage("x").exit_code(), 2);
        assert_eq!(Error::msg("x").exit_code(), 1);
        assert_eq!(Error::not_found("m").context("load").to_string(), "load: m");
        assert!(matches!(Error::not_found("m").context("load"), Error::NotFound(_)));
        let r = Error::remote(404, "http 404: unknown model").context("face on http://h:1");
        assert_eq!(r.status(), Some(404));
        assert_eq!(r.to_string(), "face on http://h:1: http 404: unknown model");
        assert_eq!(Error::msg("x").status(), None);
    }
}
