//! The One Euro filter (Casiez, Roussel, Vogel, "1€ Filter: A Simple
//! Speed-based Low-pass Filter for Noisy Input in Interactive Systems", CHI
//! 2012), and hand landmarks smoothed with it, one track per hand.
//!
//! A first-order low-pass filter whose cutoff rises with the signal's speed:
//! `cutoff = min_cutoff + beta * |dx/dt|`, where `dx/dt` is itself low-passed
//! at `d_cutoff`. At rest the cutoff is low (little jitter); when the signal
//! moves it is high (little lag). Timestamps are passed in, in seconds; the
//! filter reads no clock, so it is exact to test and runs at any frame rate.

use crate::vision::Detection;

/// Filter parameters: cutoffs in Hz; `beta` per unit of (scaled) speed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OneEuroParams {
    pub min_cutoff: f64,
    pub beta: f64,
    pub d_cutoff: f64,
}

impl Default for OneEuroParams {
    /// The paper's starting point: 1 Hz, no speed term, 1 Hz for the derivative.
    fn default() -> Self {
        OneEuroParams {
            min_cutoff: 1.0,
            beta: 0.0,
            d_cutoff: 1.0,
        }
    }
}

/// The smoothing factor of a first-order low-pass at `cutoff` Hz for a step of `dt` s.
pub fn alpha(cutoff: f64, dt: f64) -> f64 {
    let tau = 1.0 / (std::f64::consts::TAU * cutoff.max(1e-9));
    1.0 / (1.0 + tau / dt)
}

/// One scalar signal through a One Euro filter.
#[derive(Debug, Clone, PartialEq)]
pub struct OneEuro {
    pub params: OneEuroParams,
    /// (time, filtered value, filtered derivative) of the last sample.
    last: Option<(f64, f64, f64)>,
}

impl OneEuro {
    pub fn new(params: OneEuroParams) -> Self {
        OneEuro { params, last: None }
    }

    /// Filters `x` sampled at `t` seconds.
    pub fn filter(&mut self, x: f64, t: f64) -> f64 {
        self.filter_scaled(x, t, 1.0)
    }

    /// Filters `x` sampled at `t` seconds, with the speed that raises the
    /// cutoff measured in units of `1 / speed_scale` (as MediaPipe does with
    /// its value scale: pass `1 / object size` and `beta` means the same
    /// for a near and a far hand). The first sample is returned as is. A
    /// sample not later than the previous one changes nothing and returns
    /// the previous output; so does a non-finite sample.
    pub fn filter_scaled(&mut self, x: f64, t: f64, speed_scale: f64) -> f64 {
        let Some((t0, x0, dx0)) = self.last else {
            if x.is_finite() && t.is_finite() {
                self.last = Some((t, x, 0.0));
            }
            return x;
        };
        let dt = t - t0;
        if dt.is_nan() || dt <= 0.0 || !x.is_finite() {
            return x0;
        }
        let p = self.params;
        // The paper's derivative: the new sample against the previous output.
        let dx = (x - x0) / dt;
        let edx = dx0 + alpha(p.d_cutoff, dt) * (dx - dx0);
        let cutoff = p.min_cutoff + p.beta * (edx * speed_scale).abs();
        let out = x0 + alpha(cutoff, dt) * (x - x0);
        self.last = Some((t, out, edx));
        out
    }

    /// The last output, if any.
    pub fn value(&self) -> Option<f64> {
        self.last.map(|l| l.1)
    }

    pub fn reset(&mut self) {
        self.last = None;
    }
}

/// Smoothing for 21-landmark hands in pixels: speed is measured in hand sizes
/// per second, so one setting fits a near and a far hand. 0.5 Hz at rest
/// (steady nails on a still hand); a hand moving one hand size per second
/// gets 0.5 + 20 = 20.5 Hz (little lag). Starting values, to be tuned
/// against the real hand model on a camera.
pub const HAND_SMOOTHING: OneEuroParams = OneEuroParams {
    min_cutoff: 0.5,
    beta: 20.0,
    d_cutoff: 1.0,
};

