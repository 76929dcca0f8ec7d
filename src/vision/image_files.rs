//! Which file names are images the decoder reads (by extension).

use std::path::Path;

/// Extensions (lower case) of the image formats `vision::decode` reads.
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp", "gif", "webp", "tif", "tiff"];

/// True when `p` ends in one of [`IMAGE_EXTENSIONS`] (any case).
pub fn is_image_name(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_by_extension_in_any_case() {
        assert!(is_image_name(Path::new("a/b.PNG")));
        assert!(is_image_name(Path::new("x.jpeg")));
        assert!(!is_image_name(Path::new("notes.txt")));
        assert!(!is_image_name(Path::new("png")));
    }
}
