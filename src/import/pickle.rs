//! A pickle reader for torch checkpoints that executes nothing.
//!
//! It runs the pickle opcodes a torch `data.pkl` uses (protocols 2–5, plus
//! the text `GET`/`PUT` forms) on a flat heap of plain values. A global
//! (`GLOBAL`, `STACK_GLOBAL`) is looked up in a whitelist the moment it is
//! read: checkpoint types (tensor rebuilders, storage types, containers,
//! `torch.nn.modules.*` and `ultralytics.nn.*` classes) resolve to a [`Kind`],
//! anything else is refused by name. Classes become [`Object::Record`]s that
//! keep their constructor arguments and the state `BUILD` gives them (their
//! `__dict__`); the few functions known here are re-implemented, never
//! called. Every size read from the data is checked against the bytes left,
//! and the stack, mark stack, memo and heap are bounded.

use std::collections::HashMap;
use std::rc::Rc;

use crate::error::{Error, Result};

/// Upper bounds of one unpickling run.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_stack: usize,
    pub max_marks: usize,
    pub max_memo: usize,
    pub max_objects: usize,
    pub max_string: usize,
    /// Values placed into containers or copied as call arguments, in all.
    pub max_items: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_stack: 1 << 20,
            max_marks: 1 << 12,
            max_memo: 1 << 22,
            max_objects: 1 << 23,
            max_string: 64 << 20,
            max_items: 1 << 26,
        }
    }
}

/// Element types of torch storages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl StorageType {
    pub fn size_in_bytes(self) -> usize {
        match self {
            StorageType::F64 | StorageType::I64 => 8,
            StorageType::F32 | StorageType::I32 => 4,
            StorageType::F16 | StorageType::BF16 | StorageType::I16 => 2,
            StorageType::I8 | StorageType::U8 | StorageType::Bool => 1,
        }
    }
}

/// What a whitelisted global is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, …)`
    RebuildTensorV2,
    /// `torch._utils._rebuild_tensor(storage, offset, size, stride)`
    RebuildTensor,
    /// `torch._utils._rebuild_parameter(data, requires_grad, hooks)`
    RebuildParameter,
    /// `torch._utils._rebuild_parameter_with_state(data, requires_grad, hooks, state)`
    RebuildParameterWithState,
    /// `torch._tensor._rebuild_from_type_v2(func, type, args, state)`
    RebuildFromTypeV2,
    /// `collections.OrderedDict`, `builtins.dict`
    Dict,
    /// `builtins.set`, `builtins.frozenset`
    Set,
    /// `builtins.list`
    List,
    /// `torch.Size`: a tuple
    TorchSize,
    /// `torch.device`: its string
    TorchDevice,
    /// `torch.FloatStorage` etc.
    Storage(StorageType),
    /// `copyreg._reconstructor(cls, base, state)`: a record of `cls`
    Reconstructor,
    /// `_codecs.encode(text, 'latin1')`: bytes
    CodecsEncode,
    /// A class kept as a plain record (its args and `BUILD` state).
    Record,
    /// A name that is only ever a value (`torch.float16`, `torch.Tensor`).
    Constant,
}

/// A value on the stack, in the memo or inside a container.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    /// A whitelisted global: its kind and dotted name.
    Global(Kind, Rc<str>),
    /// An object on the heap.
    Ref(usize),
}

/// A torch storage named by a persistent id: `data/<key>` in the archive.
#[derive(Debug, Clone, PartialEq)]
pub struct Storage {
    pub dtype: StorageType,
    pub key: String,
    pub numel: u64,
}

/// A tensor view of a storage (not materialised).
#[derive(Debug, Clone, PartialEq)]
pub struct TensorMeta {
    pub storage: Storage,
    pub offset: u64,
    pub size: Vec<u64>,
    pub stride: Vec<u64>,
}

/// Heap objects.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    List(Vec<Value>),
    Tuple(Vec<Value>),
    /// Insertion order; a later entry with an equal key wins on lookup.
    Dict(Vec<(Value, Value)>),
    Set(Vec<Value>),
    Record {
        class: Rc<str>,
        args: Vec<Value>,
        /// What `BUILD` gave it (usually a dict: its `__dict__`), or None.
        state: Value,
        /// Items of a dict or list subclass (`SETITEMS` / `APPENDS` on it).
        items: Vec<(Value, Value)>,
    },
    Storage(Storage),
    Tensor(TensorMeta),
}

/// An unpickled value graph.
#[derive(Debug, Clone)]
pub struct Pickle {
    pub heap: Vec<Object>,
    pub root: Value,
}

impl Pickle {
    pub fn object(&self, v: &Value) -> Option<&Object> {
        match v {
            Value::Ref(i) => self.heap.get(*i),
            _ => None,
        }
    }

