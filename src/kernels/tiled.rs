//! Dense convolution without im2col: weights packed once into panels of
//! [`MR`] output channels; stride-1 inputs read in place and strided ones
//! from unpadded phase planes, image borders masked ([`super::borders`]), or
//! else through padded shifted-read planes ([`super::planes`]); and a
//! register-tiled microkernel ([`super::avx512`])
//! over tiles of [`NR`] wide output positions. Threads take groups of tiles
//! (and, for small outputs, groups of panels) from rayon.

use rayon::prelude::*;

use super::avx2;
use super::avx512::{self, MR, NR};
use super::borders::{InPlace, Phases};
use super::host;
use super::planes::Geometry;
use super::{Act, ConvArgs, ConvShape, Padding};

/// Which microkernel runs the tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Avx512,
    Avx2,
}

impl Isa {
    /// The best kernel this CPU can run, if any.
    pub fn best() -> Option<Isa> {
        if avx512::available() {
            Some(Isa::Avx512)
        } else if avx2::available() {
            Some(Isa::Avx2)
        } else {
            None
        }
    }

    pub fn supported(self) -> bool {
        match self {
            Isa::Avx512 => avx512::available(),
            Isa::Avx2 => avx2::available(),
        }
    }
}

/// Conv weights as panels: panel i, tap t, row r at `(i·taps + t)·MR + r`
/// (rows past `cout` are zero).
#[derive(Debug, Clone)]
pub struct Packed {
    data: Vec<f32>,
    taps: usize,
    cout: usize,
    /// The kernel that runs this layer (checked supported when set).
    pub isa: Isa,
}

impl Packed {
    /// `weight`: [cout, taps] row-major (OIHW flattened); `isa` must be supported.
    pub fn new(weight: &[f32], cout: usize, taps: usize, isa: Isa) -> Self {
        let panels = cout.div_ceil(MR);
        let mut data = vec![0f32; panels * taps * MR];
        for co in 0..cout {
            let (i, r) = (co / MR, co % MR);
            for t in 0..taps {
                data[(i * taps + t) * MR + r] = weight[co * taps + t];
            }
        }
        Packed { data, taps, cout, isa }
    }

    fn panels(&self) -> usize {
        self.cout.div_ceil(MR)
    }

    /// Panel `panel`: its first output channel, its rows, their bias (zero
    /// past `rows` or without one) and its weights.
    #[inline]
    fn panel<'a>(&'a self, panel: usize, bias: Option<&[f32]>) -> Panel<'a> {
        let co0 = panel * MR;
        let rows = (self.cout - co0).min(MR);
        let mut b = [0f32; MR];
        if let Some(bias) = bias {
            b[..rows].copy_from_slice(&bias[co0..co0 + rows]);
        }
        let weights = &self.data[panel * self.taps * MR..(panel + 1) * self.taps * MR];
        Panel {
            isa: self.isa,
            co0,
            rows,
            bias: b,
            weights,
        }
    }
}

/// One panel of [`Packed`] as the microkernel takes it.
struct Panel<'a> {
    isa: Isa,
    co0: usize,
    rows: usize,
    bias: [f32; MR],
    weights: &'a [f32],
}

impl Panel<'_> {
    /// This panel's rows over the `n` wide positions from `start` into `dest`.
    ///
    /// # Safety
    /// The ISA is supported; every lane a tap's mask sets is inside the input
    /// that tap points into; `dest`'s rows hold its `n` lanes.
    #[inline]
    #[allow(unused_variables)]
    unsafe fn tile(
        &self,
        taps: &[*const f32],
        classes: &[u8],
        masks: &[[u16; 3]],
        start: usize,
        act: Act,
        dest: avx512::Dest,
    ) {
        let (w, b) = (self.weights.as_ptr(), &self.bias);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as this function's contract says; the panel holds taps·MR floats.
        unsafe {
            match self.isa {
                Isa::Avx512 => avx512::tile(w, taps, classes, masks, start, b, act, dest),
                Isa::Avx2 => avx2::tile(w, taps, classes, masks, start, b, act, dest),
            }
        }
    }
}

/// A tile's mask classes as the kernels take them: three 16-lane words each.
#[inline]
fn mask_words(bits: &[u64]) -> Vec<[u16; 3]> {
    bits.iter()
        .map(|&m| [m as u16, (m >> 16) as u16, (m >> 32) as u16])
        .collect()
}

