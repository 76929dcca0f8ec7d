//! One error type for the whole crate: a single line that names what went wrong.

use std::fmt;

/// A one-line, user-facing error. The message always names the file, model or
/// device involved and the problem, so it can be shown as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn msg(m: impl Into<String>) -> Self {
        let m: String = m.into();
        // Keep errors on one line whatever the source printed.
        Error(m.replace('\n', " "))
    }

    /// Prefix the message with what it concerns (a file name, a model id).
    pub fn context(self, what: impl fmt::Display) -> Self {
        Error(format!("{what}: {}", self.0))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

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
