//! The JSON head of a v2 message, parsed once into typed fields, field by
//! field, so that every error names the field (`inputs[0].shape`) and what
//! was expected there. Requests carry their tensors under `inputs` (and may
//! name the `outputs` they want); replies carry theirs under `outputs`.

use serde_json::{Map, Value};

use super::body;
use crate::error::{Error, Result};

/// One tensor's entry in the head.
#[derive(Debug)]
pub struct TensorEntry {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    pub parameters: Option<Map<String, Value>>,
    /// JSON `data`, when the tensor is not in the binary part.
    pub data: Option<Value>,
    /// `parameters.binary_data_size`: its bytes in the binary part.
    pub binary_size: Option<usize>,
}

/// An output a request names.
#[derive(Debug)]
pub struct WantedOutput {
    pub name: String,
    pub parameters: Option<Map<String, Value>>,
}

/// A parsed head: a request's (`tensors` from `inputs`) or a reply's
/// (`tensors` from `outputs`).
#[derive(Debug)]
pub struct Head {
    pub kind: Kind,
    pub id: Option<Value>,
    pub parameters: Option<Map<String, Value>>,
    pub tensors: Vec<TensorEntry>,
    /// A request's `outputs` list, when it has one.
    pub wanted: Option<Vec<WantedOutput>>,
}

/// Which message a head belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    Reply,
}

impl Kind {
    fn key(self) -> &'static str {
        match self {
            Kind::Request => "inputs",
            Kind::Reply => "outputs",
        }
    }

    /// What one of its tensors is called in messages.
    pub fn noun(self) -> &'static str {
        match self {
            Kind::Request => "input",
            Kind::Reply => "output",
        }
    }
}

/// A JSON value for a message: at most 40 characters.
pub fn shown(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// A malformed message: a usage error (400), naming the field.
pub fn bad(m: impl Into<String>) -> Error {
    Error::usage(m)
}

/// `field` of `obj`: absent and `null` are `None`; anything else must be an object.
fn opt_object(obj: &mut Map<String, Value>, field: &str, at: &str) -> Result<Option<Map<String, Value>>> {
    match obj.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(v) => Err(bad(format!("{at}{field}: expected an object, got {}", shown(&v)))),
    }
}

fn req_string(obj: &mut Map<String, Value>, field: &str, at: &str) -> Result<String> {
    match obj.remove(field) {
        Some(Value::String(s)) => Ok(s),
        None => Err(bad(format!("{at}{field}: missing (expected a string)"))),
        Some(v) => Err(bad(format!("{at}{field}: expected a string, got {}", shown(&v)))),
    }
}

fn array_of(v: Option<Value>, what: &str, expected: &str) -> Result<Vec<Value>> {
    match v {
        Some(Value::Array(a)) => Ok(a),
        None => Err(bad(format!("{what}: missing (expected {expected})"))),
        Some(v) => Err(bad(format!("{what}: expected {expected}, got {}", shown(&v)))),
    }
}

impl Head {
    /// Parses the JSON head of a `kind` message.
    pub fn parse(header: &[u8], kind: Kind) -> Result<Head> {
        let what = match kind {
            Kind::Request => "request body",
            Kind::Reply => "reply",
        };
        let v: Value = serde_json::from_slice(header)
            .map_err(|e| bad(format!("{what} is not a v2 inference {}: {e}", kind_name(kind))))?;
        let Value::Object(mut top) = v else {
            return Err(bad(format!(
                "{what}: expected a JSON object (a v2 inference {}), got {}",
                kind_name(kind),
                shown(&v)
            )));
        };
        let id = top.remove("id");
        let parameters = opt_object(&mut top, "parameters", "")?;
        let key = kind.key();
        let expected = format!("a list of {} tensors", kind.noun());
        let tensors = array_of(top.remove(key), key, &expected)?
            .into_iter()
            .enumerate()
            .map(|(i, v)| tensor_entry(v, kind, i))
            .collect::<Result<Vec<_>>>()?;
        let wanted = match kind {
            Kind::Request => wanted_outputs(top.remove("outputs"))?,
            Kind::Reply => None,
        };
        Ok(Head {
            kind,
            id,
            parameters,
            tensors,
            wanted,
        })
    }

    /// Each tensor's bytes of the binary part `tail`, in list order, and how
    /// many bytes of it no tensor claims.
    pub fn binary_parts<'a>(&self, mut tail: &'a [u8]) -> Result<(Vec<Option<&'a [u8]>>, usize)> {
        let mut parts = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            parts.push(match t.binary_size {
                Some(n) => Some(body::take_binary(
                    &mut tail,
                    n,
                    &format!("{} '{}'", self.kind.noun(), t.name),
                )?),
                None => None,
            });
        }
        Ok((parts, tail.len()))
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Request => "request",
        Kind::Reply => "reply",
    }
}

fn tensor_entry(v: Value, kind: Kind, i: usize) -> Result<TensorEntry> {
    let key = kind.key();
    let at = format!("{key}[{i}].");
    let Value::Object(mut o) = v else {
        return Err(bad(format!(
            "{key}[{i}]: expected an object (name, shape, datatype, data), got {}",
            shown(&v)
        )));
    };
    let name = req_string(&mut o, "name", &at)?;
    let shape = array_of(o.remove("shape"), &format!("{at}shape"), "a list of integers")?
        .iter()
        .map(|d| {
            d.as_i64()
                .ok_or_else(|| bad(format!("{at}shape: expected a list of integers, got {}", shown(d))))
        })
        .collect::<Result<Vec<_>>>()?;
    let datatype = req_string(&mut o, "datatype", &at)?;
    let parameters = opt_object(&mut o, "parameters", &at)?;
    let binary_size = match &parameters {
        Some(p) => body::binary_size(p, &format!("{} '{name}'", kind.noun()))?,
        None => None,
    };
    Ok(TensorEntry {
        name,
        shape,
        datatype,
        parameters,
        data: o.remove("data"),
        binary_size,
    })
}

fn wanted_outputs(v: Option<Value>) -> Result<Option<Vec<WantedOutput>>> {
    if matches!(v, None | Some(Value::Null)) {
        return Ok(None);
    }
    let mut outs = Vec::new();
    for (i, v) in array_of(v, "outputs", "a list of {\"name\": …} objects")?
        .into_iter()
        .enumerate()
    {
        let at = format!("outputs[{i}].");
        let Value::Object(mut o) = v else {
            return Err(bad(format!(
                "outputs[{i}]: expected an object with a name, got {}",
                shown(&v)
            )));
        };
        let name = req_string(&mut o, "name", &at)?;
        let parameters = opt_object(&mut o, "parameters", &at)?;
        outs.push(WantedOutput { name, parameters });
    }
    Ok(Some(outs))
}
