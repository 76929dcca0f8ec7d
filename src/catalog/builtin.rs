//! Models compiled into the binary, so the defaults work from any directory.
//! Each entry: (model.toml text, weights file name, weights bytes). The files
//! live in the repository's `models/<id>/` folders beside their LICENSE and
//! PROVENANCE.

macro_rules! builtin {
    ($dir:literal, $file:literal) => {
        (
            include_str!(concat!("../../models/", $dir, "/model.toml")),
            concat!($dir, "/", $file),
            include_bytes!(concat!("../../models/", $dir, "/", $file)) as &[u8],
        )
    };
}

pub static MODELS: &[(&str, &str, &[u8])] = &[
    builtin!("objects", "nanodet.safetensors"),
    builtin!("pose", "movenet-lightning.safetensors"),
    builtin!("hands", "handdetect.safetensors"),
    builtin!("selfie", "selfie.safetensors"),
    builtin!("face-detector", "tiny_face_detector_model.safetensors"),
    builtin!("face-landmarks", "face_landmark_68_model.safetensors"),
    builtin!("face-landmarks-tiny", "face_landmark_68_tiny_model.safetensors"),
    builtin!("mtcnn", "mtcnn.safetensors"),
];

/// The model the app and the CLI use when none is named.
pub const DEFAULT_MODEL: &str = "objects";

/// Live's default: hands (for the nail overlay) and faces, both run on every
/// frame (`+` joins model ids into a combo).
pub const DEFAULT_LIVE_MODEL: &str = "hands+face-detector";

/// Models whose weights come from a hub: only their manifests are built in.
pub static HUB_MANIFESTS: &[(&str, &str)] = &[
    ("yolov8n/model.toml", include_str!("../../models/yolov8n/model.toml")),
    ("yolov8s/model.toml", include_str!("../../models/yolov8s/model.toml")),
    (
        "yolov8n-pose/model.toml",
        include_str!("../../models/yolov8n-pose/model.toml"),
    ),
    (
        "mobile-sam/model.toml",
        include_str!("../../models/mobile-sam/model.toml"),
    ),
    (
        "sam-vit-b/model.toml",
        include_str!("../../models/sam-vit-b/model.toml"),
    ),
];
