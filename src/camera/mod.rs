//! Camera room: frame sources (webcam, folder, synthetic), the capture
//! thread and the latest-frame-wins live pipeline.

pub mod frame;
pub mod live_stats;
pub mod pipeline;
pub mod source;
pub mod synthetic;
pub mod webcam;

use source::{FolderSource, SourceFactory};

/// Parses `synthetic`, `webcam`, `webcam:N` or a folder path.
pub fn open_source(spec: &str, width: u32, height: u32, fps: f64) -> Result<SourceFactory, String> {
    if spec == "synthetic" {
        return Ok(SourceFactory::ready(synthetic::SyntheticSource::new(
            width, height, fps,
        )?));
    }
    if let Some(rest) = spec.strip_prefix("webcam") {
        let idx = match rest.strip_prefix(':') {
            Some(n) => n
                .parse::<u32>()
                .map_err(|_| format!("source '{spec}': bad webcam index"))?,
            None if rest.is_empty() => 0,
            None => return Err(format!("source '{spec}': expected webcam or webcam:N")),
        };
        return webcam::factory(idx, width, height, fps.round() as u32);
    }
    let p = std::path::Path::new(spec);
    if p.is_dir() {
        return Ok(SourceFactory::ready(FolderSource::open(p, fps)?));
    }
    Err(format!(
        "source '{spec}': expected synthetic, webcam[:N] or a folder of images"
    ))
}