/// True when [`conv2d`] can run on this CPU.
pub fn available() -> bool {
    Isa::best().is_some()
}

/// Pointers shared by the tile jobs: the output (each job writes only its own
/// tiles' positions) and the per-tap input runs (read only).
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub(crate) *mut f32);
// SAFETY: jobs write disjoint elements (distinct tiles or distinct panels).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Through a method, so closures capture the wrapper (Sync), not the raw pointer.
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

struct Taps(Vec<*const f32>);
// SAFETY: the pointers are only read through, while the borrowed inputs live.
unsafe impl Sync for Taps {}

/// Where a tile's taps read and which lanes they may read.
enum Reads {
    /// Prepared planes: every tap reads every valid lane.
    Planes,
    /// The input in place, image borders masked per kernel position.
    InPlace(InPlace),
}

/// The wide output positions of a conv: rows of `wp`, of which `ow` hold outputs.
struct Wide {
    oh: usize,
    ow: usize,
    wp: usize,
    len: usize,
}

/// A dense conv over the channel concatenation of `parts` (each [ci, h, w],
/// channels adding up to `s.cin`; the concatenation is never built), plus
/// `pre` ([cout, oh, ow]) added before the activation and `residual` (same
/// shape) after it. Call only when [`available`]; `pre` only for convs that
/// read their input in place with no padding columns ([`writes_directly`]).
///
/// # Safety
/// `out` is valid for writes of `s.cout·oh·ow` floats; every one is written.
pub unsafe fn conv2d(
    args: ConvArgs<[&[f32]], Packed>,
    (pre, residual): (Option<&[f32]>, Option<&[f32]>),
    out: *mut f32,
) {
    let (parts, (h, w), packed, bias, s, act) = (args.x, args.hw, args.weight, args.bias, args.s, args.act);
    debug_assert_eq!(parts.iter().map(|p| p.len()).sum::<usize>(), s.cin * h * w);
    debug_assert!(pre.is_none() || writes_directly(s, (h, w)));
    let job = |taps: Taps, classes: Vec<u8>, reads: Reads, wide: Wide| {
        debug_assert_eq!(packed.taps, taps.0.len());
        run(
            &taps,
            &classes,
            &reads,
            &wide,
            packed,
            bias,
            act,
            (pre, residual),
            OutPtr(out),
        );
    };
    if let Some(g) = InPlace::new(s, h, w) {
        // Stride 1: taps read each part where it is, borders masked.
        let (taps, classes) = in_place_taps(parts, &g, s, (h, w));
        let wide = Wide {
            oh: g.oh,
            ow: g.ow,
            wp: w,
            len: g.wide_len(),
        };
        job(Taps(taps), classes, Reads::InPlace(g), wide);
        return;
    }
    if let Some(ph) = Phases::new(s, h, w) {
        // Stride ≥ 2: the taps read unpadded phase planes, borders masked.
        let unpadded = ConvShape {
            pad: Padding::default(),
            ..*s
        };
        let g = Geometry::new(&unpadded, h, w);
        let len = g.buffer_len(&unpadded);
        host::with_scratch(len, |buf| {
            fill_parts(parts, &g, (h, w), &unpadded, buf);
            let per_channel = len / s.cin.max(1);
            let base = buf.as_ptr();
            let mut taps = Vec::with_capacity(s.cin * ph.kernel.len());
            let mut classes = Vec::with_capacity(s.cin * ph.kernel.len());
            for ci in 0..s.cin {
                for &(offset, class) in &ph.kernel {
                    taps.push(base.wrapping_add(ci * per_channel).wrapping_offset(offset));
                    classes.push(class);
                }
            }
            let wide = Wide {
                oh: ph.grid.oh,
                ow: ph.grid.ow,
                wp: g.wp,
                len: ph.grid.wide_len(),
            };
            job(Taps(taps), classes, Reads::InPlace(ph.grid), wide);
        });
        return;
    }
    let g = Geometry::new(s, h, w);
    let len = g.buffer_len(s);
    host::with_scratch(len, |buf| {
        fill_parts(parts, &g, (h, w), s, buf);
        let base = buf.as_ptr();
        let taps = g.offsets.iter().map(|&o| base.wrapping_add(o)).collect();
        let wide = Wide {
            oh: g.oh,
            ow: g.ow,
            wp: g.wp,
            len: g.wide_len(),
        };
        job(Taps(taps), vec![0; g.offsets.len()], Reads::Planes, wide);
    });
}

