//! `infer`'s inputs: files, folders (their images, sorted) and glob patterns,
//! expanded in the order given.

use std::path::PathBuf;

use crate::vision::image_files::is_image_name;

/// One input after expansion: a path, or a pattern that matched nothing /
/// could not be read (kept so it is reported in its place).
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    File(PathBuf),
    Problem { name: String, error: String },
}

fn has_glob_chars(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

pub fn expand(args: &[String]) -> Vec<Input> {
    let mut out = Vec::new();
    for a in args {
        let p = PathBuf::from(a);
        if p.is_dir() {
            match std::fs::read_dir(&p) {
                Ok(rd) => {
                    let mut files: Vec<PathBuf> = rd
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|f| f.is_file() && is_image_name(f))
                        .collect();
                    files.sort();
                    if files.is_empty() {
                        out.push(Input::Problem {
                            name: a.clone(),
                            error: format!("{a}: folder holds no images"),
                        });
                    }
                    out.extend(files.into_iter().map(Input::File));
                }
                Err(e) => out.push(Input::Problem {
                    name: a.clone(),
                    error: format!("{a}: cannot list folder: {e}"),
                }),
            }
        } else if !p.exists() && has_glob_chars(a) {
            match glob::glob(a) {
                Ok(paths) => {
                    let mut files: Vec<PathBuf> = paths.filter_map(|r| r.ok()).filter(|f| f.is_file()).collect();
                    files.sort();
                    if files.is_empty() {
                        out.push(Input::Problem {
                            name: a.clone(),
                            error: format!("{a}: no file matches"),
                        });
                    }
                    out.extend(files.into_iter().map(Input::File));
                }
                Err(e) => out.push(Input::Problem {
                    name: a.clone(),
                    error: format!("{a}: bad pattern: {e}"),
                }),
            }
        } else {
            out.push(Input::File(p));
        }
    }
    out
}
