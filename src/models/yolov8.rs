//! YOLOv8 detect and pose (n/s/m/l/x), keyed by ultralytics state_dict names
//! (`model.0.conv.weight`, `model.22.cv3.2.2.bias`, …); candle-hub names
//! (`net.b1.0…`, `fpn.n1…`, `head…`) are mapped. Conv+BN is fused at load.

use std::time::Instant;

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;

use super::layers::{Act, FastConv, Padding};
use super::remote_net::Net;
use super::timing::ms;
use super::yolov8_masks::{instance_masks, Kept};
use super::{yolov8_head, Manifest, Model};
use crate::catalog::Task;
use crate::error::{Error, Result};
use crate::kernels::host;
use crate::kernels::pool::{max_pool_same_size, upsample2x};
use crate::vision::letterbox::letterbox;
use crate::vision::nms::batched_nms;
use crate::vision::{Detection, InferParams, Mask, ModelTimings};

const BN_EPS: f64 = 1e-3;
use super::yolov8_head::REG_MAX;

/// Depth, width and channel cap of a variant (ultralytics' yolov8.yaml scales).
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    pub depth: f64,
    pub width: f64,
    pub max_channels: usize,
}

impl Scale {
    pub fn of(variant: &str) -> Result<Scale> {
        let (depth, width, max_channels) = match variant {
            "n" => (0.33, 0.25, 1024),
            "s" => (0.33, 0.50, 1024),
            "m" => (0.67, 0.75, 768),
            "l" => (1.00, 1.00, 512),
            "x" => (1.00, 1.25, 512),
            v => return Err(Error::msg(format!("yolov8: unknown variant '{v}' (n, s, m, l or x)"))),
        };
        Ok(Scale {
            depth,
            width,
            max_channels,
        })
    }
    fn ch(&self, c: usize) -> usize {
        let x = c.min(self.max_channels) as f64 * self.width;
        ((x / 8.0).ceil() as usize) * 8
    }
    fn n(&self, n: usize) -> usize {
        ((n as f64 * self.depth).round() as usize).max(1)
    }
}

/// Which head the network has: boxes only, or boxes and 17 keypoints.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HeadKind {
    Detect,
    Pose,
    /// Boxes plus 32 mask coefficients, with prototype maps as a second
    /// output (YOLOv8-seg; imported ONNX exports only).
    Segment,
}

impl HeadKind {
    /// The head a manifest's task asks for.
    pub fn of(task: Task) -> Result<HeadKind> {
        match task {
            Task::Detect => Ok(HeadKind::Detect),
            Task::Pose => Ok(HeadKind::Pose),
            Task::Segment => Ok(HeadKind::Segment),
            t => Err(Error::msg(format!(
                "yolov8: no head for task '{t}' (detect, pose or segment)"
            ))),
        }
    }

    /// The head a task name asks for (the `verify` flag).
    pub fn named(task: &str) -> Result<HeadKind> {
        match Task::parse(task) {
            Some(t) => HeadKind::of(t),
            None => Err(Error::msg(format!("yolov8: unknown task '{task}' (detect or pose)"))),
        }
    }
}

/// Conv + BN (fused) + SiLU (fused into the conv's output pass).
struct ConvBn {
    conv: FastConv,
}

