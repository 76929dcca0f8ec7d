//! Image → tensor steps shared by models: padding, TF-legacy bilinear resize,
//! mean subtraction and HWC → NCHW.

use candle_core::{Device, Tensor};
use image::RgbImage;

use crate::error::Result;

/// A float image in HWC order (3 channels).
#[derive(Debug, Clone)]
pub struct FloatImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

/// A rectangle of an image, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub x: usize,
    pub y: usize,
    pub width: usize,
    pub height: usize,
}

impl Region {
    /// The part of this region inside a `w`×`h` image.
    fn clamped(self, w: usize, h: usize) -> Region {
        let x = self.x.min(w);
        let y = self.y.min(h);
        Region {
            x,
            y,
            width: self.width.min(w - x),
            height: self.height.min(h - y),
        }
    }
}

/// Source span `[a, b)` (absolute, from `start`) of output index `i` when
/// `n` source pixels are area-resized to `out` (PyTorch's adaptive pooling).
fn area_span(start: usize, i: usize, n: usize, out: usize) -> (usize, usize) {
    (start + i * n / out, start + ((i + 1) * n).div_ceil(out))
}

fn area_spans(start: usize, n: usize, out: usize) -> Vec<(usize, usize)> {
    (0..out).map(|i| area_span(start, i, n, out)).collect()
}

impl FloatImage {
    pub fn from_rgb(img: &RgbImage) -> Self {
        FloatImage {
            width: img.width() as usize,
            height: img.height() as usize,
            data: img.as_raw().iter().map(|&v| v as f32).collect(),
        }
    }

    /// A sub-rectangle (must lie inside the image).
    pub fn crop(&self, x: usize, y: usize, w: usize, h: usize) -> Self {
        let mut data = Vec::with_capacity(w * h * 3);
        for row in y..y + h {
            let start = (row * self.width + x) * 3;
            data.extend_from_slice(&self.data[start..start + w * 3]);
        }
        FloatImage {
            width: w,
            height: h,
            data,
        }
    }

    /// Pads with zeros to a square. `centred = false` pads bottom/right only;
    /// `centred = true` puts `round(diff / 2)` after and the rest before, as
    /// face-api's `padToSquare(.., isCenterImage = true)` does.
    pub fn pad_to_square(&self, centred: bool) -> Self {
        let side = self.width.max(self.height);
        if self.width == self.height {
            return self.clone();
        }
        let diff = side - self.width.min(self.height);
        let after = if centred {
            (diff as f64 / 2.0).round() as usize
        } else {
            diff
        };
        let before = diff - after;
        let (ox, oy) = if self.width < self.height {
            (before, 0)
        } else {
            (0, before)
        };
        let mut data = vec![0.0f32; side * side * 3];
        for row in 0..self.height {
            let src = row * self.width * 3;
            let dst = ((row + oy) * side + ox) * 3;
            data[dst..dst + self.width * 3].copy_from_slice(&self.data[src..src + self.width * 3]);
        }
        FloatImage {
            width: side,
            height: side,
            data,
        }
    }

    /// [`pad_to_square`](Self::pad_to_square) then
    /// [`resize_bilinear_tf`](Self::resize_bilinear_tf) to `out`×`out`, with
    /// the same arithmetic (so the same bits) but without building the padded
    /// square: memory is the output's, whatever the input's aspect ratio.
    pub fn pad_square_resize_tf(&self, centred: bool, out: usize) -> Self {
        pad_square_resize_tf(&self.data, self.width, self.height, centred, out)
    }

    /// [`pad_square_resize_tf`](Self::pad_square_resize_tf) straight from 8-bit
    /// pixels: the same values as converting to float first, without the
    /// full-size float copy.
    pub fn pad_square_resize_tf_rgb(img: &RgbImage, centred: bool, out: usize) -> Self {
        pad_square_resize_tf(img.as_raw(), img.width() as usize, img.height() as usize, centred, out)
    }

