//! Output `MASKS`: every image's masks on that image's own pixel grid,
//! UINT8 `[N, M, H, W]` (p·255). M is the most masks one image has, H×W the
//! largest image of the request; smaller images sit at the top left and
//! the padding, like missing masks, is zeros. Masks come in the order of
//! `masks` in the image's `DETECTIONS` element.

use crate::engine::InferResult;
use crate::v2::image_infer::{OutputTensor, TensorData};

/// The most bytes `MASKS` may take in one reply (the request's masks are
/// in `DETECTIONS` as PNGs whatever their size).
pub const MAX_MASKS_BYTES: usize = 1 << 30;

/// `MASKS` for `results` (`None` for a failed image: zeros), or why it
/// would be too large.
pub fn masks_output(results: &[Option<InferResult>]) -> Result<OutputTensor, String> {
    let done = || results.iter().flatten();
    let m = done().map(|r| r.output.masks.len()).max().unwrap_or(0);
    let h = done().map(|r| r.output.image_size[1] as usize).max().unwrap_or(0);
    let w = done().map(|r| r.output.image_size[0] as usize).max().unwrap_or(0);
    let n = results.len();
    let bytes = [n, m, h, w].iter().try_fold(1usize, |a, d| a.checked_mul(*d));
    let plane = h * w;
    match bytes {
        Some(b) if b <= MAX_MASKS_BYTES => {}
        _ => {
            return Err(format!(
                "output 'MASKS' would take {n}×{m}×{h}×{w} bytes (at most {MAX_MASKS_BYTES}); send fewer images per request, or read the masks in DETECTIONS"
            ))
        }
    }
    let mut data = vec![0u8; n * m * plane];
    for (i, r) in results.iter().enumerate() {
        let Some(r) = r else { continue };
        let [iw, ih] = r.output.image_size;
        for (j, mask) in r.output.masks.iter().enumerate() {
            let img = mask.to_image(iw, ih);
            let at = (i * m + j) * plane;
            for (row, values) in img.chunks_exact(iw.max(1) as usize).enumerate() {
                let o = at + row * w;
                data[o..o + values.len()].copy_from_slice(values);
            }
        }
    }
    Ok(OutputTensor {
        name: "MASKS",
        shape: vec![n, m, h, w],
        data: TensorData::U8(data),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vision::{Mask, Output, Timings};

    fn result(w: u32, h: u32, masks: Vec<Mask>) -> InferResult {
        InferResult {
            request_id: 0,
            model: "m".into(),
            image: "i".into(),
            output: Output {
                image_size: [w, h],
                detections: Vec::new(),
                masks,
                cached: false,
                tensors: None,
            },
            timings: Timings::default(),
        }
    }

    #[test]
    fn each_image_s_masks_land_on_its_own_grid_at_the_top_left() {
        // A 2×1 map: left column surely, right surely not, over a 4×2 image.
        let left = Mask::new("person", [0.0, 0.0, 4.0, 2.0], 2, 1, vec![255, 0]).unwrap();
        let small = Mask::new("person", [0.0, 0.0, 2.0, 1.0], 1, 1, vec![200]).unwrap();
        let rs = vec![
            Some(result(4, 2, vec![left])),
            None,
            Some(result(2, 1, vec![small.clone(), small])),
        ];
        let t = masks_output(&rs).unwrap();
        assert_eq!(t.shape, vec![3, 2, 2, 4]);
        let TensorData::U8(d) = t.data else { panic!("not UINT8") };
        let plane = |i: usize, j: usize| d[(i * 2 + j) * 8..(i * 2 + j + 1) * 8].to_vec();
        // Bilinear between the cells' centres (image x 1 and 3).
        assert_eq!(plane(0, 0), vec![255, 191, 64, 0, 255, 191, 64, 0]);
        assert_eq!(plane(0, 1), vec![0; 8], "image 0 has one mask");
        assert_eq!(plane(1, 0), vec![0; 8], "a failed image is zeros");
        assert_eq!(plane(2, 1), vec![200, 200, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn a_reply_too_large_is_refused_before_it_is_built() {
        let rs: Vec<Option<InferResult>> = (0..5).map(|_| Some(result(20_000, 20_000, Vec::new()))).collect();
        assert!(masks_output(&rs).is_ok(), "no masks: M is 0");
        let m = Mask::new("p", [0.0, 0.0, 1.0, 1.0], 1, 1, vec![1]).unwrap();
        let rs: Vec<Option<InferResult>> = (0..5).map(|_| Some(result(20_000, 20_000, vec![m.clone()]))).collect();
        let e = masks_output(&rs).err().unwrap_or_default();
        assert!(e.starts_with("output 'MASKS' would take 5×1×20000×20000 bytes"), "{e}");
    }
}
