//! The architectures this build knows and the tasks models do, parsed from
//! the manifest by serde: an unknown name is refused at discovery, naming
//! the field and the names this build knows. Each arch carries what the
//! rest of the program asks of it (input sizes, option ranges, whether its
//! network runs remotely, whether and by default how it decodes JPEGs at
//! reduced scale (`Decode`), its keypoints); `models::build` matches on it,
//! so a new arch without a network does not compile.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    TinyFaceDetector,
    #[serde(rename = "face_landmarks_68")]
    FaceLandmarks68,
    Mtcnn,
    Yolov8,
    Nanodet,
    Movenet,
    Hands,
    Selfie,
    /// DETR-style detectors imported from ONNX (RT-DETR): no NMS.
    Detr,
    /// Segment Anything (SAM ViT-B/L/H, MobileSAM): masks from prompts.
    Sam,
    Toy,
    /// A server's model with no pre/post-processing here: it can be loaded
    /// and unloaded, not run on images.
    Raw,
}

impl Arch {
    /// Every arch, in the order `models` lists them.
    pub const ALL: &'static [Arch] = &[
        Arch::TinyFaceDetector,
        Arch::FaceLandmarks68,
        Arch::Mtcnn,
        Arch::Yolov8,
        Arch::Nanodet,
        Arch::Movenet,
        Arch::Hands,
        Arch::Selfie,
        Arch::Detr,
        Arch::Sam,
        Arch::Toy,
        Arch::Raw,
    ];

    /// The name manifests use.
    pub fn name(self) -> &'static str {
        match self {
            Arch::TinyFaceDetector => "tiny_face_detector",
            Arch::FaceLandmarks68 => "face_landmarks_68",
            Arch::Mtcnn => "mtcnn",
            Arch::Yolov8 => "yolov8",
            Arch::Nanodet => "nanodet",
            Arch::Movenet => "movenet",
            Arch::Hands => "hands",
            Arch::Selfie => "selfie",
            Arch::Detr => "detr",
            Arch::Sam => "sam",
            Arch::Toy => "toy",
            Arch::Raw => "raw",
        }
    }

    pub fn parse(s: &str) -> Option<Arch> {
        Arch::ALL.iter().copied().find(|a| a.name() == s)
    }

    /// `input_size`: (min, max, multiple of).
    pub fn input_size_range(self) -> (u32, u32, u32) {
        match self {
            Arch::TinyFaceDetector => (64, 1024, 32),
            Arch::Yolov8 => (64, 1280, 32),
            Arch::FaceLandmarks68 => (32, 512, 1),
            Arch::Mtcnn => (12, 96, 1),
            _ => (1, 2048, 1),
        }
    }

    /// The documented range of option `key` for this arch; `None` for an
    /// option it does not document (free-form).
    pub fn option_range(self, key: &str) -> Option<(f64, f64)> {
        let r = match (self, key) {
            (Arch::Mtcnn, "min_face_size") => (12.0, 4096.0),
            (Arch::Mtcnn, "factor") => (0.3, 0.95),
            (Arch::Mtcnn, "threshold1" | "threshold2" | "threshold3") => (0.0, 1.0),
            (Arch::FaceLandmarks68, "detector_input_size") => (64.0, 1024.0),
            (Arch::Hands, "max_hands") => (1.0, 64.0),
            (Arch::Hands, "skip_frames") => (1.0, 1000.0),
            (_, "size_bytes") => (0.0, 1e13),
            _ => return None,
        };
        Some(r)
    }

    /// Whether a manifest may put its network on a v2 server (one FP32
    /// input, one FP32 output), `raw` included.
    pub fn runs_remotely(self) -> bool {
        matches!(self, Arch::TinyFaceDetector | Arch::Yolov8 | Arch::Raw)
    }

    /// Whether requests may carry prompts (points, boxes) for it.
    pub fn takes_prompts(self) -> bool {
        matches!(self, Arch::Sam)
    }

    /// Whether this server serves the network on its own (`NETWORK_INPUT`).
    pub fn serves_network(self) -> bool {
        matches!(self, Arch::TinyFaceDetector | Arch::Yolov8)
    }

    /// Whether the model resizes the whole image to its input size, so a
    /// JPEG may be decoded at reduced scale; models that look at
    /// full-resolution crops (landmarks, MTCNN, hands) do not.
    pub fn decodes_reduced(self) -> bool {
        matches!(
            self,
            Arch::TinyFaceDetector | Arch::Yolov8 | Arch::Nanodet | Arch::Movenet | Arch::Selfie | Arch::Detr
        )
    }

    /// The JPEG decode a manifest gets when it names none. The tiny face
    /// detector resizes with TF's legacy bilinear (no antialiasing), so a
    /// reduced-scale decode, which averages pixels, moves its scores away
    /// from face-api's: it decodes at full size. The other archs that
    /// resize the whole image decode fast.
    pub fn default_decode(self) -> Decode {
        match self {
            Arch::TinyFaceDetector => Decode::Full,
            a if a.decodes_reduced() => Decode::Fast,
            _ => Decode::Full,
        }
    }

    /// The names of the archs that may decode JPEGs fast, for errors.
    pub fn reduced_names() -> String {
        let names: Vec<&str> = Arch::ALL
            .iter()
            .filter(|a| a.decodes_reduced())
            .map(|a| a.name())
            .collect();
        names.join(", ")
    }

    /// Keypoints per detection for `task` (0: none).
    pub fn keypoints(self, task: Task) -> usize {
        match (self, task) {
            (Arch::FaceLandmarks68, _) => 68,
            (Arch::Mtcnn, _) => 5,
            (Arch::Yolov8, Task::Pose) => 17,
            _ => 0,
        }
    }

    /// The names of the archs whose network can run remotely, for errors.
    pub fn remote_names() -> String {
        let names: Vec<&str> = Arch::ALL
            .iter()
            .filter(|a| a.runs_remotely())
            .map(|a| a.name())
            .collect();
        names.join(", ")
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a JPEG is decoded before a model sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decode {
    /// At full size, always: the pixels the reference implementation sees.
    Full,
    /// At a reduced scale (the inverse DCT at 1/2…1/8) when the photo is at
    /// least twice the model's input size, for archs that resize the whole
    /// image ([`Arch::decodes_reduced`]).
    Fast,
}

impl Decode {
    pub fn name(self) -> &'static str {
        match self {
            Decode::Full => "full",
            Decode::Fast => "fast",
        }
    }
}

