//! SAM's sparse prompt embedding (points and boxes), written here from
//! `segment_anything`'s `PromptEncoder` because `candle-transformers`'
//! box path gives `[1, 512]` where the mask decoder needs `[1, 2, 256]`
//! (and it cannot join points with a box). Small host math: a prompt is at
//! most a few dozen rows of 256 values.
//!
//! `PositionEmbeddingRandom`: a coordinate in input pixels `(x + 0.5) / 1024`
//! goes to `2c - 1`, times the `[2, 128]` gaussian matrix, times 2π, then
//! `[sin, cos]`. A point adds `point_embeddings.{0|1}` (outside / inside);
//! a padding point (label -1, added when there is no box) is
//! `not_a_point_embed` alone; a box's two corners add
//! `point_embeddings.{2|3}`.

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;

use crate::error::Result;

const DIM: usize = 256;

pub struct SparsePrompt {
    /// `[2, 128]`, row-major.
    gaussian: Vec<f32>,
    /// `point_embeddings.0..3`.
    point: [Vec<f32>; 4],
    not_a_point: Vec<f32>,
    input_size: f32,
}

fn row(vb: &VarBuilder, name: &str, n: usize) -> Result<Vec<f32>> {
    Ok(vb.get((1, n), name)?.flatten_all()?.to_vec1::<f32>()?)
}

impl SparsePrompt {
    /// Reads the prompt encoder's tables from `vb` (at `prompt_encoder`).
    pub fn load(vb: &VarBuilder, input_size: usize) -> Result<SparsePrompt> {
        let gaussian = vb
            .get((2, DIM / 2), "pe_layer.positional_encoding_gaussian_matrix")?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let p = |i: usize| row(vb, &format!("point_embeddings.{i}.weight"), DIM);
        Ok(SparsePrompt {
            gaussian,
            point: [p(0)?, p(1)?, p(2)?, p(3)?],
            not_a_point: row(vb, "not_a_point_embed.weight", DIM)?,
            input_size: input_size as f32,
        })
    }

    /// The positional encoding of a point in input pixels (already + 0.5).
    fn encode(&self, x: f32, y: f32) -> Vec<f32> {
        let (cx, cy) = (2.0 * x / self.input_size - 1.0, 2.0 * y / self.input_size - 1.0);
        let half = DIM / 2;
        let mut out = vec![0f32; DIM];
        for j in 0..half {
            let v = 2.0 * std::f32::consts::PI * (cx * self.gaussian[j] + cy * self.gaussian[half + j]);
            out[j] = v.sin();
            out[half + j] = v.cos();
        }
        out
    }

    /// `[1, K, 256]` for points `(x, y, inside)` and a box, both in input
    /// pixels (the resized image's).
    pub fn embed(&self, points: &[(f32, f32, bool)], bbox: Option<[f32; 4]>, dev: &Device) -> Result<Tensor> {
        let mut rows: Vec<Vec<f32>> = Vec::new();
        for &(x, y, inside) in points {
            let mut e = self.encode(x + 0.5, y + 0.5);
            let add = &self.point[inside as usize];
            e.iter_mut().zip(add).for_each(|(a, b)| *a += b);
            rows.push(e);
        }
        match bbox {
            Some(b) => {
                for (corner, (x, y)) in [(b[0], b[1]), (b[2], b[3])].into_iter().enumerate() {
                    let mut e = self.encode(x + 0.5, y + 0.5);
                    e.iter_mut().zip(&self.point[2 + corner]).for_each(|(a, b)| *a += b);
                    rows.push(e);
                }
            }
            None if !points.is_empty() => rows.push(self.not_a_point.clone()),
            None => {}
        }
        let k = rows.len();
        Ok(Tensor::from_vec(rows.concat(), (1, k, DIM), dev)?)
    }
}
