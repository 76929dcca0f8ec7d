//! Camera room: frame sources (webcam, folder, synthetic) and the
//! latest-frame-wins slot frames are handed over in; the live pipeline that
//! runs models on them is `crate::live`.

pub mod frame;
pub mod source;
pub mod synthetic;
pub mod webcam;

use source::{FolderSource, SourceFactory};

/// Where live frames come from: `synthetic`, `webcam`, `webcam:N` or a folder.
/// Parsed once here for the CLI, the app and the Live panel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    Synthetic,
    Webcam(u32),
    Folder(std::path::PathBuf),
}

impl std::str::FromStr for SourceSpec {
    type Err = crate::Error;
    fn from_str(spec: &str) -> crate::Result<Self> {
        if spec == "synthetic" {
            return Ok(SourceSpec::Synthetic);
        }
        if let Some(rest) = spec.strip_prefix("webcam") {
            return match rest.strip_prefix(':') {
                Some(n) => n.parse::<u32>().map(SourceSpec::Webcam).map_err(|_| {
                    crate::Error::usage(format!(
                        "source '{spec}': bad webcam index '{n}' (expected webcam:N, N = 0, 1, …)"
                    ))
                }),
                None if rest.is_empty() => Ok(SourceSpec::Webcam(0)),
                None => Err(crate::Error::usage(format!(
                    "source '{spec}': expected webcam or webcam:N"
                ))),
            };
        }
        if spec.is_empty() {
            return Err(crate::Error::usage(
                "source '': expected synthetic, webcam[:N] or a folder of images",
            ));
        }
        Ok(SourceSpec::Folder(std::path::PathBuf::from(spec)))
    }
}

impl std::fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceSpec::Synthetic => f.write_str("synthetic"),
            SourceSpec::Webcam(i) => write!(f, "webcam:{i}"),
            SourceSpec::Folder(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Opens a source from its text form (see [`SourceSpec`]).
pub fn open_source(spec: &str, width: u32, height: u32, fps: f64) -> crate::error::Result<SourceFactory> {
    open_spec(&spec.parse()?, width, height, fps)
}

/// Opens a parsed source. A folder must exist and hold images.
pub fn open_spec(spec: &SourceSpec, width: u32, height: u32, fps: f64) -> crate::error::Result<SourceFactory> {
    match spec {
        SourceSpec::Synthetic => Ok(SourceFactory::ready(synthetic::SyntheticSource::new(
            width, height, fps,
        )?)),
        SourceSpec::Webcam(idx) => webcam::factory(*idx, width, height, fps.round() as u32),
        SourceSpec::Folder(p) if p.is_dir() => Ok(SourceFactory::ready(FolderSource::open(p, fps)?)),
        SourceSpec::Folder(p) => Err(crate::error::Error::msg(format!(
            "source '{}': expected synthetic, webcam[:N] or a folder of images",
            p.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::SourceSpec;

    #[test]
    fn source_specs_parse_once_and_round_trip() {
        assert_eq!("webcam".parse::<SourceSpec>(), Ok(SourceSpec::Webcam(0)));
        assert_eq!("webcam:2".parse::<SourceSpec>(), Ok(SourceSpec::Webcam(2)));
        assert!("webcam:x".parse::<SourceSpec>().is_err());
        assert!("webcamera".parse::<SourceSpec>().is_err());
        assert_eq!("synthetic".parse::<SourceSpec>(), Ok(SourceSpec::Synthetic));
        assert_eq!(SourceSpec::Webcam(3).to_string(), "webcam:3");
    }
}
