//! Models compiled into the binary, so the defaults work from any directory.
//! Each entry: (model.toml text, weights file name, weights bytes). The files
//! live in the repository's `models/<id>/` folders.

pub static MODELS: &[(&str, &str, &[u8])] = &[];