/// What a model's answer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Boxes with labels and scores.
    Detect,
    /// Boxes with landmark points.
    Landmarks,
    /// Bodies with keypoints.
    Pose,
    /// Probability maps (masks): of the whole image or of each detection.
    Segment,
    /// Tensors only (a remote network with no decoder here).
    Raw,
}

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::Detect => "detect",
            Task::Landmarks => "landmarks",
            Task::Pose => "pose",
            Task::Segment => "segment",
            Task::Raw => "raw",
        }
    }

    /// Whether the model's answers carry masks.
    pub fn makes_masks(self) -> bool {
        self == Task::Segment
    }

    pub fn parse(s: &str) -> Option<Task> {
        [Task::Detect, Task::Landmarks, Task::Pose, Task::Segment, Task::Raw]
            .into_iter()
            .find(|t| t.name() == s)
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_serde_and_parse() {
        for a in Arch::ALL {
            let json = serde_json::to_string(a).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", a.name()));
            assert_eq!(Arch::parse(a.name()), Some(*a));
        }
        for t in [Task::Detect, Task::Landmarks, Task::Pose, Task::Segment, Task::Raw] {
            assert_eq!(serde_json::to_string(&t).unwrap_or_default(), format!("\"{t}\""));
            assert_eq!(Task::parse(t.name()), Some(t));
        }
        assert_eq!(Arch::parse("resnet"), None);
    }

    #[test]
    fn an_unknown_arch_or_task_is_refused_in_one_line_naming_the_field() {
        let base = "id = \"m\"\nname = \"m\"\ninput_size = 64\nlicence = \"x\"\nweights = \"w.safetensors\"\n";
        for (line, field, value) in [
            ("task = \"detect\"\narch = \"resnet\"\n", "arch", "resnet"),
            ("task = \"classify\"\narch = \"toy\"\n", "task", "classify"),
        ] {
            let text = format!("{base}{line}");
            let e = match crate::catalog::Manifest::parse(&text, "m/model.toml") {
                Ok(_) => panic!("{field} = {value} was accepted"),
                Err(e) => e.to_string(),
            };
            assert!(e.starts_with("m/model.toml: "), "{e}");
            assert!(e.contains(field) && e.contains(value), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
