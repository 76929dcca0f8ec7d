//! Intersection-over-union and greedy non-maximum suppression.

/// IoU of two `[x0, y0, x1, y1]` boxes (0 when either is empty).
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union <= 0.0 {
        0.0
    } else {
        inter / union
    }
}

/// Greedy NMS: repeatedly keep the best remaining box and drop every other box
/// whose IoU with it is above `threshold`. Returns kept indices, best first.
/// Ties in score keep input order (a stable sort), as face-api does.
pub fn nms(boxes: &[[f32; 4]], scores: &[f32], threshold: f32) -> Vec<usize> {
    let mut order: Vec<usize> = (0..boxes.len().min(scores.len())).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut keep = Vec::new();
    let mut removed = vec![false; boxes.len()];
    for (pos, &i) in order.iter().enumerate() {
        if removed[i] {
            continue;
        }
        keep.push(i);
        for &j in &order[pos + 1..] {
            if !removed[j] && iou(&boxes[i], &boxes[j]) > threshold {
                removed[j] = true;
            }
        }
    }
    keep
}

/// Batched (class-aware) greedy NMS, as torchvision's `batched_nms` and
/// Ultralytics do it: candidates in score order (a stable sort, so ties keep
/// input order), each one kept unless a kept box *of its class* overlaps it
/// by more than `threshold`; stops after `max` kept. Each candidate is only
/// compared with kept boxes, so the cost is candidates × kept, not
/// candidates²: a few ms even when every anchor passes the confidence filter.
/// Returns kept indices, best first.
pub fn batched_nms(boxes: &[[f32; 4]], scores: &[f32], classes: &[usize], threshold: f32, max: usize) -> Vec<usize> {
    let n = boxes.len().min(scores.len()).min(classes.len());
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut keep: Vec<usize> = Vec::new();
    // Kept boxes per class: a candidate is compared only with its own class.
    let mut kept: std::collections::HashMap<usize, Vec<[f32; 4]>> = std::collections::HashMap::new();
    for i in order {
        if keep.len() >= max {
            break;
        }
        let same = kept.entry(classes[i]).or_default();
        if same.iter().all(|k| iou(k, &boxes[i]) <= threshold) {
            same.push(boxes[i]);
            keep.push(i);
        }
    }
    keep
}

/// NMS applied per class label: boxes of different classes never suppress each other.
pub fn nms_per_class(boxes: &[[f32; 4]], scores: &[f32], classes: &[usize], threshold: f32) -> Vec<usize> {
    let mut keep = Vec::new();
    let mut labels: Vec<usize> = classes.to_vec();
    labels.sort_unstable();
    labels.dedup();
    for c in labels {
        let idx: Vec<usize> = (0..boxes.len()).filter(|&i| classes[i] == c).collect();
        let b: Vec<[f32; 4]> = idx.iter().map(|&i| boxes[i]).collect();
        let s: Vec<f32> = idx.iter().map(|&i| scores[i]).collect();
        keep.extend(nms(&b, &s, threshold).into_iter().map(|k| idx[k]));
    }
    keep.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_identical_and_disjoint_boxes() {
        let a = [0.0, 0.0, 10.0, 10.0];
        assert!((iou(&a, &a) - 1.0).abs() < 1e-6);
        assert_eq!(iou(&a, &[20.0, 20.0, 30.0, 30.0]), 0.0);
        assert!((iou(&a, &[5.0, 0.0, 15.0, 10.0]) - 50.0 / 150.0).abs() < 1e-6);
    }

    #[test]
    fn nms_drops_overlaps_and_keeps_best_first() {
        let boxes = [[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [50.0, 50.0, 60.0, 60.0]];
        let keep = nms(&boxes, &[0.8, 0.9, 0.5], 0.4);
        assert_eq!(keep, vec![1, 2]);
        let keep = nms_per_class(&boxes, &[0.8, 0.9, 0.5], &[0, 1, 0], 0.4);
        assert_eq!(keep, vec![1, 0, 2]);
        assert_eq!(
            batched_nms(&boxes, &[0.8, 0.9, 0.5], &[0, 1, 0], 0.4, 300),
            vec![1, 0, 2]
        );
        assert_eq!(batched_nms(&boxes, &[0.8, 0.9, 0.5], &[0, 0, 0], 0.4, 300), vec![1, 2]);
        assert_eq!(batched_nms(&boxes, &[0.8, 0.9, 0.5], &[0, 1, 0], 0.4, 2), vec![1, 0]);
    }

    #[test]
    fn batched_nms_equals_per_class_nms_then_truncation() {
        // Pseudo-random boxes in a few classes: the same kept set and order.
        let mut s = 12345u32;
        let mut rnd = || {
            s = s.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (s >> 8) as f32 / (1u32 << 24) as f32
        };
        let n = 400;
        let boxes: Vec<[f32; 4]> = (0..n)
            .map(|_| {
                let (x, y) = (rnd() * 100.0, rnd() * 100.0);
                [x, y, x + 5.0 + rnd() * 30.0, y + 5.0 + rnd() * 30.0]
            })
            .collect();
        let scores: Vec<f32> = (0..n).map(|_| rnd()).collect();
        let classes: Vec<usize> = (0..n).map(|_| (rnd() * 4.0) as usize).collect();
        let mut want = nms_per_class(&boxes, &scores, &classes, 0.5);
        want.truncate(30);
        assert_eq!(batched_nms(&boxes, &scores, &classes, 0.5, 30), want);
    }
}