/// True when [`conv2d`] writes the kernel's results straight to the output
/// (the input read in place, every wide position an output: 1×1 and
/// padded-same stride-1 convs), as `pre` needs.
pub fn writes_directly(s: &ConvShape, (h, w): (usize, usize)) -> bool {
    s.stride == 1 && s.pad.left + s.pad.right + 1 == s.kw && InPlace::new(s, h, w).is_some()
}

/// The prepared planes of every part, one after the other (`buf` holds
/// `g.buffer_len(s)` floats).
fn fill_parts(parts: &[&[f32]], g: &Geometry, (h, w): (usize, usize), s: &ConvShape, buf: &mut [f32]) {
    let per_channel = buf.len() / s.cin.max(1);
    let mut at = 0;
    for p in parts {
        let c = p.len() / (h * w).max(1);
        g.fill(p, (h, w), s, &mut buf[at * per_channel..(at + c) * per_channel]);
        at += c;
    }
}

/// Where each tap (part, channel, ky, kx) of a stride-1 conv reads its part
/// in place, and its border-mask class (ky·kw + kx).
fn in_place_taps(parts: &[&[f32]], g: &InPlace, s: &ConvShape, (h, w): (usize, usize)) -> (Vec<*const f32>, Vec<u8>) {
    let mut taps = Vec::with_capacity(s.cin * s.kh * s.kw);
    let mut classes = Vec::with_capacity(s.cin * s.kh * s.kw);
    for p in parts {
        for ci in 0..p.len() / (h * w).max(1) {
            for ky in 0..s.kh {
                for kx in 0..s.kw {
                    taps.push(p.as_ptr().wrapping_offset(g.offset(ci, ky, kx)));
                    classes.push((ky * s.kw + kx) as u8);
                }
            }
        }
    }
    (taps, classes)
}

/// Jobs per pool thread a conv is split into: enough that the last ones
/// even out the threads' shares (4 left a 64→64 conv at 40×40 with 9 jobs
/// for 2 threads), few enough to amortise each job's masks and hand-over.
const JOBS_PER_THREAD: usize = 8;

#[allow(clippy::too_many_arguments)]
fn run(
    taps: &Taps,
    classes: &[u8],
    reads: &Reads,
    g: &Wide,
    packed: &Packed,
    bias: Option<&[f32]>,
    act: Act,
    (pre, residual): (Option<&[f32]>, Option<&[f32]>),
    ptr: OutPtr,
) {
    let wide = g.len;
    if wide == 0 || !packed.isa.supported() {
        return;
    }
    let tiles = wide.div_ceil(NR);
    let panels = packed.panels();
    // Enough jobs for the pool to balance, each big enough to amortise itself:
    // tiles are grouped so a group's input stays in L2; small outputs split panels.
    // Inside one job of a batch or pyramid already shared among the threads
    // (host::serial), the call runs on this thread alone.
    let nested = host::is_serial();
    let threads = if nested { 1 } else { rayon::current_num_threads().max(1) };
    let per_tile_bytes = packed.taps * NR * 4;
    let group = ((512 << 10) / per_tile_bytes.max(1))
        .clamp(1, 4)
        .min(tiles.div_ceil(threads * JOBS_PER_THREAD).max(1));
    let tile_groups = tiles.div_ceil(group);
    let panel_split = (threads * JOBS_PER_THREAD).div_ceil(tile_groups).clamp(1, panels);
    let panels_per_job = panels.div_ceil(panel_split);
    let jobs = tile_groups * panels.div_ceil(panels_per_job);
    let plane = g.oh * g.ow;
    let body = |job: usize| {
        let (tg, pj) = (job % tile_groups, job / tile_groups);
        let t0 = tg * group;
        let t1 = (t0 + group).min(tiles);
        let p0 = pj * panels_per_job;
        let p1 = (p0 + panels_per_job).min(panels);
        let mut tile_out = [0f32; MR * NR];
        let masks = lane_masks(reads, t0..t1, wide);
        for panel in p0..p1 {
            let panel = packed.panel(panel, bias);
            let (co0, rows) = (panel.co0, panel.rows);
            for (t, tile_masks) in (t0..t1).zip(&masks) {
                let start = t * NR;
                let n = (wide - start).min(NR);
                // SAFETY: the kernel's ISA is checked supported above; the panel holds
                // taps·MR floats; every lane a tap's mask sets is inside the
                // input that tap points into (planes.rs sizes the planes so
                // the last valid position's last tap is inside; borders.rs
                // masks every lane that would fall outside the image).
                // Rows of wide positions that are all outputs (1×1 and
                // padded-same stride-1 convs) are written straight from the
                // kernel; otherwise through the tile buffer and `scatter`.
                let direct = g.wp == g.ow;
                let dest = if direct {
                    direct_dest(ptr, co0 * plane + start, plane, rows, n, (pre, residual))
                } else {
                    buffer_dest(&mut tile_out, rows, n)
                };
                // SAFETY: the kernel's ISA is checked supported above; the panel holds
                // taps·MR floats; every lane a tap's mask sets is inside the
                // input that tap points into (planes.rs sizes the planes so
                // the last valid position's last tap is inside; borders.rs
                // masks every lane that would fall outside the image); the
                // destination rows hold n lanes from `start` (direct: output
                // positions of this job's tile and panel only).
                unsafe { panel.tile(&taps.0, classes, tile_masks, start, act, dest) };
                if direct {
                    continue;
                }
                scatter_to_output(&tile_out, (co0, rows), (start, n), g, plane, ptr, residual);
            }
        }
    };
    if nested {
        (0..jobs).for_each(body);
    } else {
        (0..jobs).into_par_iter().for_each(body);
    }
}