    /// A sub-rectangle of an 8-bit image, as floats (must lie inside it).
    pub fn from_rgb_region(img: &RgbImage, x: usize, y: usize, w: usize, h: usize) -> Self {
        let width = img.width() as usize;
        let raw = img.as_raw();
        let mut data = Vec::with_capacity(w * h * 3);
        for row in y..y + h {
            let start = (row * width + x) * 3;
            data.extend(raw[start..start + w * 3].iter().map(|&v| v as f32));
        }
        FloatImage {
            width: w,
            height: h,
            data,
        }
    }

    /// TensorFlow's legacy bilinear resize (`align_corners = false`,
    /// `half_pixel_centers = false`): source = dst * in / out.
    pub fn resize_bilinear_tf(&self, out_w: usize, out_h: usize) -> Self {
        if out_w == self.width && out_h == self.height {
            return self.clone();
        }
        let sy = self.height as f32 / out_h as f32;
        let sx = self.width as f32 / out_w as f32;
        let xs: Vec<(usize, usize, f32)> = (0..out_w)
            .map(|x| {
                let src = x as f32 * sx;
                let x0 = src.floor() as usize;
                let x1 = (src.ceil() as usize).min(self.width - 1);
                (x0.min(self.width - 1), x1, src - src.floor())
            })
            .collect();
        let mut data = Vec::with_capacity(out_w * out_h * 3);
        for y in 0..out_h {
            let src = y as f32 * sy;
            let y0 = (src.floor() as usize).min(self.height - 1);
            let y1 = (src.ceil() as usize).min(self.height - 1);
            let fy = src - src.floor();
            let r0 = y0 * self.width * 3;
            let r1 = y1 * self.width * 3;
            for &(x0, x1, fx) in &xs {
                for c in 0..3 {
                    let tl = self.data[r0 + x0 * 3 + c];
                    let tr = self.data[r0 + x1 * 3 + c];
                    let bl = self.data[r1 + x0 * 3 + c];
                    let br = self.data[r1 + x1 * 3 + c];
                    let top = tl + (tr - tl) * fx;
                    let bottom = bl + (br - bl) * fx;
                    data.push(top + (bottom - top) * fy);
                }
            }
        }
        FloatImage {
            width: out_w,
            height: out_h,
            data,
        }
    }

    /// Area resize (PyTorch `interpolate(mode="area")`, i.e. adaptive average
    /// pooling): output pixel i averages source rows/columns
    /// `floor(i * n / out) .. ceil((i + 1) * n / out)`.
    pub fn resize_area(&self, out_w: usize, out_h: usize) -> Self {
        let mut data = vec![0f32; out_w * out_h * 3];
        let full = Region {
            x: 0,
            y: 0,
            width: self.width,
            height: self.height,
        };
        let xs = area_spans(full.x, full.width, out_w);
        for (y, row) in data.chunks_exact_mut((out_w * 3).max(1)).enumerate() {
            self.area_row(&xs, area_span(full.y, y, full.height, out_h), |x, px| {
                row[x * 3..x * 3 + 3].copy_from_slice(&px)
            });
        }
        FloatImage {
            width: out_w,
            height: out_h,
            data,
        }
    }

    /// [`Self::resize_area`] of `region` (inside the image) straight into
    /// planes of `(v - mean) / scale`, the (3, out_h, out_w) layout a network
    /// takes: no crop, no HWC copy, no second pass. The values are those of
    /// `crop → resize_area → to_nchw`, to the bit. Rows are shared among
    /// rayon's threads for large outputs.
    pub fn resize_area_planes(
        &self,
        region: Region,
        out_w: usize,
        out_h: usize,
        mean: [f32; 3],
        scale: f32,
    ) -> Vec<f32> {
        use rayon::prelude::*;
        let region = region.clamped(self.width, self.height);
        let plane = out_w * out_h;
        let mut out = vec![0f32; plane * 3];
        if plane == 0 {
            return out;
        }
        let xs = area_spans(region.x, region.width, out_w);
        let (r, rest) = out.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        let row = |y: usize, (r, g, b): (&mut [f32], &mut [f32], &mut [f32])| {
            self.area_row(&xs, area_span(region.y, y, region.height, out_h), |x, px| {
                r[x] = (px[0] - mean[0]) / scale;
                g[x] = (px[1] - mean[1]) / scale;
                b[x] = (px[2] - mean[2]) / scale;
            })
        };
        if plane >= 16 << 10 {
            r.par_chunks_mut(out_w)
                .zip(g.par_chunks_mut(out_w))
                .zip(b.par_chunks_mut(out_w))
                .enumerate()
                .for_each(|(y, ((r, g), b))| row(y, (r, g, b)));
        } else {
            r.chunks_mut(out_w)
                .zip(g.chunks_mut(out_w))
                .zip(b.chunks_mut(out_w))
                .enumerate()
                .for_each(|(y, ((r, g), b))| row(y, (r, g, b)));
        }
        out
    }