impl ConvBn {
    fn load(vb: VarBuilder, c1: usize, c2: usize, k: usize, s: usize) -> Result<Self> {
        let w = vb.get((c2, c1, k, k), "conv.weight")?;
        let pad = Padding::uniform(k / 2);
        if !vb.contains_tensor("bn.weight") && vb.contains_tensor("conv.bias") {
            return Ok(ConvBn {
                conv: FastConv::new(w, Some(vb.get(c2, "conv.bias")?), s, pad, 1, Act::Silu)?,
            });
        }
        let gamma = vb.get(c2, "bn.weight")?;
        let beta = vb.get(c2, "bn.bias")?;
        let mean = vb.get(c2, "bn.running_mean")?;
        let var = vb.get(c2, "bn.running_var")?;
        let scale = (gamma / (var + BN_EPS)?.sqrt()?)?;
        let w = w.broadcast_mul(&scale.reshape((c2, 1, 1, 1))?)?;
        let b = (beta - (mean * &scale)?)?;
        Ok(ConvBn {
            conv: FastConv::new(w, Some(b), s, pad, 1, Act::Silu)?,
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.conv.forward(x)
    }
}

struct Bottleneck {
    cv1: ConvBn,
    cv2: ConvBn,
    add: bool,
}

impl Bottleneck {
    fn load(vb: VarBuilder, c: usize, shortcut: bool) -> Result<Self> {
        Ok(Bottleneck {
            cv1: ConvBn::load(vb.pp("cv1"), c, c, 3, 1)?,
            cv2: ConvBn::load(vb.pp("cv2"), c, c, 3, 1)?,
            add: shortcut,
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // The shortcut is added in cv2's output pass.
        let y = self.cv1.forward(x)?;
        self.cv2.conv.forward_fused(&[&y], self.add.then_some(x))
    }
}

/// A C2f's first 1×1 conv: whole, or split over an upsampled first input
/// and a second one (see [`C2f::forward_up`]).
enum Cv1 {
    Whole(ConvBn),
    /// (on the low-resolution part, before its upsampling; on the other part)
    Split(Box<(FastConv, FastConv)>),
}

struct C2f {
    cv1: Cv1,
    cv2: ConvBn,
    m: Vec<Bottleneck>,
}

impl C2f {
    fn load(vb: VarBuilder, c1: usize, c2: usize, n: usize, shortcut: bool) -> Result<Self> {
        let c = c2 / 2;
        Ok(C2f {
            cv1: Cv1::Whole(ConvBn::load(vb.pp("cv1"), c1, 2 * c, 1, 1)?),
            cv2: ConvBn::load(vb.pp("cv2"), (2 + n) * c, c2, 1, 1)?,
            m: (0..n)
                .map(|i| Bottleneck::load(vb.pp(format!("m.{i}")), c, shortcut))
                .collect::<Result<_>>()?,
        })
    }

    /// A C2f whose input is `cat(upsample2x(low), skip)` with `c_low`
    /// channels in `low` (the neck after each upsampling).
    fn load_up(vb: VarBuilder, c_low: usize, c_skip: usize, c2: usize, n: usize) -> Result<Self> {
        let mut c = C2f::load(vb, c_low + c_skip, c2, n, false)?;
        if let Cv1::Whole(whole) = &c.cv1 {
            let (on_low, on_skip) = whole.conv.split_input(c_low)?;
            c.cv1 = Cv1::Split(Box::new((on_low, on_skip)));
        }
        Ok(c)
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_cat(&[x])
    }

    /// On the channel concatenation of `parts`, never built: cv1 reads the
    /// parts where they are, and cv2 reads cv1's output (both halves) and
    /// each bottleneck's output the same way.
    fn forward_cat(&self, parts: &[&Tensor]) -> Result<Tensor> {
        let y = match &self.cv1 {
            Cv1::Whole(cv1) => cv1.conv.forward_fused(parts, None)?,
            Cv1::Split(..) => {
                return Err(Error::msg(
                    "yolov8: this C2f takes an input to upsample and a second one (forward_up)",
                ))
            }
        };
        self.after_cv1(y)
    }

    /// [`Self::forward_cat`] of `[upsample2x(low), skip]`: cv1 (1×1) of the
    /// upsampled part is the upsampling of cv1 of `low`, so that part runs
    /// on a quarter of the positions and its result, upsampled, is added in
    /// the other part's output pass, before the activation.
    fn forward_up(&self, low: &Tensor, skip: &Tensor) -> Result<Tensor> {
        let Cv1::Split(split) = &self.cv1 else {
            return self.forward_cat(&[&upsample2x(low)?, skip]);
        };
        let (on_low, on_skip) = split.as_ref();
        let pre = upsample2x(&on_low.forward(low)?)?;
        self.after_cv1(on_skip.forward_pre(skip, &pre)?)
    }

    /// The bottlenecks and cv2 on cv1's output `y`.
    fn after_cv1(&self, y: Tensor) -> Result<Tensor> {
        let c = y.dim(1)? / 2;
        let mut ms: Vec<Tensor> = Vec::with_capacity(self.m.len());
        for b in &self.m {
            let last = match ms.last() {
                Some(t) => t.clone(),
                None => y.narrow(1, c, c)?,
            };
            ms.push(b.forward(&last)?);
        }
        let mut all = vec![&y];
        all.extend(ms.iter());
        self.cv2.conv.forward_fused(&all, None)
    }
}

struct Sppf {
    cv1: ConvBn,
    cv2: ConvBn,
}

impl Sppf {
    fn load(vb: VarBuilder, c1: usize, c2: usize) -> Result<Self> {
        let c = c1 / 2;
        Ok(Sppf {
            cv1: ConvBn::load(vb.pp("cv1"), c1, c, 1, 1)?,
            cv2: ConvBn::load(vb.pp("cv2"), 4 * c, c2, 1, 1)?,
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // MaxPool2d(5, 1, 2), three times; cv2 reads the four without a concatenation.
        let a = self.cv1.forward(x)?;
        let b = max_pool_same_size(&a, 5)?;
        let c = max_pool_same_size(&b, 5)?;
        let d = max_pool_same_size(&c, 5)?;
        self.cv2.conv.forward_fused(&[&a, &b, &c, &d], None)
    }
}

/// Two ConvBn 3×3 then a plain 1×1 conv: one branch of the head at one scale.
struct Branch(ConvBn, ConvBn, FastConv);

impl Branch {
    fn load(vb: VarBuilder, cin: usize, mid: usize, out: usize) -> Result<Self> {
        let w = vb.get((out, mid, 1, 1), "2.weight")?;
        let b = vb.get(out, "2.bias")?;
        Ok(Branch(
            ConvBn::load(vb.pp("0"), cin, mid, 3, 1)?,
            ConvBn::load(vb.pp("1"), mid, mid, 3, 1)?,
            FastConv::new(w, Some(b), 1, Padding::default(), 1, Act::None)?,
        ))
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.2.forward(&self.1.forward(&self.0.forward(x)?)?)
    }
}

struct Head {
    cv2: Vec<Branch>,
    cv3: Vec<Branch>,
    cv4: Vec<Branch>,
    dfl: Tensor,
    nc: usize,
    nk: usize,
}

impl Head {
    fn load(vb: VarBuilder, ch: [usize; 3], nc: usize, task: HeadKind) -> Result<Self> {
        let c2 = (ch[0] / 4).max(REG_MAX * 4).max(16);
        let c3 = ch[0].max(nc.min(100));
        let nk = if task == HeadKind::Pose { 17 * 3 } else { 0 };
        let c4 = (ch[0] / 4).max(nk);
        let mut h = Head {
            cv2: Vec::new(),
            cv3: Vec::new(),
            cv4: Vec::new(),
            dfl: vb
                .get((1, REG_MAX, 1, 1), "dfl.conv.weight")?
                .reshape((1, REG_MAX, 1))?,
            nc,
            nk,
        };
        for (i, &c) in ch.iter().enumerate() {
            h.cv2.push(Branch::load(vb.pp(format!("cv2.{i}")), c, c2, 4 * REG_MAX)?);
            h.cv3.push(Branch::load(vb.pp(format!("cv3.{i}")), c, c3, nc)?);
            if nk > 0 {
                h.cv4.push(Branch::load(vb.pp(format!("cv4.{i}")), c, c4, nk)?);
            }
        }
        Ok(h)
    }

    /// Eval-mode output: (1, 4 + nc [+ 51], anchors) — boxes cx, cy, w, h in
    /// input pixels, class scores (sigmoid), keypoints (x, y, visibility).
    fn forward(&self, xs: [&Tensor; 3]) -> Result<Tensor> {
        let mut boxes = Vec::new();
        let mut cls = Vec::new();
        let mut kpts = Vec::new();
        for (i, x) in xs.iter().enumerate() {
            let (b, _, h, w) = x.dims4()?;
            boxes.push(self.cv2[i].forward(x)?.reshape((b, 4 * REG_MAX, h * w))?);
            cls.push(self.cv3[i].forward(x)?.reshape((b, self.nc, h * w))?);
            if self.nk > 0 {
                kpts.push(self.cv4[i].forward(x)?.reshape((b, self.nk, h * w))?);
            }
        }
        if xs.iter().all(|x| host::is_cpu_f32(x)) {
            self.decode_cpu(&boxes, &cls, &kpts, xs)
        } else {
            self.decode_candle(&boxes, &cls, &kpts, xs)
        }
    }

    /// The head output with candle ops (any device).
    fn decode_candle(&self, boxes: &[Tensor], cls: &[Tensor], kpts: &[Tensor], xs: [&Tensor; 3]) -> Result<Tensor> {
        let dev = xs[0].device();
        let mut anchors_x = Vec::new();
        let mut anchors_y = Vec::new();
        let mut strides = Vec::new();
        for (i, x) in xs.iter().enumerate() {
            let (_, _, h, w) = x.dims4()?;
            let stride = (8 << i) as f32;
            for yy in 0..h {
                for xx in 0..w {
                    anchors_x.push(xx as f32 + 0.5);
                    anchors_y.push(yy as f32 + 0.5);
                    strides.push(stride);
                }
            }
        }
        let a = anchors_x.len();
        let ax = Tensor::from_vec(anchors_x, (1, 1, a), dev)?;
        let ay = Tensor::from_vec(anchors_y, (1, 1, a), dev)?;
        let st = Tensor::from_vec(strides, (1, 1, a), dev)?;
        let boxes = Tensor::cat(boxes, 2)?;
        let b = boxes.dim(0)?;
        // DFL: softmax over 16 bins, expectation with weights 0..15.
        let d = candle_nn::ops::softmax(&boxes.reshape((b, 4, REG_MAX, a))?, 2)?;
        let d = d.broadcast_mul(&self.dfl.unsqueeze(0)?)?.sum(2)?; // (b, 4, a)
        let (l, t, r, bo) = (d.i((.., 0..1))?, d.i((.., 1..2))?, d.i((.., 2..3))?, d.i((.., 3..4))?);
        let x1 = ax.broadcast_sub(&l)?;
        let y1 = ay.broadcast_sub(&t)?;
        let x2 = ax.broadcast_add(&r)?;
        let y2 = ay.broadcast_add(&bo)?;
        let cx = ((&x1 + &x2)? * 0.5)?;
        let cy = ((&y1 + &y2)? * 0.5)?;
        let bw = (x2 - x1)?;
        let bh = (y2 - y1)?;
        let dbox = Tensor::cat(&[cx, cy, bw, bh], 1)?.broadcast_mul(&st)?;
        let scores = candle_nn::ops::sigmoid(&Tensor::cat(cls, 2)?)?;
        let mut out = vec![dbox, scores];
        if self.nk > 0 {
            let k = Tensor::cat(kpts, 2)?.reshape((b, 17, 3, a))?;
            let kx = ((k.i((.., .., 0..1))? * 2.0)?.broadcast_add(&(ax.unsqueeze(1)? - 0.5)?)?)
                .broadcast_mul(&st.unsqueeze(1)?)?;
            let ky = ((k.i((.., .., 1..2))? * 2.0)?.broadcast_add(&(ay.unsqueeze(1)? - 0.5)?)?)
                .broadcast_mul(&st.unsqueeze(1)?)?;
            let kv = candle_nn::ops::sigmoid(&k.i((.., .., 2..3))?)?;
            out.push(Tensor::cat(&[kx, ky, kv], 2)?.reshape((b, 51, a))?);
        }
        Ok(Tensor::cat(&out, 1)?)
    }
}

impl Head {
    /// The same output as the candle path, in one pass ([`yolov8_head`]).
    fn decode_cpu(&self, boxes: &[Tensor], cls: &[Tensor], kpts: &[Tensor], xs: [&Tensor; 3]) -> Result<Tensor> {
        let b = xs[0].dim(0)?;
        let dims: Vec<(usize, usize)> = xs.iter().map(|x| Ok((x.dim(2)?, x.dim(3)?))).collect::<Result<_>>()?;
        let a: usize = dims.iter().map(|(h, w)| h * w).sum();
        let rows = 4 + self.nc + self.nk;
        let dfl: Vec<f32> = self.dfl.flatten_all()?.to_vec1()?;
        let mut all: Vec<&Tensor> = boxes.iter().chain(cls).collect();
        all.extend(kpts);
        host::with_slices(&all, |d| {
            fn image(t: &[f32], i: usize, b: usize) -> &[f32] {
                let per = t.len() / b.max(1);
                &t[i * per..(i + 1) * per]
            }
            // SAFETY: `decode` writes every row of every anchor of each image.
            unsafe {
                host::tensor_filled((b, rows, a), |out| {
                    for i in 0..b {
                        let levels: Vec<yolov8_head::Level> = dims
                            .iter()
                            .enumerate()
                            .map(|(l, &(h, w))| yolov8_head::Level {
                                boxes: image(d[l], i, b),
                                cls: image(d[3 + l], i, b),
                                kpts: if self.nk > 0 { image(d[6 + l], i, b) } else { &[] },
                                h,
                                w,
                                stride: (8 << l) as f32,
                            })
                            .collect();
                        let o = std::slice::from_raw_parts_mut(out.add(i * rows * a), rows * a);
                        yolov8_head::decode(&levels, self.nc, &dfl, o);
                    }
                })
            }
        })
    }
}

/// The network's layers, when it runs here.
struct Layers {
    l0: ConvBn,
    l1: ConvBn,
    l2: C2f,
    l3: ConvBn,
    l4: C2f,
    l5: ConvBn,
    l6: C2f,
    l7: ConvBn,
    l8: C2f,
    l9: Sppf,
    l12: C2f,
    l15: C2f,
    l16: ConvBn,
    l18: C2f,
    l19: ConvBn,
    l21: C2f,
    head: Head,
}

/// Ultralytics' `max_nms`: candidates kept for NMS, best first.
const MAX_NMS: usize = 30_000;

pub struct YoloV8 {
    net: Net<LocalNet>,
    pub head: HeadKind,
    input_size: usize,
    labels: Vec<String>,
    conf: f32,
    iou: f32,
    device: Device,
}

/// The network on this machine: the layers built from a state dict, or an
/// imported ONNX export run by the graph executor.
enum LocalNet {
    Layers(Box<Layers>),
    Graph(Box<crate::graph::executor::Graph>),
}

/// candle-hub (`lmz/candle-yolo-v8`) name → ultralytics name.
pub fn candle_hub_name(ultra: &str) -> String {
    const MAP: [(&str, &str); 17] = [
        ("model.0.", "net.b1.0."),
        ("model.1.", "net.b1.1."),
        ("model.2.", "net.b2.0."),
        ("model.3.", "net.b2.1."),
        ("model.4.", "net.b2.2."),
        ("model.5.", "net.b3.0."),
        ("model.6.", "net.b3.1."),
        ("model.7.", "net.b4.0."),
        ("model.8.", "net.b4.1."),
        ("model.9.", "net.b5.0."),
        ("model.12.", "fpn.n1."),
        ("model.15.", "fpn.n2."),
        ("model.16.", "fpn.n3."),
        ("model.18.", "fpn.n4."),
        ("model.19.", "fpn.n5."),
        ("model.21.", "fpn.n6."),
        ("model.22.", "head."),
    ];
    for (u, c) in MAP {
        if let Some(rest) = ultra.strip_prefix(u) {
            return format!("{c}{}", rest.replace("m.", "bottleneck."));
        }
    }
    ultra.to_string()
}

impl YoloV8 {
    pub fn build(vb: VarBuilder, variant: &str, task: HeadKind, nc: usize) -> Result<Self> {
        let vb = if !vb.contains_tensor("model.0.conv.weight") && vb.contains_tensor("net.b1.0.conv.weight") {
            vb.rename_f(candle_hub_name)
        } else {
            vb
        };
        if task == HeadKind::Segment {
            return Err(Error::msg(
                "yolov8: segmentation heads run from an ONNX import only (modeldock import onnx)",
            ));
        }
        let s = Scale::of(variant)?;
        let vb = vb.pp("model");
        let (c64, c128, c256, c512, c1024) = (s.ch(64), s.ch(128), s.ch(256), s.ch(512), s.ch(1024));
        let (n3, n6) = (s.n(3), s.n(6));
        let layers = Layers {
            l0: ConvBn::load(vb.pp("0"), 3, c64, 3, 2)?,
            l1: ConvBn::load(vb.pp("1"), c64, c128, 3, 2)?,
            l2: C2f::load(vb.pp("2"), c128, c128, n3, true)?,
            l3: ConvBn::load(vb.pp("3"), c128, c256, 3, 2)?,
            l4: C2f::load(vb.pp("4"), c256, c256, n6, true)?,
            l5: ConvBn::load(vb.pp("5"), c256, c512, 3, 2)?,
            l6: C2f::load(vb.pp("6"), c512, c512, n6, true)?,
            l7: ConvBn::load(vb.pp("7"), c512, c1024, 3, 2)?,
            l8: C2f::load(vb.pp("8"), c1024, c1024, n3, true)?,
            l9: Sppf::load(vb.pp("9"), c1024, c1024)?,
            l12: C2f::load_up(vb.pp("12"), c1024, c512, c512, n3)?,
            l15: C2f::load_up(vb.pp("15"), c512, c256, c256, n3)?,
            l16: ConvBn::load(vb.pp("16"), c256, c256, 3, 2)?,
            l18: C2f::load(vb.pp("18"), c256 + c512, c512, n3, false)?,
            l19: ConvBn::load(vb.pp("19"), c512, c512, 3, 2)?,
            l21: C2f::load(vb.pp("21"), c512 + c1024, c1024, n3, false)?,
            head: Head::load(vb.pp("22"), [c256, c512, c1024], nc, task)?,
        };
        Ok(Self::with_net(
            Net::Local(LocalNet::Layers(Box::new(layers))),
            task,
            vb.device(),
        ))
    }

    /// A model around `net` with the defaults [`Self::configure`] then sets.
    fn with_net(net: Net<LocalNet>, head: HeadKind, device: &Device) -> Self {
        YoloV8 {
            net,
            head,
            input_size: 640,
            labels: Vec::new(),
            conf: 0.25,
            iou: 0.7,
            device: device.clone(),
        }
    }

    /// The task and labels a manifest gives.
    fn task_labels(m: &Manifest) -> Result<(HeadKind, Vec<String>)> {
        let task = HeadKind::of(m.task)?;
        let labels: Vec<String> = if !m.labels.is_empty() {
            m.labels.clone()
        } else if task == HeadKind::Pose {
            vec!["person".into()]
        } else {
            super::coco::COCO.iter().map(|s| s.to_string()).collect()
        };
        Ok((task, labels))
    }

    fn configure(mut self, m: &Manifest, labels: Vec<String>) -> Self {
        self.input_size = m.input_size as usize;
        self.labels = labels;
        self.conf = m.conf.unwrap_or(0.25);
        self.iou = m.iou.unwrap_or(0.7);
        self
    }

    pub fn load(vb: VarBuilder, m: &Manifest) -> Result<Self> {
        let (task, labels) = Self::task_labels(m)?;
        if vb.contains_tensor(crate::graph::executor::GRAPH_TENSOR) {
            // An imported ONNX export: the same pre- and post-processing
            // around the graph executor.
            let graph = crate::graph::executor::Graph::load(&vb, &format!("model '{}'", m.id))?;
            let y = Self::with_net(Net::Local(LocalNet::Graph(Box::new(graph))), task, vb.device());
            return Ok(y.configure(m, labels));
        }
        let variant = if m.variant.is_empty() { "n" } else { m.variant.as_str() };
        let y = YoloV8::build(vb, variant, task, labels.len())?;
        Ok(y.configure(m, labels))
    }

    /// The model with its network on a v2 server (`m.backend`): letterbox,
    /// decoding, NMS and keypoints stay here.
    pub fn remote(m: &Manifest, device: &Device) -> Result<Self> {
        let (task, labels) = Self::task_labels(m)?;
        let y = Self::with_net(Net::Remote(super::remote_net::connect(m)?), task, device);
        Ok(y.configure(m, labels))
    }

    /// The raw eval-mode network on a (1, 3, S, S) input in 0..1.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let l = match &self.net {
            Net::Local(LocalNet::Layers(l)) => l,
            Net::Local(LocalNet::Graph(g)) => {
                // Ultralytics exports put the detections first (`output0`).
                let outs = crate::kernels::host::in_pool(|| g.run(x))?;
                return outs
                    .into_iter()
                    .next()
                    .map(|(_, t)| t)
                    .ok_or_else(|| crate::error::Error::msg("the graph has no output"));
            }
            Net::Remote(r) => return super::remote_net::run(r, x),
        };
        crate::kernels::host::in_pool(|| Self::forward_local(l, x))
    }

    fn forward_local(l: &Layers, x: &Tensor) -> Result<Tensor> {
        let x = l.l1.forward(&l.l0.forward(x)?)?;
        let x = l.l2.forward(&x)?;
        let p3 = l.l4.forward(&l.l3.forward(&x)?)?;
        let p4 = l.l6.forward(&l.l5.forward(&p3)?)?;
        let p5 = l.l9.forward(&l.l8.forward(&l.l7.forward(&p4)?)?)?;
        // The neck's concatenations are read in place by each C2f.
        let x12 = l.l12.forward_up(&p5, &p4)?;
        let x15 = l.l15.forward_up(&x12, &p3)?;
        let x18 = l.l18.forward_cat(&[&l.l16.forward(&x15)?, &x12])?;
        let x21 = l.l21.forward_cat(&[&l.l19.forward(&x18)?, &p5])?;
        l.head.forward([&x15, &x18, &x21])
    }

    /// Detections from the head output, and with `protos` (a seg head's
    /// second output) each one's mask.
    fn decode(
        &self,
        out: &Tensor,
        protos: Option<&Tensor>,
        lb: &crate::vision::letterbox::Letterbox,
        conf: f32,
        iou: f32,
    ) -> Result<(Vec<Detection>, Vec<Mask>)> {
        let out = out.squeeze(0)?.to_dtype(DType::F32)?; // (rows, anchors)
        let nc = self.labels.len();
        let (nrows, a) = out.dims2()?;
        if nrows < 4 + nc {
            return Err(crate::error::Error::msg(format!(
                "the network output has {nrows} rows; {} labels need at least {}",
                nc,
                4 + nc
            )));
        }
        let data: Vec<f32> = out.flatten_all()?.to_vec1()?;
        let row = |r: usize| &data[r * a..(r + 1) * a];
        // Best class per anchor, class by class over contiguous rows (as
        // Ultralytics: confidence first, then at most MAX_NMS candidates).
        let mut best = vec![0f32; a];
        let mut best_c = vec![0usize; a];
        for c in 0..nc {
            for (j, &v) in row(4 + c).iter().enumerate() {
                if v > best[j] {
                    best[j] = v;
                    best_c[j] = c;
                }
            }
        }
        let mut cand: Vec<usize> = (0..a).filter(|&j| best[j] > conf).collect();
        if cand.len() > MAX_NMS {
            cand.sort_by(|&x, &y| best[y].total_cmp(&best[x]));
            cand.truncate(MAX_NMS);
        }
        let (cx, cy, w, h) = (row(0), row(1), row(2), row(3));
        let boxes: Vec<[f32; 4]> = cand
            .iter()
            .map(|&j| {
                [
                    cx[j] - w[j] / 2.0,
                    cy[j] - h[j] / 2.0,
                    cx[j] + w[j] / 2.0,
                    cy[j] + h[j] / 2.0,
                ]
            })
            .collect();
        let scores: Vec<f32> = cand.iter().map(|&j| best[j]).collect();
        let classes: Vec<usize> = cand.iter().map(|&j| best_c[j]).collect();
        let kps: Vec<Vec<[f32; 3]>> = if self.head == HeadKind::Pose && nrows >= 4 + nc + 51 {
            cand.iter()
                .map(|&j| {
                    (0..17)
                        .map(|k| [row(4 + nc + 3 * k)[j], row(5 + nc + 3 * k)[j], row(6 + nc + 3 * k)[j]])
                        .collect()
                })
                .collect()
        } else {
            Vec::new()
        };
        // Ultralytics' max_det: at most 300 kept.
        let keep = batched_nms(&boxes, &scores, &classes, iou, 300);
        let masks = match protos {
            Some(p) => {
                let k = p.dim(1)?;
                if nrows < 4 + nc + k {
                    return Err(Error::msg(format!(
                        "the network output has {nrows} rows; {nc} labels and {k} mask prototypes need {}",
                        4 + nc + k
                    )));
                }
                let kept: Vec<Kept> = keep
                    .iter()
                    .enumerate()
                    .map(|(n, &i)| Kept {
                        coeffs: (0..k).map(|r| row(4 + nc + r)[cand[i]]).collect(),
                        input_box: boxes[i],
                        label: self.labels.get(classes[i]).map(String::as_str).unwrap_or(""),
                        detection: n as u32,
                    })
                    .collect();
                instance_masks(p, &kept, self.input_size, lb)?
            }
            None => Vec::new(),
        };
        let dets = keep
            .into_iter()
            .map(|i| Detection {
                label: self
                    .labels
                    .get(classes[i])
                    .cloned()
                    .unwrap_or_else(|| classes[i].to_string()),
                class_id: u32::try_from(classes[i]).ok(),
                score: scores[i],
                bbox: lb.unmap_box(boxes[i]),
                keypoints: kps
                    .get(i)
                    .map(|k| {
                        k.iter()
                            .map(|p| {
                                // Clipped to the image, as Ultralytics' `scale_coords` does.
                                let q = lb.unmap_point_clipped([p[0], p[1]]);
                                [q[0], q[1], p[2]]
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect();
        Ok((dets, masks))
    }
}

impl Model for YoloV8 {
    fn infer(&self, img: &RgbImage, params: &InferParams) -> Result<(Vec<Detection>, ModelTimings)> {
        let (d, _, t) = self.infer_with_masks(img, params)?;
        Ok((d, t))
    }

    fn infer_with_masks(
        &self,
        img: &RgbImage,
        params: &InferParams,
    ) -> Result<(Vec<Detection>, Vec<Mask>, ModelTimings)> {
        let t0 = Instant::now();
        let (x, lb) = letterbox(img, self.input_size, &self.device)?;
        let t1 = Instant::now();
        let (out, protos) = match (&self.net, self.head) {
            (Net::Local(LocalNet::Graph(g)), HeadKind::Segment) => {
                let mut outs = crate::kernels::host::in_pool(|| g.run(&x))?.into_iter().map(|(_, t)| t);
                match (outs.next(), outs.next()) {
                    (Some(o), Some(p)) => (o, Some(p)),
                    _ => return Err(Error::msg("a segmentation graph gives boxes and mask prototypes")),
                }
            }
            _ => (self.forward(&x)?, None),
        };
        let t2 = Instant::now();
        let (d, masks) = self.decode(
            &out,
            protos.as_ref(),
            &lb,
            params.conf.unwrap_or(self.conf),
            params.iou.unwrap_or(self.iou),
        )?;
        Ok((
            d,
            masks,
            ModelTimings {
                preprocess: ms(t1 - t0),
                forward: ms(t2 - t1),
                postprocess: ms(t2.elapsed()),
            },
        ))
    }

    fn forward_raw(&self, x: &Tensor) -> Result<Tensor> {
        self.forward(x)
    }

    fn raw_input_shape(&self) -> Option<Vec<usize>> {
        Some(vec![1, 3, self.input_size, self.input_size])
    }

    fn preprocess_raw(&self, img: &RgbImage) -> Result<Option<Tensor>> {
        Ok(Some(letterbox(img, self.input_size, &self.device)?.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::weights_source::WeightsSource;
    use crate::models::weights::var_builder;

    /// The one-pass CPU head output equals the candle ops' output, for
    /// detection and pose, on two images of random branch outputs.
    #[test]
    fn cpu_head_decode_matches_candle_ops() -> Result<()> {
        for (task, nc) in [(HeadKind::Detect, 80), (HeadKind::Pose, 1)] {
            let vb = var_builder(&WeightsSource::Random, 0, &Device::Cpu, std::sync::Arc::new(|_, _| {}))?;
            let head = Head::load(vb.pp("model.22"), [64, 128, 256], nc, task)?;
            let sizes = [(8usize, 6usize), (4, 3), (2, 2)];
            let xs: Vec<Tensor> = sizes
                .iter()
                .zip([64, 128, 256])
                .map(|(&(h, w), c)| Tensor::zeros((2, c, h, w), DType::F32, &Device::Cpu))
                .collect::<candle_core::Result<_>>()?;
            let raw = |rows: usize, seed: f64| -> Result<Vec<Tensor>> {
                sizes
                    .iter()
                    .map(|&(h, w)| Ok((Tensor::randn(0f32, 3.0, (2, rows, h * w), &Device::Cpu)? + seed)?))
                    .collect()
            };
            let boxes = raw(4 * REG_MAX, 0.0)?;
            let cls = raw(nc, -1.0)?;
            let kpts = if task == HeadKind::Pose {
                raw(51, 0.5)?
            } else {
                Vec::new()
            };
            let refs = [&xs[0], &xs[1], &xs[2]];
            let a = head.decode_cpu(&boxes, &cls, &kpts, refs)?;
            let b = head.decode_candle(&boxes, &cls, &kpts, refs)?;
            assert_eq!(a.dims(), b.dims());
            let scale = b.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            let d = (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert!(
                d <= 1e-5 * scale.max(1.0),
                "{task:?}: max abs diff {d} (values up to {scale})"
            );
        }
        Ok(())
    }
}