/// Lane masks of every tile in `tiles`, per mask class, as the kernels take
/// them (three 16-lane words per class).
#[inline]
fn lane_masks(reads: &Reads, tiles: std::ops::Range<usize>, wide: usize) -> Vec<Vec<[u16; 3]>> {
    let class_count = match reads {
        Reads::Planes => 1,
        Reads::InPlace(ip) => ip.classes(),
    };
    let mut bits = vec![0u64; class_count];
    tiles
        .map(|t| {
            let start = t * NR;
            let n = (wide - start).min(NR);
            match reads {
                Reads::Planes => bits[0] = (1u64 << n) - 1,
                Reads::InPlace(ip) => ip.masks(start, n, &mut bits),
            }
            mask_words(&bits)
        })
        .collect()
}

/// The kernel writing a tile's `rows`×`n` results straight to the output at
/// `at` (rows `plane` apart), reading `pre` and `residual` at the same place.
#[inline]
fn direct_dest(
    ptr: OutPtr,
    at: usize,
    plane: usize,
    rows: usize,
    n: usize,
    (pre, residual): (Option<&[f32]>, Option<&[f32]>),
) -> avx512::Dest {
    avx512::Dest {
        out: ptr.get().wrapping_add(at),
        stride: plane,
        rows,
        n,
        pre: pre.map_or(std::ptr::null(), |p| p[at..].as_ptr()),
        residual: residual.map_or(std::ptr::null(), |r| r[at..].as_ptr()),
    }
}

/// The kernel writing a tile's `rows`×`n` results to the tile buffer, for `scatter`.
#[inline]
fn buffer_dest(tile_out: &mut [f32; MR * NR], rows: usize, n: usize) -> avx512::Dest {
    avx512::Dest {
        out: tile_out.as_mut_ptr(),
        stride: NR,
        rows,
        n,
        pre: std::ptr::null(),
        residual: std::ptr::null(),
    }
}

/// Copies a tile's valid columns (panel rows from `co0`) from the tile buffer
/// to the output, `plane` floats per channel, adding `residual` where given.
#[inline]
fn scatter_to_output(
    tile_out: &[f32; MR * NR],
    (co0, rows): (usize, usize),
    (start, n): (usize, usize),
    g: &Wide,
    plane: usize,
    ptr: OutPtr,
    residual: Option<&[f32]>,
) {
    scatter(tile_out, rows, start, n, g, |co_r, dst, seg| {
        let at = (co0 + co_r) * plane + dst;
        // SAFETY: (co0 + co_r, dst..dst + len) lies in the output
        // and belongs to this job's tile and panel only.
        unsafe {
            let d = ptr.get().add(at);
            match residual {
                Some(res) => {
                    for (i, (v, r)) in seg.iter().zip(&res[at..at + seg.len()]).enumerate() {
                        d.add(i).write(v + r);
                    }
                }
                None => std::ptr::copy_nonoverlapping(seg.as_ptr(), d, seg.len()),
            }
        }
    });
}