    /// One output row of an area resize: the mean of each box `xs[x]` ×
    /// `(y0, y1)`. The box's rows are summed first, as one vector loop over
    /// the span of columns the row needs, then each box's columns of that.
    fn area_row(&self, xs: &[(usize, usize)], (y0, y1): (usize, usize), mut emit: impl FnMut(usize, [f32; 3])) {
        let (Some(&(c0, _)), Some(&(_, c1))) = (xs.first(), xs.last()) else {
            return;
        };
        let span = |y: usize| &self.data[(y * self.width + c0) * 3..(y * self.width + c1) * 3];
        let mut sums = match (y0..y1).next() {
            Some(y) => span(y).to_vec(),
            None => vec![0f32; (c1 - c0) * 3],
        };
        for y in y0 + 1..y1 {
            for (a, v) in sums.iter_mut().zip(span(y)) {
                *a += v;
            }
        }
        for (x, &(x0, x1)) in xs.iter().enumerate() {
            let mut acc = [0f32; 3];
            for px in sums[(x0 - c0) * 3..(x1 - c0) * 3].chunks_exact(3) {
                for (a, v) in acc.iter_mut().zip(px) {
                    *a += v;
                }
            }
            let n = ((y1 - y0) * (x1 - x0)).max(1) as f32;
            emit(x, acc.map(|v| v / n));
        }
    }

    /// `(x - mean) / scale` per channel, then HWC → a (1, 3, H, W) tensor.
    pub fn to_nchw(&self, mean: [f32; 3], scale: f32, device: &Device) -> Result<Tensor> {
        let plane = self.width * self.height;
        let mut out = vec![0.0f32; plane * 3];
        for (i, px) in self.data.chunks_exact(3).enumerate() {
            for c in 0..3 {
                out[c * plane + i] = (px[c] - mean[c]) / scale;
            }
        }
        Ok(Tensor::from_vec(out, (1, 3, self.height, self.width), device)?)
    }
}

/// Per output coordinate of a pad-to-square + TF-legacy bilinear resize:
/// the two source indices (`None` in the padding) and the weight.
type Tap = (Option<usize>, Option<usize>, f32);

/// The column and row taps of [`pad_square_resize_tf`] for a `w`×`h`
/// image (both non-zero) and an `out`×`out` result.
fn square_taps(w: usize, h: usize, centred: bool, out: usize) -> (Vec<Tap>, Vec<Tap>) {
    let side = w.max(h);
    let diff = side - w.min(h);
    let after = if centred {
        (diff as f64 / 2.0).round() as usize
    } else {
        diff
    };
    let before = diff - after;
    let (ox, oy) = if w < h { (before, 0) } else { (0, before) };
    let scale = side as f32 / out as f32;
    // Padded coordinate → source index, or None in the padding.
    let taps = |n: usize, off: usize| -> Vec<Tap> {
        (0..out)
            .map(|i| {
                let src = i as f32 * scale;
                let p0 = (src.floor() as usize).min(side - 1);
                let p1 = (src.ceil() as usize).min(side - 1);
                let map = |p: usize| (p >= off && p < off + n).then(|| p - off);
                (map(p0), map(p1), src - src.floor())
            })
            .collect()
    };
    (taps(w, ox), taps(h, oy))
}

