//! Frame sources: a trait, and the folder-of-images source.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use image::RgbImage;

use crate::vision::decode::{decode_file, DecodeLimits};

/// Something that yields frames. `next` blocks until the next frame is due.
/// Sources live on the capture thread (a webcam handle may not move between
/// threads), so they are made there by a [`SourceFactory`].
pub trait Source {
    fn describe(&self) -> String;
    fn next(&mut self) -> crate::error::Result<RgbImage>;
}

/// Makes the source on the capture thread.
pub struct SourceFactory {
    pub name: String,
    pub make: Box<dyn FnOnce() -> crate::error::Result<Box<dyn Source>> + Send>,
}

impl SourceFactory {
    /// A source that can be made here and moved to the capture thread.
    pub fn ready<S: Source + Send + 'static>(s: S) -> Self {
        SourceFactory {
            name: s.describe(),
            make: Box::new(move || Ok(Box::new(s) as Box<dyn Source>)),
        }
    }
}

/// Paces a source at `fps`: frame i is due at start + i / fps.
pub struct Pacer {
    start: Option<Instant>,
    index: u64,
    period: Duration,
}

impl Pacer {
    pub fn new(fps: f64) -> Self {
        Pacer {
            start: None,
            index: 0,
            period: Duration::from_secs_f64(1.0 / fps.clamp(0.1, 1000.0)),
        }
    }

    /// Sleeps until the next frame is due; returns its index.
    pub fn wait(&mut self) -> u64 {
        let start = *self.start.get_or_insert_with(Instant::now);
        let due = start + self.period.mul_f64(self.index as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        self.index += 1;
        self.index - 1
    }
}

/// Images from a folder, in name order, looping, at a chosen rate.
pub struct FolderSource {
    dir: PathBuf,
    files: Vec<PathBuf>,
    pacer: Pacer,
}

impl FolderSource {
    pub fn open(dir: &Path, fps: f64) -> crate::error::Result<Self> {
        let rd = std::fs::read_dir(dir).map_err(|e| crate::error::Error::msg(format!("{}: {e}", dir.display())))?;
        let mut files: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| crate::vision::is_image_name(p))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(crate::error::Error::msg(format!(
                "{}: no images in this folder",
                dir.display()
            )));
        }
        Ok(FolderSource {
            dir: dir.to_path_buf(),
            files,
            pacer: Pacer::new(fps),
        })
    }
}

impl Source for FolderSource {
    fn describe(&self) -> String {
        format!("folder {} ({} images)", self.dir.display(), self.files.len())
    }

    fn next(&mut self) -> crate::error::Result<RgbImage> {
        let i = self.pacer.wait() as usize % self.files.len();
        decode_file(&self.files[i], &DecodeLimits::default())
    }
}
