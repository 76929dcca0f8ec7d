//! A small command-line parser: `--flag value`, `--flag=value`, `--switch`, positionals.

use std::collections::HashMap;

use crate::error::{Error, Result};

#[derive(Debug, Default)]
pub struct Args {
    pub positional: Vec<String>,
    values: HashMap<String, Vec<String>>,
    switches: Vec<String>,
}

impl Args {
    /// `with_value` lists the flags that take a value; `switches` those that don't.
    pub fn parse(argv: &[String], with_value: &[&str], switches: &[&str]) -> Result<Args> {
        let mut a = Args::default();
        let mut i = 0;
        while i < argv.len() {
            let s = &argv[i];
            if s == "--" {
                a.positional.extend(argv[i + 1..].iter().cloned());
                break;
            }
            if let Some(flag) = s.strip_prefix("--") {
                let (name, inline) = match flag.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_string())),
                    None => (flag, None),
                };
                if with_value.contains(&name) {
                    let v = match inline {
                        Some(v) => v,
                        None => {
                            i += 1;
                            argv.get(i)
                                .cloned()
                                .ok_or_else(|| Error::msg(format!("--{name} needs a value")))?
                        }
                    };
                    a.values.entry(name.to_string()).or_default().push(v);
                } else if switches.contains(&name) && inline.is_none() {
                    a.switches.push(name.to_string());
                } else {
                    return Err(Error::msg(format!("unknown option --{name}")));
                }
            } else {
                a.positional.push(s.clone());
            }
            i += 1;
        }
        Ok(a)
    }

    pub fn value(&self, name: &str) -> Option<&str> {
        self.values.get(name).and_then(|v| v.last()).map(|s| s.as_str())
    }

    pub fn values(&self, name: &str) -> Vec<String> {
        self.values.get(name).cloned().unwrap_or_default()
    }

    pub fn has(&self, name: &str) -> bool {
        self.switches.iter().any(|s| s == name)
    }

    pub fn f32(&self, name: &str) -> Result<Option<f32>> {
        match self.value(name) {
            None => Ok(None),
            Some(v) => v
                .parse::<f32>()
                .ok()
                .filter(|x| x.is_finite())
                .map(Some)
                .ok_or_else(|| Error::msg(format!("--{name} '{v}' is not a number"))),
        }
    }

    pub fn usize(&self, name: &str) -> Result<Option<usize>> {
        match self.value(name) {
            None => Ok(None),
            Some(v) => v
                .parse::<usize>()
                .map(Some)
                .map_err(|_| Error::msg(format!("--{name} '{v}' is not a whole number"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_values_switches_and_positionals() {
        let argv: Vec<String> = ["a.png", "--model", "x", "--json", "--conf=0.3", "b.png"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let a = Args::parse(&argv, &["model", "conf"], &["json"]).unwrap_or_default();
        assert_eq!(a.positional, vec!["a.png", "b.png"]);
        assert_eq!(a.value("model"), Some("x"));
        assert!(a.has("json"));
        assert_eq!(a.f32("conf").ok().flatten(), Some(0.3));
        assert!(Args::parse(&["--nope".to_string()], &[], &[]).is_err());
        assert!(Args::parse(&["--model".to_string()], &["model"], &[]).is_err());
    }
}
