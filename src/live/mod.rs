//! The live pipeline, above the door: a capture thread and an inference
//! thread over any `InferWait` (a `Client`, whichever engine is behind it),
//! the models it runs on each frame, and the figures it keeps.

pub mod hand_tracker;
pub mod pipeline;
pub mod stats;

pub use hand_tracker::{HandTracker, TrackCounts, TrackOptions};
pub use pipeline::{LiveOptions, LivePipeline, LiveResult};

use crate::client::{Answer, ImageInput, InferError, InferWait};
use crate::vision::InferParams;

/// The ids of a combo as the CLI and the Live panel write it
/// (`"hands+face-detector"`: ids joined by `+`, which ids never contain).
pub fn model_list(spec: &str) -> Vec<String> {
    spec.split('+').filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// Runs each of `models` on the same image, one after another, and merges
/// their detections in model order; stage timings add up. One failing model
/// fails the answer. A single id is a plain request.
pub fn infer_each<E: InferWait + ?Sized>(
    engine: &E,
    models: &[String],
    input: ImageInput,
    params: InferParams,
) -> Answer {
    let Some((first, rest)) = models.split_first() else {
        return Err(InferError::new(
            0,
            String::new(),
            input.name(),
            "no model to run".to_string(),
        ));
    };
    let mut merged = engine.infer_wait(first, input.clone(), params)?;
    for id in rest {
        let r = engine.infer_wait(id, input.clone(), params)?;
        // A detection's mask follows it to its place in the merged list.
        let offset = merged.output.detections.len() as u32;
        merged.output.masks.extend(r.output.masks.into_iter().map(|mut m| {
            m.detection = m.detection.map(|d| d + offset);
            m
        }));
        merged.output.detections.extend(r.output.detections);
        let (a, b) = (&mut merged.timings, r.timings);
        a.queue += b.queue;
        a.decode += b.decode;
        a.preprocess += b.preprocess;
        a.forward += b.forward;
        a.postprocess += b.postprocess;
        a.total += b.total;
        merged.output.cached &= r.output.cached;
    }
    merged.model = models.join("+");
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_combo_spelling_becomes_its_ids_in_order() {
        assert_eq!(model_list("hands+face-detector"), ["hands", "face-detector"]);
        assert_eq!(model_list("pose"), ["pose"]);
        assert_eq!(model_list("a++b+"), ["a", "b"]);
        assert!(model_list("").is_empty());
    }
}
