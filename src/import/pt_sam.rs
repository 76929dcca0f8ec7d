//! Segment Anything checkpoints in `import pt`: Meta's `sam_vit_*.pth` and
//! MobileSAM's `mobile_sam.pt` are plain state dicts whose names the `sam`
//! arch reads as they are. The encoder is told by its patch embedding:
//! `image_encoder.patch_embed.proj.weight` `[768 | 1024 | 1280, 3, 16, 16]`
//! for ViT-B/L/H, `image_encoder.patch_embed.seq.*` for MobileSAM's TinyViT.

use super::pt::Checkpoint;
use crate::catalog::manifest::Manifest;
use crate::error::Result;

/// Whether state-dict `names` are Segment Anything's (a prompt encoder and
/// a mask decoder beside the image encoder).
pub fn is_sam<'a>(names: impl Iterator<Item = &'a str> + Clone) -> bool {
    let has = |p: &str| names.clone().any(|n| n.starts_with(p));
    has("image_encoder.") && has("prompt_encoder.") && has("mask_decoder.")
}

/// The SAM variant (`vit_b`, `vit_l`, `vit_h`, `vit_t`) of a checkpoint;
/// `None` when it is not a SAM state dict.
pub fn variant(ck: &Checkpoint) -> Option<&'static str> {
    let has = |p: &str| ck.tensors.iter().any(|(n, _)| n.starts_with(p));
    if !is_sam(ck.tensors.iter().map(|(n, _)| n.as_str())) {
        return None;
    }
    if has("image_encoder.patch_embed.seq.") {
        return Some("vit_t");
    }
    let (_, proj) = ck
        .tensors
        .iter()
        .find(|(n, _)| n == "image_encoder.patch_embed.proj.weight")?;
    match proj.dims().first()? {
        768 => Some("vit_b"),
        1024 => Some("vit_l"),
        1280 => Some("vit_h"),
        _ => None,
    }
}

/// The `model.toml` of an imported SAM checkpoint.
pub fn manifest_text(variant: &str, id: &str, weights_file: &str, size_bytes: u64, provenance: &str) -> Result<String> {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let text = format!(
        "# Imported by `modeldock import pt` from a Segment Anything checkpoint; review before use.\n\
         id = {}\nname = {}\ntask = \"segment\"\narch = \"sam\"\nvariant = {}\nweights = {}\ninput_size = 1024\n\
         labels = [\"object\"]\ndtype = \"f32\"\nkeep_alive = \"5m\"\nlicence = \"see the checkpoint's source\"\n\
         provenance = {}\n\n[options]\nsize_bytes = {size_bytes}\n",
        q(id),
        q(&format!("{id} (Segment Anything {variant})")),
        q(variant),
        q(weights_file),
        q(provenance),
    );
    Manifest::parse(&text, "model.toml")?;
    Ok(text)
}