/// Copies the valid columns of a tile's rows to their output positions.
fn scatter(
    tile: &[f32; MR * NR],
    rows: usize,
    start: usize,
    n: usize,
    g: &Wide,
    mut write: impl FnMut(usize, usize, &[f32]),
) {
    let mut p = start;
    let end = start + n;
    while p < end {
        let (oy, ox) = (p / g.wp, p % g.wp);
        if ox >= g.ow {
            p = (oy + 1) * g.wp;
            continue;
        }
        let len = (g.ow - ox).min(end - p);
        let j = p - start;
        for r in 0..rows {
            write(r, oy * g.ow + ox, &tile[r * NR + j..r * NR + j + len]);
        }
        p += len;
    }
}

/// [`conv2d`] (stride 1, read in place) followed by a 2×2, stride-2 max pool
/// with TF "same" padding (an odd last row or column pairs with itself), in
/// one pass: each pair of output rows is computed into a per-thread scratch
/// band (all channels, a few KiB to a few hundred) and pooled from there, so
/// the full-size output is never written to memory and read back. `false`
/// (nothing written) when the conv cannot read its input in place.
///
/// # Safety
/// `out` is valid for writes of `s.cout·⌈oh/2⌉·⌈ow/2⌉` floats; on `true`
/// every one is written.
pub unsafe fn conv2d_pool2(args: ConvArgs<[&[f32]], Packed>, out: *mut f32) -> bool {
    let (parts, (h, w), packed, bias, s, act) = (args.x, args.hw, args.weight, args.bias, args.s, args.act);
    let Some(g) = InPlace::new(s, h, w) else {
        return false;
    };
    if !packed.isa.supported() || g.oh == 0 || g.ow == 0 {
        return false;
    }
    let (taps, classes) = in_place_taps(parts, &g, s, (h, w));
    debug_assert_eq!(packed.taps, taps.len());
    let taps = &Taps(taps);
    let (oh, ow, wp) = (g.oh, g.ow, w);
    let (ph, pw) = (oh.div_ceil(2), ow.div_ceil(2));
    let wide = g.wide_len();
    let panels = packed.panels();
    let ptr = OutPtr(out);
    let band = |b: usize| {
        let first = 2 * b * wp;
        let end = ((2 * b + 2) * wp).min(wide);
        let two_rows = 2 * b + 1 < oh;
        host::with_scratch(packed.cout * 2 * wp, |scratch| {
            let mut bits = vec![0u64; g.classes()];
            let tiles: Vec<(usize, usize, Vec<[u16; 3]>)> = (first..end)
                .step_by(NR)
                .map(|start| {
                    let n = (end - start).min(NR);
                    g.masks(start, n, &mut bits);
                    (start, n, mask_words(&bits))
                })
                .collect();
            for panel in 0..panels {
                let panel = packed.panel(panel, bias);
                for (start, n, masks) in &tiles {
                    let dest = avx512::Dest {
                        out: scratch.as_mut_ptr().wrapping_add(panel.co0 * 2 * wp + (start - first)),
                        stride: 2 * wp,
                        rows: panel.rows,
                        n: *n,
                        pre: std::ptr::null(),
                        residual: std::ptr::null(),
                    };
                    // SAFETY: the ISA is checked supported above; the panel
                    // holds taps·MR floats; every lane a tap's mask sets is
                    // inside the input (borders.rs); the destination rows
                    // (channels co0..co0+rows, lanes start-first..+n, below
                    // 2·wp) lie in this thread's scratch.
                    unsafe { panel.tile(&taps.0, &classes, masks, *start, act, dest) };
                }
            }
            for co in 0..packed.cout {
                let r0 = &scratch[co * 2 * wp..co * 2 * wp + ow];
                let r1 = if two_rows {
                    &scratch[co * 2 * wp + wp..co * 2 * wp + wp + ow]
                } else {
                    r0
                };
                // SAFETY: row b of channel co's pooled plane lies in `out`
                // and belongs to this band only.
                let dst = unsafe { std::slice::from_raw_parts_mut(ptr.get().add((co * ph + b) * pw), pw) };
                super::pool::pool2x2_stride2_row(r0, r1, dst);
            }
        })
    };
    if host::is_serial() {
        (0..ph).for_each(band);
    } else {
        (0..ph).into_par_iter().for_each(band);
    }
    true
}
