//! One node of a graph as the importer stored it (TF's `NodeDef`): its name,
//! op, inputs and attributes, with the readers the ops use.

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value as Json;

use crate::error::Error;

#[derive(Deserialize, Clone)]
pub struct NodeDef {
    pub name: String,
    pub op: String,
    #[serde(default)]
    pub input: Vec<String>,
    #[serde(default)]
    pub attr: serde_json::Map<String, Json>,
}

impl NodeDef {
    pub(crate) fn attr(&self, key: &str) -> Option<&Json> {
        self.attr.get(key)
    }

    pub(crate) fn err(&self, msg: impl std::fmt::Display) -> Error {
        Error::msg(format!("node '{}' ({}): {msg}", self.name, self.op))
    }

    pub(crate) fn attr_str(&self, key: &str) -> Option<String> {
        let s = self.attr(key)?.get("s")?.as_str()?;
        let b = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
        String::from_utf8(b).ok()
    }

    pub(crate) fn attr_f(&self, key: &str) -> Option<f64> {
        self.attr(key)?.get("f")?.as_f64()
    }

    pub(crate) fn attr_i(&self, key: &str) -> Option<i64> {
        let v = self.attr(key)?.get("i")?;
        v.as_i64().or_else(|| v.as_str()?.parse().ok())
    }

    pub(crate) fn attr_b(&self, key: &str) -> bool {
        self.attr(key)
            .and_then(|v| v.get("b"))
            .and_then(|b| b.as_bool())
            .unwrap_or(false)
    }

    pub(crate) fn attr_ints(&self, key: &str) -> Vec<i64> {
        let Some(list) = self.attr(key).and_then(|v| v.get("list")).and_then(|l| l.get("i")) else {
            return Vec::new();
        };
        list.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok()))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(crate) fn attr_strs(&self, key: &str) -> Vec<String> {
        let Some(list) = self.attr(key).and_then(|v| v.get("list")).and_then(|l| l.get("s")) else {
            return Vec::new();
        };
        list.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| base64::engine::general_purpose::STANDARD.decode(v.as_str()?).ok())
                    .filter_map(|b| String::from_utf8(b).ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(crate) fn attr_type(&self, key: &str) -> Option<String> {
        Some(self.attr(key)?.get("type")?.as_str()?.to_string())
    }
}