/// A hand not seen for this long (seconds) is forgotten; it starts afresh.
pub const HAND_TRACK_MAX_AGE: f64 = 0.5;

/// How far (in hand sizes) a wrist may move between two results and still be the same hand.
pub const HAND_MATCH_GATE: f32 = 1.0;

struct HandTrack {
    label: String,
    wrist: [f32; 2],
    seen: f64,
    /// x, y, z of each of the 21 landmarks.
    filters: Vec<[OneEuro; 3]>,
}

/// Smooths hands (detections with 21 keypoints) from result to result, one
/// track per hand: each hand continues the track whose wrist was nearest, if
/// within [`HAND_MATCH_GATE`] hand sizes (a track with the same label wins a
/// near tie: a different label costs a quarter of the gate). Other
/// detections pass through unchanged.
pub struct HandSmoother {
    pub params: OneEuroParams,
    tracks: Vec<HandTrack>,
}

/// A hand's size in pixels: the mean side of its landmarks' bounding box.
pub fn hand_size(kp: &[[f32; 3]]) -> f32 {
    let (mut lo, mut hi) = ([f32::MAX; 2], [f32::MIN; 2]);
    for p in kp {
        for i in 0..2 {
            lo[i] = lo[i].min(p[i]);
            hi[i] = hi[i].max(p[i]);
        }
    }
    (((hi[0] - lo[0]) + (hi[1] - lo[1])) / 2.0).max(1.0)
}

fn is_hand(d: &Detection) -> bool {
    d.keypoints.len() == 21
}

impl HandSmoother {
    pub fn new(params: OneEuroParams) -> Self {
        HandSmoother {
            params,
            tracks: Vec::new(),
        }
    }

    /// Hands being tracked.
    pub fn tracks(&self) -> usize {
        self.tracks.len()
    }