/// One channel value of the resize at taps `(y0, y1, fy)`, `(x0, x1, fx)`.
#[inline(always)]
fn tf_bilinear<T: Copy + Into<f32>>(src: &[T], w: usize, c: usize, (y0, y1, fy): Tap, (x0, x1, fx): Tap) -> f32 {
    let px = |y: Option<usize>, x: Option<usize>| match (y, x) {
        (Some(y), Some(x)) => src[(y * w + x) * 3 + c].into(),
        _ => 0.0,
    };
    let (tl, tr) = (px(y0, x0), px(y0, x1));
    let (bl, br) = (px(y1, x0), px(y1, x1));
    let top = tl + (tr - tl) * fx;
    let bottom = bl + (br - bl) * fx;
    top + (bottom - top) * fy
}

/// Pad to a square and TF-legacy bilinear resize in one pass over HWC
/// pixels of any numeric type (see [`FloatImage::pad_square_resize_tf`]).
fn pad_square_resize_tf<T: Copy + Into<f32>>(src: &[T], w: usize, h: usize, centred: bool, out: usize) -> FloatImage {
    if w == 0 || h == 0 || out == 0 {
        return FloatImage {
            width: out,
            height: out,
            data: vec![0.0; out * out * 3],
        };
    }
    let (xs, ys) = square_taps(w, h, centred, out);
    let mut data = Vec::with_capacity(out * out * 3);
    for &ty in &ys {
        for &tx in &xs {
            for c in 0..3 {
                data.push(tf_bilinear(src, w, c, ty, tx));
            }
        }
    }
    FloatImage {
        width: out,
        height: out,
        data,
    }
}

/// Two source rows resized across, keyed by row (`Some(None)`: the padding).
type Cached = [(Option<Option<usize>>, Vec<f32>); 2];

/// The slot holding source row `r` resized across, filled by `across` if
/// neither holds it; the slot holding `keep` (the other row the output row
/// needs) is not the one refilled.
fn cached_row(
    cached: &mut Cached,
    r: Option<usize>,
    keep: Option<usize>,
    across: &impl Fn(Option<usize>, &mut [f32]),
) -> usize {
    if let Some(i) = cached.iter().position(|(k, _)| *k == Some(r)) {
        return i;
    }
    let i = usize::from(cached[0].0 == Some(keep));
    across(r, &mut cached[i].1);
    cached[i].0 = Some(r);
    i
}

