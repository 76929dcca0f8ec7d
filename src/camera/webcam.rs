//! Webcams through nokhwa (V4L2 on Linux, AVFoundation on macOS, Media
//! Foundation on Windows). A missing, busy or unplugged camera is an error
//! string for the status line, never a panic.

#[cfg(feature = "webcam")]
use image::RgbImage;

#[cfg(feature = "webcam")]
use super::source::Source;

#[derive(Debug, Clone)]
pub struct CameraInfo {
    pub index: u32,
    pub name: String,
}

#[cfg(feature = "webcam")]
mod imp {
    use super::*;
    use nokhwa::pixel_format::RgbFormat;
    use nokhwa::utils::{
        ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType, Resolution,
    };

    pub fn list() -> crate::error::Result<Vec<CameraInfo>> {
        let cams =
            nokhwa::query(ApiBackend::Auto).map_err(|e| crate::error::Error::msg(format!("listing cameras: {e}")))?;
        Ok(cams
            .iter()
            .enumerate()
            .map(|(i, c)| CameraInfo {
                index: match c.index() {
                    CameraIndex::Index(n) => *n,
                    CameraIndex::String(_) => i as u32,
                },
                name: c.human_name(),
            })
            .collect())
    }

    pub struct Webcam {
        cam: nokhwa::Camera,
        index: u32,
    }

    impl Webcam {
        /// Opens camera `index`, asking for the format closest to `width`×`height` at `fps`.
        pub fn open(index: u32, width: u32, height: u32, fps: u32) -> crate::error::Result<Self> {
            let want = CameraFormat::new(Resolution::new(width, height), FrameFormat::MJPEG, fps);
            let req = RequestedFormat::new::<RgbFormat>(RequestedFormatType::Closest(want));
            let mut cam = nokhwa::Camera::new(CameraIndex::Index(index), req)
                .map_err(|e| crate::error::Error::msg(format!("webcam {index}: cannot open: {e}")))?;
            cam.open_stream()
                .map_err(|e| crate::error::Error::msg(format!("webcam {index}: cannot start: {e}")))?;
            Ok(Webcam { cam, index })
        }
    }

    impl Source for Webcam {
        fn describe(&self) -> String {
            format!("webcam {} ({})", self.index, self.cam.info().human_name())
        }

        fn next(&mut self) -> crate::error::Result<RgbImage> {
            let buf = self.cam.frame().map_err(|e| {
                crate::error::Error::msg(format!("webcam {}: no frame (unplugged or busy?): {e}", self.index))
            })?;
            let img = buf
                .decode_image::<RgbFormat>()
                .map_err(|e| crate::error::Error::msg(format!("webcam {}: cannot decode frame: {e}", self.index)))?;
            let (w, h) = (img.width(), img.height());
            RgbImage::from_raw(w, h, img.into_raw())
                .ok_or_else(|| crate::error::Error::msg(format!("webcam {}: bad frame size", self.index)))
        }
    }

    impl Drop for Webcam {
        fn drop(&mut self) {
            let _ = self.cam.stop_stream();
        }
    }
}

#[cfg(feature = "webcam")]
pub use imp::{list, Webcam};

#[cfg(not(feature = "webcam"))]
pub fn list() -> crate::error::Result<Vec<CameraInfo>> {
    Err(crate::error::Error::msg(
        "this build has no webcam support (build with the `webcam` feature)",
    ))
}

/// A factory that opens webcam `index` on the capture thread. The camera list
/// is checked here first, so a missing camera is an error at once.
pub fn factory(index: u32, width: u32, height: u32, fps: u32) -> crate::error::Result<super::source::SourceFactory> {
    let cams = list()?;
    let Some(info) = cams.iter().find(|c| c.index == index) else {
        return Err(crate::error::Error::msg(format!(
            "webcam {index}: not found ({} camera{} on this machine)",
            cams.len(),
            if cams.len() == 1 { "" } else { "s" }
        )));
    };
    let name = format!("webcam {index} ({})", info.name);
    #[cfg(feature = "webcam")]
    {
        Ok(super::source::SourceFactory {
            name,
            make: Box::new(move || Ok(Box::new(Webcam::open(index, width, height, fps)?) as Box<dyn Source>)),
        })
    }
    #[cfg(not(feature = "webcam"))]
    {
        let _ = (name, width, height, fps);
        Err(crate::error::Error::msg(
            "this build has no webcam support (build with the `webcam` feature)",
        ))
    }
}