    /// The detections of one result at `t` seconds, hands smoothed: their
    /// keypoints filtered, their box moved with the keypoints' mean shift.
    pub fn smooth(&mut self, detections: &[Detection], t: f64) -> Vec<Detection> {
        self.tracks
            .retain(|tr| t - tr.seen <= HAND_TRACK_MAX_AGE && t >= tr.seen);
        // Every (cost, hand, track) within the gate, cheapest first.
        let mut pairs = Vec::new();
        for (i, d) in detections.iter().enumerate().filter(|(_, d)| is_hand(d)) {
            let w = d.keypoints[0];
            let gate = HAND_MATCH_GATE * hand_size(&d.keypoints);
            for (k, tr) in self.tracks.iter().enumerate() {
                let dist = ((w[0] - tr.wrist[0]).powi(2) + (w[1] - tr.wrist[1]).powi(2)).sqrt();
                if dist <= gate {
                    let penalty = if tr.label == d.label { 0.0 } else { 0.25 * gate };
                    pairs.push((dist + penalty, i, k));
                }
            }
        }
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut track_of: Vec<Option<usize>> = vec![None; detections.len()];
        let mut taken = vec![false; self.tracks.len()];
        for (_, i, k) in pairs {
            if track_of[i].is_none() && !taken[k] {
                track_of[i] = Some(k);
                taken[k] = true;
            }
        }
        let mut out = Vec::with_capacity(detections.len());
        for (i, d) in detections.iter().enumerate() {
            if !is_hand(d) {
                out.push(d.clone());
                continue;
            }
            let k = match track_of[i] {
                Some(k) => k,
                None => {
                    let f = OneEuro::new(self.params);
                    self.tracks.push(HandTrack {
                        label: d.label.clone(),
                        wrist: [d.keypoints[0][0], d.keypoints[0][1]],
                        seen: t,
                        filters: vec![[f.clone(), f.clone(), f]; 21],
                    });
                    self.tracks.len() - 1
                }
            };
            let tr = &mut self.tracks[k];
            let scale = 1.0 / hand_size(&d.keypoints) as f64;
            let mut s = d.clone();
            let mut shift = [0.0f32; 2];
            for (p, f) in s.keypoints.iter_mut().zip(tr.filters.iter_mut()) {
                let raw = *p;
                for c in 0..3 {
                    p[c] = f[c].filter_scaled(raw[c] as f64, t, scale) as f32;
                }
                shift[0] += (p[0] - raw[0]) / 21.0;
                shift[1] += (p[1] - raw[1]) / 21.0;
            }
            s.bbox = [
                s.bbox[0] + shift[0],
                s.bbox[1] + shift[1],
                s.bbox[2] + shift[0],
                s.bbox[3] + shift[1],
            ];
            tr.wrist = [d.keypoints[0][0], d.keypoints[0][1]];
            tr.seen = t;
            tr.label = d.label.clone();
            out.push(s);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic noise source (xorshift), uniform in [-1, 1].
    struct Noise(u64);
    impl Noise {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        }
    }

    fn variance(v: &[f64]) -> f64 {
        let m = v.iter().sum::<f64>() / v.len() as f64;
        v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64
    }

    #[test]
    fn a_constant_signal_stays_constant() {
        for params in [OneEuroParams::default(), HAND_SMOOTHING] {
            let mut f = OneEuro::new(params);
            for i in 0..200 {
                let y = f.filter(42.5, i as f64 / 30.0);
                assert_eq!(y, 42.5, "sample {i}");
            }
        }
    }

    #[test]
    fn a_noisy_constant_has_lower_variance_after_filtering() {
        let mut f = OneEuro::new(OneEuroParams {
            min_cutoff: 1.0,
            beta: 0.01,
            d_cutoff: 1.0,
        });
        let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
        let (mut raw, mut out) = (Vec::new(), Vec::new());
        for i in 0..600 {
            let x = 100.0 + 3.0 * noise.next();
            let y = f.filter(x, i as f64 / 30.0);
            if i >= 30 {
                raw.push(x);
                out.push(y);
            }
        }
        let (vr, vo) = (variance(&raw), variance(&out));
        println!("variance {vr:.3} raw, {vo:.3} filtered");
        assert!(vo < vr / 4.0, "variance {vr:.3} -> {vo:.3}");
        let mean = out.iter().sum::<f64>() / out.len() as f64;
        assert!((mean - 100.0).abs() < 0.3, "no bias: {mean}");
    }

    #[test]
    fn a_step_is_followed_and_speed_makes_it_faster() {
        let step = |beta: f64| {
            let mut f = OneEuro::new(OneEuroParams {
                min_cutoff: 1.0,
                beta,
                d_cutoff: 1.0,
            });
            let mut ys = Vec::new();
            for i in 0..120 {
                let x = if i < 30 { 0.0 } else { 10.0 };
                ys.push(f.filter(x, i as f64 / 30.0));
            }
            ys
        };
        for beta in [0.0, 0.5] {
            let ys = step(beta);
            assert!(ys[..30].iter().all(|&y| y == 0.0));
            // Monotone toward the new level, never past it, and there in the end.
            assert!(ys.windows(2).all(|w| w[1] >= w[0] - 1e-12 && w[1] <= 10.0 + 1e-9));
            assert!((ys[119] - 10.0).abs() < 0.01, "beta {beta}: {}", ys[119]);
        }
        // The speed term cuts the lag: after 3 frames the fast one is further along.
        let (slow, fast) = (step(0.0), step(0.5));
        assert!(fast[33] > slow[33] + 1.0, "{} vs {}", fast[33], slow[33]);
    }

    #[test]
    fn the_cutoff_is_the_papers_and_time_comes_from_the_caller() {
        // One step at 1 Hz, no speed term: alpha = 1 / (1 + tau / dt).
        let mut f = OneEuro::new(OneEuroParams::default());
        f.filter(0.0, 10.0);
        let dt = 0.1;
        let y = f.filter(1.0, 10.0 + dt);
        let tau = 1.0 / std::f64::consts::TAU;
        assert!((y - 1.0 / (1.0 + tau / dt)).abs() < 1e-12);
        // A repeated or earlier timestamp, or NaN, changes nothing.
        assert_eq!(f.filter(5.0, 10.0 + dt), y);
        assert_eq!(f.filter(5.0, 3.0), y);
        assert_eq!(f.filter(f64::NAN, 11.0), y);
        assert_eq!(f.value(), Some(y));
        f.reset();
        assert_eq!(f.filter(7.0, 0.0), 7.0);
    }

    fn hand(label: &str, at: [f32; 2], jitter: f32) -> Detection {
        let keypoints = (0..21)
            .map(|i| {
                let (fx, fy) = ((i % 5) as f32 * 15.0, (i / 5) as f32 * -20.0);
                let j = if i % 2 == 0 { jitter } else { -jitter };
                [at[0] + fx + j, at[1] + fy - j, -3.0]
            })
            .collect();
        Detection {
            label: label.into(),
            class_id: None,
            score: 0.9,
            bbox: [at[0], at[1] - 80.0, at[0] + 60.0, at[1]],
            keypoints,
        }
    }

    #[test]
    fn two_hands_keep_their_own_tracks_and_jitter_is_damped() {
        let mut s = HandSmoother::new(HAND_SMOOTHING);
        let face = Detection {
            label: "face".into(),
            class_id: None,
            score: 0.8,
            bbox: [0.0, 0.0, 10.0, 10.0],
            keypoints: vec![[1.0, 1.0, 1.0]; 68],
        };
        let mut worst = 0f32;
        for i in 0..60 {
            let j = if i % 2 == 0 { 2.0 } else { -2.0 };
            // The order of the hands swaps each frame: matching is by wrist, not by index.
            let (l, r) = (hand("left", [100.0, 300.0], j), hand("right", [400.0, 300.0], -j));
            let dets = if i % 2 == 0 {
                vec![l, face.clone(), r]
            } else {
                vec![r, face.clone(), l]
            };
            let out = s.smooth(&dets, i as f64 / 20.0);
            assert_eq!(out.len(), 3);
            assert_eq!(out[1], face, "other detections pass through");
            assert_eq!(s.tracks(), 2);
            if i >= 20 {
                for (o, d) in out.iter().zip(&dets).filter(|(o, _)| o.keypoints.len() == 21) {
                    assert_eq!(o.label, d.label);
                    // Jitter of ±2 px around the still hand: the output stays within a fraction of it.
                    let centre = if d.label == "left" { 100.0 } else { 400.0 };
                    worst = worst.max((o.keypoints[0][0] - centre).abs());
                }
            }
        }
        assert!(worst < 1.0, "smoothed wrist strays {worst} px");
        // A hand gone for longer than the track age starts a new track.
        s.smooth(&[], 3.0 + HAND_TRACK_MAX_AGE + 0.1);
        assert_eq!(s.tracks(), 0);
        let fresh = hand("left", [250.0, 100.0], 0.0);
        let out = s.smooth(std::slice::from_ref(&fresh), 4.0);
        assert_eq!(out[0], fresh, "a new track starts at the raw landmarks");
    }

    #[test]
    fn a_moving_hand_is_followed_closely() {
        let mut s = HandSmoother::new(HAND_SMOOTHING);
        let mut lag = 0f32;
        for i in 0..90 {
            let t = i as f64 / 30.0;
            // One hand size (about 70 px) per second to the right.
            let x = 100.0 + 70.0 * t as f32;
            let out = s.smooth(&[hand("right", [x, 200.0], 0.0)], t);
            if i >= 30 {
                lag = lag.max(x - out[0].keypoints[0][0]);
                let b = out[0].bbox;
                assert!(
                    (b[0] - out[0].keypoints[0][0]).abs() < 1e-3,
                    "the box moves with the landmarks"
                );
            }
        }
        // The speed term keeps the lag to a few pixels (without it: 70 px/s
        // at 0.5 Hz would trail by about 22 px).
        assert!(lag < 5.0, "lag {lag} px");
        assert_eq!(s.tracks(), 1);
    }
}