    /// The entries of a dict, or of a record's dict state.
    pub fn dict_entries(&self, v: &Value) -> Option<&[(Value, Value)]> {
        match self.object(v)? {
            Object::Dict(e) => Some(e),
            Object::Record { state, .. } => match self.object(state)? {
                Object::Dict(e) => Some(e),
                // (dict_state, slot_state)
                Object::Tuple(t) if t.len() == 2 => match self.object(&t[0])? {
                    Object::Dict(e) => Some(e),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        }
    }

    /// `v[key]` for a dict (or a record's `__dict__`) with string keys.
    pub fn get(&self, v: &Value, key: &str) -> Option<&Value> {
        self.dict_entries(v)?
            .iter()
            .rev()
            .find(|(k, _)| matches!(k, Value::Str(s) if &**s == key))
            .map(|(_, v)| v)
    }

    /// The class of a record.
    pub fn class_of(&self, v: &Value) -> Option<&str> {
        match self.object(v)? {
            Object::Record { class, .. } => Some(class),
            _ => None,
        }
    }

    /// The items of a list or tuple.
    pub fn seq(&self, v: &Value) -> Option<&[Value]> {
        match self.object(v)? {
            Object::List(x) | Object::Tuple(x) | Object::Set(x) => Some(x),
            _ => None,
        }
    }

    pub fn tensor(&self, v: &Value) -> Option<&TensorMeta> {
        match self.object(v)? {
            Object::Tensor(t) => Some(t),
            _ => None,
        }
    }
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }

    pub fn as_float(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }
}

/// Resolves `module.name` against the whitelist.
pub fn resolve_global(module: &str, name: &str) -> Option<Kind> {
    let module = match module {
        "__builtin__" => "builtins",
        "copy_reg" => "copyreg",
        m => m,
    };
    let storage = |t| Some(Kind::Storage(t));
    let class_like = name.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    match (module, name) {
        ("torch._utils", "_rebuild_tensor_v2") => Some(Kind::RebuildTensorV2),
        ("torch._utils", "_rebuild_tensor") => Some(Kind::RebuildTensor),
        ("torch._utils", "_rebuild_parameter") => Some(Kind::RebuildParameter),
        ("torch._utils", "_rebuild_parameter_with_state") => Some(Kind::RebuildParameterWithState),
        ("torch._tensor", "_rebuild_from_type_v2") => Some(Kind::RebuildFromTypeV2),
        ("collections", "OrderedDict") | ("builtins", "dict") => Some(Kind::Dict),
        ("builtins", "set") | ("builtins", "frozenset") => Some(Kind::Set),
        ("builtins", "list") => Some(Kind::List),
        ("builtins", "object") => Some(Kind::Constant),
        ("torch", "Size") => Some(Kind::TorchSize),
        ("torch", "device") => Some(Kind::TorchDevice),
        ("torch", "DoubleStorage") => storage(StorageType::F64),
        ("torch", "FloatStorage") => storage(StorageType::F32),
        ("torch", "HalfStorage") => storage(StorageType::F16),
        ("torch", "BFloat16Storage") => storage(StorageType::BF16),
        ("torch", "LongStorage") => storage(StorageType::I64),
        ("torch", "IntStorage") => storage(StorageType::I32),
        ("torch", "ShortStorage") => storage(StorageType::I16),
        ("torch", "CharStorage") => storage(StorageType::I8),
        ("torch", "ByteStorage") => storage(StorageType::U8),
        ("torch", "BoolStorage") => storage(StorageType::Bool),
        (
            "torch",
            "float16" | "float32" | "float64" | "bfloat16" | "half" | "float" | "double" | "int64" | "int32" | "int16"
            | "int8" | "uint8" | "bool" | "long" | "int" | "Tensor",
        ) => Some(Kind::Constant),
        ("torch.nn.parameter", "Parameter") => Some(Kind::Constant),
        ("copyreg", "_reconstructor") => Some(Kind::Reconstructor),
        ("_codecs", "encode") => Some(Kind::CodecsEncode),
        // Values ultralytics keeps next to the model (training args, metrics).
        ("ultralytics.utils", "IterableSimpleNamespace")
        | ("types", "SimpleNamespace")
        | ("argparse", "Namespace")
        | ("pathlib", "PosixPath" | "WindowsPath" | "Path")
        | ("numpy", "dtype" | "ndarray")
        | ("numpy.core.multiarray" | "numpy._core.multiarray", "scalar" | "_reconstruct") => Some(Kind::Record),
        (m, _)
            if class_like
                && (m.starts_with("torch.nn.modules.")
                    || m.starts_with("ultralytics.nn.")
                    || m.starts_with("ultralytics.utils.loss")
                    || m.starts_with("ultralytics.utils.tal")
                    || m.starts_with("ultralytics.utils.metrics")) =>
        {
            Some(Kind::Record)
        }
        _ => None,
    }
}

/// The opcodes this reader runs (Python's `pickletools` names).
mod op {
    pub const PROTO: u8 = 0x80;
    pub const FRAME: u8 = 0x95;
    pub const STOP: u8 = b'.';
    pub const MARK: u8 = b'(';
    pub const POP: u8 = b'0';
    pub const POP_MARK: u8 = b'1';
    pub const DUP: u8 = b'2';
    pub const NONE: u8 = b'N';
    pub const NEWTRUE: u8 = 0x88;
    pub const NEWFALSE: u8 = 0x89;
    pub const BININT: u8 = b'J';
    pub const BININT1: u8 = b'K';
    pub const BININT2: u8 = b'M';
    pub const LONG1: u8 = 0x8a;
    pub const LONG4: u8 = 0x8b;
    pub const INT: u8 = b'I';
    pub const BINFLOAT: u8 = b'G';
    pub const BINUNICODE: u8 = b'X';
    pub const SHORT_BINUNICODE: u8 = 0x8c;
    pub const BINUNICODE8: u8 = 0x8d;
    pub const BINBYTES: u8 = b'B';
    pub const SHORT_BINBYTES: u8 = b'C';
    pub const BINBYTES8: u8 = 0x8e;
    pub const BYTEARRAY8: u8 = 0x96;
    pub const BINSTRING: u8 = b'T';
    pub const SHORT_BINSTRING: u8 = b'U';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const TUPLE: u8 = b't';
    pub const EMPTY_LIST: u8 = b']';
    pub const LIST: u8 = b'l';
    pub const APPEND: u8 = b'a';
    pub const APPENDS: u8 = b'e';
    pub const ADDITEMS: u8 = 0x90;
    pub const EMPTY_DICT: u8 = b'}';
    pub const DICT: u8 = b'd';
    pub const SETITEM: u8 = b's';
    pub const SETITEMS: u8 = b'u';
    pub const EMPTY_SET: u8 = 0x8f;
    pub const FROZENSET: u8 = 0x91;
    pub const BINPUT: u8 = b'q';
    pub const LONG_BINPUT: u8 = b'r';
    pub const MEMOIZE: u8 = 0x94;
    pub const PUT: u8 = b'p';
    pub const GET: u8 = b'g';
    pub const BINGET: u8 = b'h';
    pub const LONG_BINGET: u8 = b'j';
    pub const GLOBAL: u8 = b'c';
    pub const STACK_GLOBAL: u8 = 0x93;
    pub const REDUCE: u8 = b'R';
    pub const NEWOBJ: u8 = 0x81;
    pub const NEWOBJ_EX: u8 = 0x92;
    pub const BUILD: u8 = b'b';
    pub const BINPERSID: u8 = b'Q';
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const TUPLE3: u8 = 0x87;
}

fn err(m: impl Into<String>) -> Error {
    Error::msg(m)
}

struct Vm<'a> {
    data: &'a [u8],
    pos: usize,
    op_pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    heap: Vec<Object>,
    limits: Limits,
    items: usize,
}

