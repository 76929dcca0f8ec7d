//! YOLO-seg instance masks (Ultralytics' `process_mask`): each kept
//! detection's 32 mask coefficients weigh the network's prototype maps
//! (`[1, 32, S/4, S/4]`), a sigmoid gives probabilities, and the cells
//! outside the detection's box are zeroed (`crop_mask`). Only the prototype
//! cells the box covers are kept: the [`Mask`]'s region is where those cells
//! lie in the original image, so a mask costs its box's area, not the
//! image's.

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::vision::letterbox::Letterbox;
use crate::vision::Mask;

/// One kept detection: its coefficients, its box in input pixels, its
/// label and its index among the detections.
pub struct Kept<'a> {
    pub coeffs: Vec<f32>,
    pub input_box: [f32; 4],
    pub label: &'a str,
    pub detection: u32,
}

/// The masks of `kept` from the prototypes `protos` (`[1, K, mh, mw]`),
/// for an input of `input_size` pixels letterboxed by `lb`.
pub fn instance_masks(protos: &Tensor, kept: &[Kept], input_size: usize, lb: &Letterbox) -> Result<Vec<Mask>> {
    let (_, k, mh, mw) = protos.dims4().map_err(|_| {
        Error::msg(format!(
            "mask prototypes have shape {:?}, not [1, K, H, W]",
            protos.dims()
        ))
    })?;
    if input_size == 0 || mh == 0 || mw == 0 {
        return Err(Error::msg("empty mask prototypes"));
    }
    let p: Vec<f32> = protos.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let cells = mh * mw;
    let (sx, sy) = (mw as f32 / input_size as f32, mh as f32 / input_size as f32);
    let mut out = Vec::with_capacity(kept.len());
    for d in kept {
        if d.coeffs.len() != k {
            return Err(Error::msg(format!(
                "{} mask coefficients for {k} prototypes",
                d.coeffs.len()
            )));
        }
        let [bx0, by0, bx1, by1] = d.input_box;
        let cx0 = ((bx0 * sx).floor().max(0.0) as usize).min(mw);
        let cy0 = ((by0 * sy).floor().max(0.0) as usize).min(mh);
        let cx1 = ((bx1 * sx).ceil().max(0.0) as usize).clamp(cx0, mw);
        let cy1 = ((by1 * sy).ceil().max(0.0) as usize).clamp(cy0, mh);
        let (w, h) = (cx1 - cx0, cy1 - cy0);
        let mut probs = vec![0f32; w * h];
        for (r, y) in (cy0..cy1).enumerate() {
            let yc = (y as f32 + 0.5) / sy;
            for (c, x) in (cx0..cx1).enumerate() {
                let xc = (x as f32 + 0.5) / sx;
                if xc < bx0 || xc >= bx1 || yc < by0 || yc >= by1 {
                    continue;
                }
                let cell = y * mw + x;
                let v: f32 = d.coeffs.iter().enumerate().map(|(i, c)| c * p[i * cells + cell]).sum();
                probs[r * w + c] = 1.0 / (1.0 + (-v).exp());
            }
        }
        let a = lb.unmap([cx0 as f32 / sx, cy0 as f32 / sy]);
        let b = lb.unmap([cx1 as f32 / sx, cy1 as f32 / sy]);
        let mut m = Mask::from_probs(d.label, [a[0], a[1], b[0], b[1]], w as u32, h as u32, &probs)?;
        m.detection = Some(d.detection);
        out.push(m);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn a_mask_covers_its_box_cells_and_is_zero_outside_the_box() {
        // One prototype, all ones; coefficient 10 → sigmoid(10) inside.
        let protos = Tensor::ones((1, 1, 8, 8), DType::F32, &Device::Cpu).unwrap();
        let lb = Letterbox {
            ratio: 1.0,
            pad: [0.0, 0.0],
            image_size: [32, 32],
        };
        let kept = [Kept {
            coeffs: vec![10.0],
            input_box: [4.0, 8.0, 14.0, 16.0],
            label: "x",
            detection: 3,
        }];
        let m = &instance_masks(&protos, &kept, 32, &lb).unwrap()[0];
        // Cells of 4 px: x 4..16 (3 cells), y 8..16 (2 cells).
        assert_eq!((m.width, m.height), (3, 2));
        assert_eq!(m.region, [4.0, 8.0, 16.0, 16.0]);
        assert_eq!(m.detection, Some(3));
        // The third column's centre (x = 14) lies outside the box [4, 14).
        assert_eq!(m.data, vec![255, 255, 0, 255, 255, 0]);
        let bad = [Kept {
            coeffs: vec![1.0, 2.0],
            ..kept[0].clone_box()
        }];
        assert!(instance_masks(&protos, &bad, 32, &lb).is_err());
    }

    impl Kept<'_> {
        fn clone_box(&self) -> Kept<'static> {
            Kept {
                coeffs: self.coeffs.clone(),
                input_box: self.input_box,
                label: "x",
                detection: self.detection,
            }
        }
    }
}