/// [`FloatImage::pad_square_resize_tf_rgb`] then [`FloatImage::to_nchw`]
/// in one pass: the same values, written straight into the three
/// `out`×`out` planes of `(v − mean) / scale`, rows shared among rayon's
/// threads (no HWC float image in between).
pub fn pad_square_resize_tf_planes(img: &RgbImage, centred: bool, out: usize, mean: [f32; 3], scale: f32) -> Vec<f32> {
    use rayon::prelude::*;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut data = vec![0f32; out * out * 3];
    if out == 0 {
        return data;
    }
    if w == 0 || h == 0 {
        for (c, plane) in data.chunks_mut(out * out).enumerate() {
            plane.fill((0.0 - mean[c]) / scale);
        }
        return data;
    }
    let (xs, ys) = square_taps(w, h, centred, out);
    let src = img.as_raw();
    // Branch-free taps: an index (0 in the padding) and a 0/1 factor, so a
    // padding pixel reads some pixel times 0.0, which is the 0.0 the HWC path
    // uses (the products by 1.0 are exact: the same bits).
    let flat = |i: Option<usize>| (i.unwrap_or(0) * 3, if i.is_some() { 1.0f32 } else { 0.0 });
    let cols: Vec<(usize, f32, usize, f32, f32)> = xs
        .iter()
        .map(|&(x0, x1, fx)| {
            let ((a, ma), (b, mb)) = (flat(x0), flat(x1));
            (a, ma, b, mb, fx)
        })
        .collect();
    // Source row r resized across, one plane per channel: `top` (or
    // `bottom`) of the HWC arithmetic for every output column, computed once
    // per band however many output rows read it. A row in the padding is
    // all 0.0, as the HWC path's zeros give.
    let across = |r: Option<usize>, dst: &mut [f32]| {
        let Some(r) = r else {
            dst.fill(0.0);
            return;
        };
        let row = &src[r * w * 3..(r + 1) * w * 3];
        let (d0, rest) = dst.split_at_mut(out);
        let (d1, d2) = rest.split_at_mut(out);
        for (x, &(a, ma, b, mb, fx)) in cols.iter().enumerate() {
            let lerp = |c: usize| {
                let (l, r) = (row[a + c] as f32 * ma, row[b + c] as f32 * mb);
                l + (r - l) * fx
            };
            d0[x] = lerp(0);
            d1[x] = lerp(1);
            d2[x] = lerp(2);
        }
    };
    const BAND: usize = 16;
    let (p0, rest) = data.split_at_mut(out * out);
    let (p1, p2) = rest.split_at_mut(out * out);
    p0.par_chunks_mut(BAND * out)
        .zip(p1.par_chunks_mut(BAND * out))
        .zip(p2.par_chunks_mut(BAND * out))
        .enumerate()
        .for_each(|(band, ((o0, o1), o2))| {
            // The last two source rows resized across (rows only move down).
            let mut cached: Cached = [(None, vec![0f32; 3 * out]), (None, vec![0f32; 3 * out])];
            let rows = o0.len() / out;
            for i in 0..rows {
                let (y0, y1, fy) = ys[band * BAND + i];
                let t = cached_row(&mut cached, y0, y1, &across);
                let b = cached_row(&mut cached, y1, y0, &across);
                let (t, b) = (&cached[t].1, &cached[b].1);
                for (c, o) in [&mut *o0, &mut *o1, &mut *o2].into_iter().enumerate() {
                    let dst = &mut o[i * out..(i + 1) * out];
                    let (top, bottom) = (&t[c * out..(c + 1) * out], &b[c * out..(c + 1) * out]);
                    for ((d, &tv), &bv) in dst.iter_mut().zip(top).zip(bottom) {
                        *d = (tv + (bv - tv) * fy - mean[c]) / scale;
                    }
                }
            }
        });
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(w: usize, h: usize) -> FloatImage {
        FloatImage {
            width: w,
            height: h,
            data: (0..w * h * 3).map(|v| v as f32).collect(),
        }
    }

    #[test]
    fn pad_bottom_right_and_centred() {
        let p = img(2, 4).pad_to_square(false);
        assert_eq!((p.width, p.height), (4, 4));
        assert_eq!(&p.data[0..6], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(&p.data[6..12], &[0.0; 6]);
        // diff 3 → 2 after (round(1.5) = 2), 1 before.
        let p = img(1, 4).pad_to_square(true);
        assert_eq!(&p.data[0..3], &[0.0; 3]);
        assert_eq!(&p.data[3..6], &[0.0, 1.0, 2.0]);
    }

    #[test]
    fn padding_while_resizing_gives_the_same_bits_as_padding_first() {
        for (w, h) in [(7, 3), (3, 7), (5, 5), (1, 9), (40, 11)] {
            for centred in [false, true] {
                for out in [4, 8, 13] {
                    let src = img(w, h);
                    let want = src.pad_to_square(centred).resize_bilinear_tf(out, out);
                    let got = src.pad_square_resize_tf(centred, out);
                    assert_eq!(got.data, want.data, "{w}x{h} centred={centred} out={out}");
                    let rgb = RgbImage::from_fn(w as u32, h as u32, |x, y| {
                        let i = (y as usize * w + x as usize) * 3;
                        image::Rgb([(i % 251) as u8, ((i + 1) % 251) as u8, ((i + 2) % 251) as u8])
                    });
                    let a = FloatImage::pad_square_resize_tf_rgb(&rgb, centred, out);
                    let b = FloatImage::from_rgb(&rgb)
                        .pad_to_square(centred)
                        .resize_bilinear_tf(out, out);
                    assert_eq!(a.data, b.data);
                }
            }
        }
    }

    #[test]
    fn area_resize_averages_blocks() {
        let src = img(4, 2);
        let r = src.resize_area(2, 1);
        // Output (0,0) averages pixels x 0..2, y 0..2, channel 0: (0+3+12+15)/4.
        assert_eq!(r.data[0], 7.5);
        let same = src.resize_area(4, 2);
        assert_eq!(same.data, src.data);
    }

    /// Pixel values are integers (8-bit images), so the row-first sums are
    /// exact and the region resize gives the bits of crop → resize → planes.
    #[test]
    fn region_area_resize_to_planes_matches_crop_resize_normalise() {
        let src = FloatImage {
            width: 37,
            height: 23,
            data: (0..37 * 23 * 3).map(|v| (v * 7 % 256) as f32).collect(),
        };
        for (x, y, w, h) in [(0, 0, 37, 23), (3, 5, 10, 7), (36, 22, 1, 1), (1, 2, 30, 20)] {
            for (ow, oh) in [(24, 24), (5, 3), (12, 40), (1, 1)] {
                let want = src
                    .crop(x, y, w, h)
                    .resize_area(ow, oh)
                    .to_nchw([127.5; 3], 128.0, &Device::Cpu)
                    .and_then(|t| Ok(t.flatten_all()?.to_vec1::<f32>()?));
                let region = Region {
                    x,
                    y,
                    width: w,
                    height: h,
                };
                let got = src.resize_area_planes(region, ow, oh, [127.5; 3], 128.0);
                assert_eq!(Some(got), want.ok(), "region {x},{y} {w}x{h} -> {ow}x{oh}");
            }
        }
        // A region past the edge is clamped to the image, not read outside it.
        let r = Region {
            x: 30,
            y: 20,
            width: 50,
            height: 50,
        };
        assert_eq!(src.resize_area_planes(r, 2, 2, [0.0; 3], 1.0).len(), 12);
    }

    #[test]
    fn tf_bilinear_halves_and_keeps_corners() {
        let src = img(4, 4);
        let r = src.resize_bilinear_tf(2, 2);
        // dst (1,1) samples src (2,2) exactly.
        assert_eq!(&r.data[9..12], &src.data[(2 * 4 + 2) * 3..(2 * 4 + 2) * 3 + 3]);
        let up = src.resize_bilinear_tf(8, 8);
        // dst x = 1 → src 0.5, halfway between pixels 0 and 1.
        assert!((up.data[3] - (src.data[0] + src.data[3]) / 2.0).abs() < 1e-5);
        // The last column clamps to the edge.
        assert_eq!(up.data[(8 - 1) * 3], src.data[3 * 3]);
    }

    /// The fused planes give the bits of the HWC resize then `to_nchw`, for
    /// portrait, landscape, square and padded-centred inputs.
    #[test]
    fn fused_planes_equal_resize_then_nchw() {
        for (w, h, out, centred) in [
            (960, 699, 64, false),
            (11, 37, 20, true),
            (16, 16, 16, false),
            (3, 1, 9, true),
        ] {
            let img = RgbImage::from_fn(w, h, |x, y| {
                image::Rgb([(x * 5 + y) as u8, (x ^ y) as u8, (x * y % 241) as u8])
            });
            let mean = [122.78, 117.0, 104.0];
            let want = FloatImage::pad_square_resize_tf_rgb(&img, centred, out)
                .to_nchw(mean, 255.0, &Device::Cpu)
                .and_then(|t| Ok(t.flatten_all()?.to_vec1::<f32>()?))
                .unwrap_or_else(|e| panic!("{e}"));
            let got = pad_square_resize_tf_planes(&img, centred, out, mean, 255.0);
            assert_eq!(got.len(), want.len());
            assert!(
                got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{w}x{h} into {out}"
            );
        }
    }
}