/// Unpickles `data` without executing anything.
pub fn load(data: &[u8], limits: Limits) -> Result<Pickle> {
    let mut vm = Vm {
        data,
        pos: 0,
        op_pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        heap: Vec::new(),
        limits,
        items: 0,
    };
    let root = vm.run()?;
    Ok(Pickle { heap: vm.heap, root })
}

impl Vm<'_> {
    fn fail(&self, m: impl std::fmt::Display) -> Error {
        err(format!("{m} (opcode at byte {})", self.op_pos))
    }

    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let left = self.data.len() - self.pos;
        if n > left {
            return Err(self.fail(format!("truncated: needs {n} bytes, {left} left")));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn arr<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn len_u32(&mut self) -> Result<usize> {
        Ok(u32::from_le_bytes(self.arr()?) as usize)
    }

    fn len_u64(&mut self) -> Result<usize> {
        let n = u64::from_le_bytes(self.arr()?);
        usize::try_from(n).map_err(|_| self.fail(format!("length {n} is too large")))
    }

    /// `n` bytes of a string or bytes value, checked against the limit and what is left.
    fn chunk(&mut self, n: usize) -> Result<&[u8]> {
        if n > self.limits.max_string {
            return Err(self.fail(format!(
                "a {n} byte string exceeds the {} byte limit",
                self.limits.max_string
            )));
        }
        self.take(n)
    }

    fn text(&mut self, n: usize) -> Result<Value> {
        let pos = self.op_pos;
        let b = self.chunk(n)?;
        let s = std::str::from_utf8(b).map_err(|_| err(format!("invalid UTF-8 in a string (opcode at byte {pos})")))?;
        Ok(Value::Str(Rc::from(s)))
    }

    fn bytes(&mut self, n: usize) -> Result<Value> {
        Ok(Value::Bytes(Rc::from(self.chunk(n)?)))
    }

    /// A newline-terminated line of at most 256 bytes (GLOBAL, GET, PUT).
    fn line(&mut self) -> Result<&str> {
        let rest = &self.data[self.pos..];
        let end = rest
            .iter()
            .take(257)
            .position(|&b| b == b'\n')
            .ok_or_else(|| self.fail("truncated: a line without its newline (or longer than 256 bytes)"))?;
        let s = std::str::from_utf8(&rest[..end]).map_err(|_| self.fail("invalid UTF-8 in a line"))?;
        self.pos += end + 1;
        Ok(s)
    }

    fn push(&mut self, v: Value) -> Result<()> {
        if self.stack.len() >= self.limits.max_stack {
            return Err(self.fail(format!("stack deeper than {} values", self.limits.max_stack)));
        }
        self.stack.push(v);
        Ok(())
    }

    fn pop(&mut self) -> Result<Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.fail("stack underflow"));
        }
        self.stack.pop().ok_or_else(|| self.fail("stack underflow"))
    }

    fn top(&self) -> Result<&Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.fail("stack underflow"));
        }
        self.stack.last().ok_or_else(|| self.fail("stack underflow"))
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let m = self.marks.pop().ok_or_else(|| self.fail("no MARK on the stack"))?;
        Ok(self.stack.split_off(m.min(self.stack.len())))
    }

    /// Counts `n` values moved into a container or copied; refuses past the limit.
    fn charge(&mut self, n: usize) -> Result<()> {
        self.items = self.items.saturating_add(n);
        if self.items > self.limits.max_items {
            return Err(self.fail(format!("more than {} values in containers", self.limits.max_items)));
        }
        Ok(())
    }

    fn alloc(&mut self, o: Object) -> Result<Value> {
        let n = match &o {
            Object::List(v) | Object::Tuple(v) | Object::Set(v) => v.len(),
            Object::Dict(v) => v.len(),
            Object::Record { args, items, .. } => args.len() + items.len(),
            Object::Storage(_) | Object::Tensor(_) => 0,
        };
        self.charge(n)?;
        if self.heap.len() >= self.limits.max_objects {
            return Err(self.fail(format!("more than {} objects", self.limits.max_objects)));
        }
        self.heap.push(o);
        Ok(Value::Ref(self.heap.len() - 1))
    }

    fn put(&mut self, idx: u32) -> Result<()> {
        let v = self.top()?.clone();
        if self.memo.len() >= self.limits.max_memo && !self.memo.contains_key(&idx) {
            return Err(self.fail(format!("memo larger than {} entries", self.limits.max_memo)));
        }
        self.memo.insert(idx, v);
        Ok(())
    }

    fn get(&mut self, idx: u32) -> Result<()> {
        let v = self
            .memo
            .get(&idx)
            .cloned()
            .ok_or_else(|| self.fail(format!("memo entry {idx} was never stored")))?;
        self.push(v)
    }

    fn heap_mut(&mut self, v: &Value) -> Result<&mut Object> {
        match v {
            Value::Ref(i) if *i < self.heap.len() => Ok(&mut self.heap[*i]),
            _ => Err(err(format!(
                "expected a container, found {} (opcode at byte {})",
                describe(v),
                self.op_pos
            ))),
        }
    }

    fn extend_list(&mut self, target: &Value, items: Vec<Value>) -> Result<()> {
        self.charge(items.len())?;
        let pos = self.op_pos;
        match self.heap_mut(target)? {
            Object::List(l) | Object::Set(l) => l.extend(items),
            Object::Record { items: it, .. } => it.extend(items.into_iter().map(|v| (Value::None, v))),
            _ => return Err(err(format!("APPEND to a non-list (opcode at byte {pos})"))),
        }
        Ok(())
    }

    fn set_items(&mut self, target: &Value, kv: Vec<Value>) -> Result<()> {
        self.charge(kv.len() / 2)?;
        if !kv.len().is_multiple_of(2) {
            return Err(self.fail("SETITEMS with an odd number of values"));
        }
        let pos = self.op_pos;
        let mut pairs = Vec::with_capacity(kv.len() / 2);
        let mut it = kv.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            pairs.push((k, v));
        }
        match self.heap_mut(target)? {
            Object::Dict(d) => d.extend(pairs),
            Object::Record { items, .. } => items.extend(pairs),
            _ => return Err(err(format!("SETITEM on a non-dict (opcode at byte {pos})"))),
        }
        Ok(())
    }

    fn tuple(&mut self, items: Vec<Value>) -> Result<Value> {
        self.alloc(Object::Tuple(items))
    }

    fn global(&mut self, module: &str, name: &str) -> Result<Value> {
        let full = format!("{module}.{name}");
        match resolve_global(module, name) {
            Some(k) => Ok(Value::Global(k, Rc::from(full.as_str()))),
            None => {
                // Shown as is, but never with control characters (terminal escapes).
                let shown: String = full
                    .chars()
                    .take(200)
                    .map(|c| if c.is_control() { '?' } else { c })
                    .collect();
                Err(err(format!("refusing global '{shown}' (not a checkpoint type)")))
            }
        }
    }

    /// Runs the opcodes up to `STOP`, each family in its own method, and returns the value `STOP` pops.
    fn run(&mut self) -> Result<Value> {
        loop {
            self.op_pos = self.pos;
            let op = self.u8()?;
            match op {
                op::STOP => return self.pop(),
                op::PROTO | op::FRAME | op::MARK | op::POP | op::POP_MARK | op::DUP => self.stack_op(op)?,
                op::NONE
                | op::NEWTRUE
                | op::NEWFALSE
                | op::BININT
                | op::BININT1
                | op::BININT2
                | op::LONG1
                | op::LONG4
                | op::INT
                | op::BINFLOAT => self.number_op(op)?,
                op::BINUNICODE
                | op::SHORT_BINUNICODE
                | op::BINUNICODE8
                | op::BINBYTES
                | op::SHORT_BINBYTES
                | op::BINBYTES8
                | op::BYTEARRAY8
                | op::BINSTRING
                | op::SHORT_BINSTRING => self.string_op(op)?,
                op::EMPTY_TUPLE
                | op::TUPLE
                | op::TUPLE1
                | op::TUPLE2
                | op::TUPLE3
                | op::EMPTY_LIST
                | op::LIST
                | op::APPEND
                | op::APPENDS
                | op::ADDITEMS => self.sequence_op(op)?,
                op::EMPTY_DICT | op::DICT | op::SETITEM | op::SETITEMS | op::EMPTY_SET | op::FROZENSET => {
                    self.dict_set_op(op)?
                }
                op::BINPUT | op::LONG_BINPUT | op::MEMOIZE | op::PUT | op::GET | op::BINGET | op::LONG_BINGET => {
                    self.memo_op(op)?
                }
                op::GLOBAL | op::STACK_GLOBAL | op::REDUCE | op::NEWOBJ | op::NEWOBJ_EX | op::BUILD | op::BINPERSID => {
                    self.object_op(op)?
                }
                other => return Err(self.unsupported(other)),
            }
        }
    }

    /// The refusal of an opcode this reader does not run, naming the known unsafe ones.
    fn unsupported(&self, other: u8) -> Error {
        self.fail(format!(
            "unsupported pickle opcode 0x{other:02x}{}",
            match other {
                b'i' | b'o' => " (INST/OBJ)",
                b'P' => " (PERSID)",
                0x82..=0x84 => " (EXT)",
                0x97 | 0x98 => " (out-of-band buffer)",
                _ => "",
            }
        ))
    }

    /// Framing and stack housekeeping: PROTO, FRAME, MARK, POP, POP_MARK, DUP.
    fn stack_op(&mut self, op: u8) -> Result<()> {
        match op {
            op::PROTO => {
                let p = self.u8()?;
                if p > 5 {
                    return Err(self.fail(format!("pickle protocol {p} is newer than 5")));
                }
            }
            op::FRAME => {
                // A length hint only.
                self.arr::<8>()?;
            }
            op::MARK => {
                if self.marks.len() >= self.limits.max_marks {
                    return Err(self.fail(format!("more than {} nested MARKs", self.limits.max_marks)));
                }
                self.marks.push(self.stack.len());
            }
            op::POP => {
                self.pop()?;
            }
            op::POP_MARK => {
                self.pop_mark()?;
            }
            op::DUP => {
                let v = self.top()?.clone();
                self.push(v)?;
            }
            other => return Err(self.unsupported(other)),
        }
        Ok(())
    }

    /// Constants and numbers: NONE, the booleans, the ints, LONG1/LONG4, INT, BINFLOAT.
    fn number_op(&mut self, op: u8) -> Result<()> {
        let v = match op {
            op::NONE => Value::None,
            op::NEWTRUE => Value::Bool(true),
            op::NEWFALSE => Value::Bool(false),
            op::BININT => Value::Int(i32::from_le_bytes(self.arr()?) as i64),
            op::BININT1 => Value::Int(self.u8()? as i64),
            op::BININT2 => Value::Int(u16::from_le_bytes(self.arr()?) as i64),
            op::LONG1 | op::LONG4 => self.long(op)?,
            op::INT => {
                // Protocol 0 text; "01"/"00" are True/False.
                let l = self.line()?.trim().to_string();
                match l.as_str() {
                    "01" => Value::Bool(true),
                    "00" => Value::Bool(false),
                    s => Value::Int(s.parse().map_err(|_| self.fail(format!("bad INT '{s}'")))?),
                }
            }
            op::BINFLOAT => Value::Float(f64::from_be_bytes(self.arr()?)),
            other => return Err(self.unsupported(other)),
        };
        self.push(v)
    }

    /// The integer of a LONG1/LONG4: little-endian two's complement, at most 64 bits.
    fn long(&mut self, op: u8) -> Result<Value> {
        let n = if op == op::LONG1 {
            self.u8()? as usize
        } else {
            self.len_u32()?
        };
        if n > 8 {
            return Err(self.fail(format!("a {n} byte integer is wider than 64 bits")));
        }
        let b = self.take(n)?;
        let mut v: i64 = 0;
        for (i, &x) in b.iter().enumerate() {
            v |= (x as i64) << (8 * i);
        }
        if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
            v -= 1i64 << (8 * n);
        }
        Ok(Value::Int(v))
    }

    /// Text and bytes: the BINUNICODE, BINBYTES and (latin-1) BINSTRING forms.
    fn string_op(&mut self, op: u8) -> Result<()> {
        let v = match op {
            op::BINUNICODE => {
                let n = self.len_u32()?;
                self.text(n)?
            }
            op::SHORT_BINUNICODE => {
                let n = self.u8()? as usize;
                self.text(n)?
            }
            op::BINUNICODE8 => {
                let n = self.len_u64()?;
                self.text(n)?
            }
            op::BINBYTES => {
                let n = self.len_u32()?;
                self.bytes(n)?
            }
            op::SHORT_BINBYTES => {
                let n = self.u8()? as usize;
                self.bytes(n)?
            }
            op::BINBYTES8 | op::BYTEARRAY8 => {
                let n = self.len_u64()?;
                self.bytes(n)?
            }
            op::BINSTRING | op::SHORT_BINSTRING => {
                // Python 2 str: latin-1 text.
                let n = if op == op::BINSTRING {
                    self.len_u32()?
                } else {
                    self.u8()? as usize
                };
                let s: String = self.chunk(n)?.iter().map(|&b| b as char).collect();
                Value::Str(Rc::from(s.as_str()))
            }
            other => return Err(self.unsupported(other)),
        };
        self.push(v)
    }

    /// Tuples and lists: building them and appending to them.
    fn sequence_op(&mut self, op: u8) -> Result<()> {
        match op {
            op::EMPTY_TUPLE => {
                let v = self.tuple(Vec::new())?;
                self.push(v)?;
            }
            op::TUPLE => {
                let items = self.pop_mark()?;
                let v = self.tuple(items)?;
                self.push(v)?;
            }
            op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                let n = (op - op::TUPLE1 + 1) as usize;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.pop()?);
                }
                items.reverse();
                let v = self.tuple(items)?;
                self.push(v)?;
            }
            op::EMPTY_LIST => {
                let v = self.alloc(Object::List(Vec::new()))?;
                self.push(v)?;
            }
            op::LIST => {
                let items = self.pop_mark()?;
                let v = self.alloc(Object::List(items))?;
                self.push(v)?;
            }
            op::APPEND => {
                let item = self.pop()?;
                let target = self.top()?.clone();
                self.extend_list(&target, vec![item])?;
            }
            op::APPENDS | op::ADDITEMS => {
                let items = self.pop_mark()?;
                let target = self.top()?.clone();
                self.extend_list(&target, items)?;
            }
            other => return Err(self.unsupported(other)),
        }
        Ok(())
    }

    /// Dicts and sets: building them and setting their items.
    fn dict_set_op(&mut self, op: u8) -> Result<()> {
        match op {
            op::EMPTY_DICT => {
                let v = self.alloc(Object::Dict(Vec::new()))?;
                self.push(v)?;
            }
            op::DICT => {
                let kv = self.pop_mark()?;
                let v = self.alloc(Object::Dict(Vec::new()))?;
                self.set_items(&v, kv)?;
                self.push(v)?;
            }
            op::SETITEM => {
                let v = self.pop()?;
                let k = self.pop()?;
                let target = self.top()?.clone();
                self.set_items(&target, vec![k, v])?;
            }
            op::SETITEMS => {
                let kv = self.pop_mark()?;
                let target = self.top()?.clone();
                self.set_items(&target, kv)?;
            }
            op::EMPTY_SET => {
                let v = self.alloc(Object::Set(Vec::new()))?;
                self.push(v)?;
            }
            op::FROZENSET => {
                let items = self.pop_mark()?;
                let v = self.alloc(Object::Set(items))?;
                self.push(v)?;
            }
            other => return Err(self.unsupported(other)),
        }
        Ok(())
    }

    /// The memo: the PUT and GET forms and MEMOIZE.
    fn memo_op(&mut self, op: u8) -> Result<()> {
        match op {
            op::BINPUT => {
                let i = self.u8()? as u32;
                self.put(i)
            }
            op::LONG_BINPUT => {
                let i = u32::from_le_bytes(self.arr()?);
                self.put(i)
            }
            op::MEMOIZE => {
                let i = u32::try_from(self.memo.len()).map_err(|_| self.fail("memo too large"))?;
                self.put(i)
            }
            op::PUT | op::GET => {
                let l = self.line()?.trim().to_string();
                let i: u32 = l.parse().map_err(|_| self.fail(format!("bad memo index '{l}'")))?;
                if op == op::PUT {
                    self.put(i)
                } else {
                    self.get(i)
                }
            }
            op::BINGET => {
                let i = self.u8()? as u32;
                self.get(i)
            }
            op::LONG_BINGET => {
                let i = u32::from_le_bytes(self.arr()?);
                self.get(i)
            }
            other => Err(self.unsupported(other)),
        }
    }

    /// Globals and objects: GLOBAL, STACK_GLOBAL, REDUCE, NEWOBJ(_EX), BUILD, BINPERSID.
    fn object_op(&mut self, op: u8) -> Result<()> {
        match op {
            op::GLOBAL => {
                let module = self.line()?.to_string();
                let name = self.line()?.to_string();
                let v = self.global(&module, &name)?;
                self.push(v)?;
            }
            op::STACK_GLOBAL => {
                let name = self.pop()?;
                let module = self.pop()?;
                match (module.as_str(), name.as_str()) {
                    (Some(m), Some(n)) => {
                        let v = self.global(m, n)?;
                        self.push(v)?;
                    }
                    _ => return Err(self.fail("STACK_GLOBAL needs two strings")),
                }
            }
            op::REDUCE => {
                let args = self.pop()?;
                let func = self.pop()?;
                let args = self.args_of(&args)?;
                let v = self.call(&func, args)?;
                self.push(v)?;
            }
            op::NEWOBJ | op::NEWOBJ_EX => {
                // NEWOBJ_EX kwargs are dropped.
                if op == op::NEWOBJ_EX {
                    self.pop()?;
                }
                let args = self.pop()?;
                let cls = self.pop()?;
                let args = self.args_of(&args)?;
                let v = self.new_object(&cls, args)?;
                self.push(v)?;
            }
            op::BUILD => {
                let state = self.pop()?;
                let target = self.top()?.clone();
                self.build(&target, state)?;
            }
            op::BINPERSID => {
                let pid = self.pop()?;
                let v = self.persistent(&pid)?;
                self.push(v)?;
            }
            other => return Err(self.unsupported(other)),
        }
        Ok(())
    }

    fn args_of(&mut self, v: &Value) -> Result<Vec<Value>> {
        let n = match self.object_ref(v) {
            Some(Object::Tuple(t)) => t.len(),
            _ => 0,
        };
        self.charge(n)?;
        match v {
            Value::Ref(i) => match self.heap.get(*i) {
                Some(Object::Tuple(t)) => Ok(t.clone()),
                _ => Err(self.fail("call arguments are not a tuple")),
            },
            _ => Err(self.fail("call arguments are not a tuple")),
        }
    }

    fn new_object(&mut self, cls: &Value, args: Vec<Value>) -> Result<Value> {
        match cls {
            Value::Global(Kind::Record, name) => self.alloc(Object::Record {
                class: name.clone(),
                args,
                state: Value::None,
                items: Vec::new(),
            }),
            Value::Global(Kind::Dict, _) => self.alloc(Object::Dict(Vec::new())),
            Value::Global(Kind::Set, _) => self.alloc(Object::Set(Vec::new())),
            Value::Global(Kind::List, _) => self.alloc(Object::List(Vec::new())),
            Value::Global(_, name) => Err(self.fail(format!("'{name}' cannot be instantiated here"))),
            other => Err(self.fail(format!("cannot instantiate {}", describe(other)))),
        }
    }

    fn build(&mut self, target: &Value, state: Value) -> Result<()> {
        let pos = self.op_pos;
        match self.heap_mut(target) {
            Ok(Object::Record { state: s, .. }) => {
                *s = state;
                Ok(())
            }
            _ if state == Value::None => Ok(()),
            // OrderedDict and tensors may carry an (empty) python state.
            Ok(Object::Dict(_) | Object::Tensor(_)) => Ok(()),
            _ => Err(err(format!("BUILD on {} (opcode at byte {pos})", describe(target)))),
        }
    }

    fn persistent(&mut self, pid: &Value) -> Result<Value> {
        let t = self
            .args_of(pid)
            .map_err(|_| self.fail("persistent id is not a tuple"))?;
        let bad = || self.fail("persistent id is not ('storage', type, key, location, numel)".to_string());
        if t.len() != 5 || t[0].as_str() != Some("storage") {
            return Err(bad());
        }
        let dtype = match &t[1] {
            Value::Global(Kind::Storage(d), _) => *d,
            _ => return Err(bad()),
        };
        let key = t[2].as_str().ok_or_else(bad)?;
        if key.is_empty() || key.len() > 64 || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(self.fail(format!("storage key '{key}' is not a plain name")));
        }
        let numel = t[4]
            .as_int()
            .and_then(|n| u64::try_from(n).ok())
            .filter(|&n| n <= 1 << 40)
            .ok_or_else(bad)?;
        self.alloc(Object::Storage(Storage {
            dtype,
            key: key.to_string(),
            numel,
        }))
    }

    fn ints(&self, v: &Value, what: &str) -> Result<Vec<u64>> {
        let items = match v {
            Value::Ref(i) => match self.heap.get(*i) {
                Some(Object::Tuple(t) | Object::List(t)) => t,
                _ => return Err(self.fail(format!("tensor {what} is not a tuple"))),
            },
            _ => return Err(self.fail(format!("tensor {what} is not a tuple"))),
        };
        if items.len() > 8 {
            return Err(self.fail(format!("tensor {what} has {} dimensions (at most 8)", items.len())));
        }
        items
            .iter()
            .map(|x| {
                x.as_int()
                    .and_then(|n| u64::try_from(n).ok())
                    .ok_or_else(|| self.fail(format!("tensor {what} holds a negative or non-integer value")))
            })
            .collect()
    }

    fn rebuild_tensor(&mut self, args: &[Value]) -> Result<Value> {
        if args.len() < 4 {
            return Err(self.fail("_rebuild_tensor needs (storage, offset, size, stride)"));
        }
        let storage = match &args[0] {
            Value::Ref(i) => match self.heap.get(*i) {
                Some(Object::Storage(s)) => s.clone(),
                _ => return Err(self.fail("_rebuild_tensor: first argument is not a storage")),
            },
            _ => return Err(self.fail("_rebuild_tensor: first argument is not a storage")),
        };
        let offset = args[1]
            .as_int()
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| self.fail("_rebuild_tensor: bad storage offset"))?;
        let size = self.ints(&args[2], "size")?;
        let stride = self.ints(&args[3], "stride")?;
        if size.len() != stride.len() {
            return Err(self.fail("_rebuild_tensor: size and stride differ in length"));
        }
        self.alloc(Object::Tensor(TensorMeta {
            storage,
            offset,
            size,
            stride,
        }))
    }

    fn call(&mut self, func: &Value, args: Vec<Value>) -> Result<Value> {
        let (kind, name) = match func {
            Value::Global(k, n) => (*k, n.clone()),
            other => return Err(self.fail(format!("cannot call {}", describe(other)))),
        };
        match kind {
            Kind::RebuildTensorV2 | Kind::RebuildTensor => self.rebuild_tensor(&args),
            Kind::RebuildParameter | Kind::RebuildParameterWithState => match args.first() {
                Some(v @ Value::Ref(i)) if matches!(self.heap.get(*i), Some(Object::Tensor(_))) => Ok(v.clone()),
                _ => Err(self.fail(format!("{name}: first argument is not a tensor"))),
            },
            Kind::RebuildFromTypeV2 => {
                // (func, new_type, args, state): apply func to args, drop the python state.
                if args.len() != 4 {
                    return Err(self.fail(format!("{name} takes 4 arguments")));
                }
                let inner = self.args_of(&args[2])?;
                self.call(&args[0], inner)
            }
            Kind::Dict => {
                let kv: Vec<Value> = match args.first() {
                    None => Vec::new(),
                    Some(items) => match self.object_ref(items) {
                        Some(Object::Dict(d)) => d.iter().flat_map(|(k, v)| [k.clone(), v.clone()]).collect(),
                        Some(Object::List(l) | Object::Tuple(l)) => {
                            let mut kv = Vec::with_capacity(2 * l.len());
                            for p in l {
                                match self.object_ref(p) {
                                    Some(Object::Tuple(pair) | Object::List(pair)) if pair.len() == 2 => {
                                        kv.extend(pair.iter().cloned())
                                    }
                                    _ => return Err(self.fail(format!("{name}: an item is not a pair"))),
                                }
                            }
                            kv
                        }
                        _ => return Err(self.fail(format!("{name}: argument is not a list of pairs"))),
                    },
                };
                let v = self.alloc(Object::Dict(Vec::new()))?;
                self.set_items(&v, kv)?;
                Ok(v)
            }
            Kind::Set | Kind::List => {
                let items = match args.first() {
                    None => Vec::new(),
                    Some(v) => match self.object_ref(v) {
                        Some(Object::List(l) | Object::Tuple(l) | Object::Set(l)) => l.clone(),
                        _ => return Err(self.fail(format!("{name}: argument is not a sequence"))),
                    },
                };
                self.alloc(if kind == Kind::Set {
                    Object::Set(items)
                } else {
                    Object::List(items)
                })
            }
            Kind::TorchSize => match args.first() {
                Some(v) => {
                    let items = match self.object_ref(v) {
                        Some(Object::List(l) | Object::Tuple(l)) => l.clone(),
                        _ => return Err(self.fail("torch.Size: argument is not a tuple")),
                    };
                    self.tuple(items)
                }
                None => self.tuple(Vec::new()),
            },
            Kind::TorchDevice => Ok(args.first().cloned().unwrap_or(Value::None)),
            Kind::CodecsEncode => match (args.first(), args.get(1).and_then(|e| e.as_str())) {
                (Some(Value::Str(s)), Some("latin1" | "latin-1")) => {
                    let b: Option<Vec<u8>> = s.chars().map(|c| u8::try_from(c as u32).ok()).collect();
                    let b = b.ok_or_else(|| self.fail("_codecs.encode: text is not latin-1"))?;
                    Ok(Value::Bytes(Rc::from(b)))
                }
                _ => Err(self.fail("_codecs.encode: only (text, 'latin1') is supported")),
            },
            Kind::Reconstructor => match args.first() {
                Some(cls) => {
                    let cls = cls.clone();
                    self.new_object(&cls, Vec::new())
                }
                None => Err(self.fail("_reconstructor needs a class")),
            },
            Kind::Record => self.alloc(Object::Record {
                class: name,
                args,
                state: Value::None,
                items: Vec::new(),
            }),
            Kind::Storage(_) | Kind::Constant => Err(self.fail(format!("'{name}' cannot be called here"))),
        }
    }

    fn object_ref(&self, v: &Value) -> Option<&Object> {
        match v {
            Value::Ref(i) => self.heap.get(*i),
            _ => None,
        }
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::None => "None".into(),
        Value::Bool(_) => "a bool".into(),
        Value::Int(_) => "an int".into(),
        Value::Float(_) => "a float".into(),
        Value::Str(_) => "a string".into(),
        Value::Bytes(_) => "bytes".into(),
        Value::Global(_, n) => format!("'{n}'"),
        Value::Ref(_) => "an object".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(bytes: &[u8]) -> Result<Pickle> {
        load(bytes, Limits::default())
    }

    #[test]
    fn builds_dicts_lists_and_shared_references() {
        // {'a': [1, 2.5, 'x'], 'b': <same list>, 'n': None, 't': True}
        let mut p = vec![0x80, 2, b'}', b'q', 0, b'(']; // PROTO 2, EMPTY_DICT, BINPUT 0, MARK
        p.extend([0x8c, 1, b'a', b']', b'q', 1, b'(', b'K', 1, b'G']);
        p.extend(2.5f64.to_be_bytes());
        p.extend([0x8c, 1, b'x', b'e']); // APPENDS
        p.extend([0x8c, 1, b'b', b'h', 1]); // BINGET 1
        p.extend([0x8c, 1, b'n', b'N', 0x8c, 1, b't', 0x88, b'u', b'.']);
        let pk = run(&p).unwrap_or_else(|e| panic!("{e}"));
        let a = pk.get(&pk.root, "a").cloned().unwrap_or(Value::None);
        assert_eq!(pk.get(&pk.root, "b"), Some(&a), "BINGET shares the object");
        let items = pk.seq(&a).unwrap_or_default();
        assert_eq!(items.len(), 3);
        assert_eq!(items[0], Value::Int(1));
        assert_eq!(items[1], Value::Float(2.5));
        assert_eq!(items[2].as_str(), Some("x"));
        assert_eq!(pk.get(&pk.root, "n"), Some(&Value::None));
        assert_eq!(pk.get(&pk.root, "t"), Some(&Value::Bool(true)));
    }

    #[test]
    fn long1_is_signed_little_endian() {
        for (bytes, want) in [
            (vec![0xff], -1i64),
            (vec![0x00, 0x01], 256),
            (vec![], 0),
            (vec![0x80, 0x00], 128),
        ] {
            let mut p = vec![0x80, 2, 0x8a, bytes.len() as u8];
            p.extend(&bytes);
            p.push(b'.');
            let pk = run(&p).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(pk.root, Value::Int(want), "{bytes:?}");
        }
    }

    #[test]
    fn unknown_globals_are_refused_before_anything_else() {
        for (m, n) in [
            ("os", "system"),
            ("posix", "system"),
            ("builtins", "eval"),
            ("__builtin__", "getattr"),
            ("subprocess", "Popen"),
            ("torch.nn.modules.conv", "lowercase_function"),
        ] {
            let mut b = vec![0x80, 2, b'c'];
            b.extend(format!("{m}\n{n}\n").bytes());
            b.push(b'.');
            let e = run(&b).err().map(|e| e.to_string()).unwrap_or_default();
            assert_eq!(e, format!("refusing global '{m}.{n}' (not a checkpoint type)"));
        }
    }

    #[test]
    fn truncated_and_oversized_inputs_fail_cleanly() {
        // A BINUNICODE claiming 4 GiB with 3 bytes left.
        let e = run(&[0x80, 2, b'X', 0xff, 0xff, 0xff, 0xff, b'a', b'b', b'.'])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("exceeds") || e.contains("truncated"), "{e}");
        let e = run(&[0x80, 2, b'}']).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("truncated"), "{e}");
        let e = run(&[0x80, 2, b'.']).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("underflow"), "{e}");
        let e = run(&[0x80, 2, b'h', 7, b'.'])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("never stored"), "{e}");
        // The stack limit holds.
        let limits = Limits {
            max_stack: 4,
            ..Limits::default()
        };
        let e = load(&[0x80, 2, b'N', b'N', b'N', b'N', b'N', b'.'], limits)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("stack deeper"), "{e}");
    }

    #[test]
    fn rebuilds_a_tensor_from_a_persistent_storage() {
        // _rebuild_tensor_v2(('storage', HalfStorage, '0', 'cpu', 6), 0, (2, 3), (3, 1), False, OrderedDict())
        let mut p = vec![0x80, 2];
        p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n");
        p.extend(b"(");
        p.extend(b"(");
        p.extend([0x8c, 7]);
        p.extend(b"storage");
        p.extend(b"ctorch\nHalfStorage\n");
        p.extend([0x8c, 1, b'0', 0x8c, 3, b'c', b'p', b'u', b'K', 6, b't', b'Q']);
        p.extend([b'K', 0, b'K', 2, b'K', 3, 0x86, b'K', 3, b'K', 1, 0x86, 0x89]);
        p.extend(b"ccollections\nOrderedDict\n)R");
        p.extend(b"tR.");
        let pk = run(&p).unwrap_or_else(|e| panic!("{e}"));
        let t = pk.tensor(&pk.root).cloned();
        assert_eq!(
            t,
            Some(TensorMeta {
                storage: Storage {
                    dtype: StorageType::F16,
                    key: "0".into(),
                    numel: 6
                },
                offset: 0,
                size: vec![2, 3],
                stride: vec![3, 1],
            })
        );
    }
}
