//! Stage timing shared by every model.

use std::time::Instant;

use crate::error::Result;
use crate::vision::ModelTimings;

/// A duration in milliseconds, as every timing field holds it.
pub fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs a model's three stages in turn, timing each: `preprocess` makes the
/// input (and whatever decoding needs of it), `forward` runs the network on
/// it, `postprocess` turns both into the answer.
pub fn timed<P, F, D>(
    preprocess: impl FnOnce() -> Result<P>,
    forward: impl FnOnce(&P) -> Result<F>,
    postprocess: impl FnOnce(P, F) -> Result<D>,
) -> Result<(D, ModelTimings)> {
    let t0 = Instant::now();
    let input = preprocess()?;
    let t1 = Instant::now();
    let out = forward(&input)?;
    let t2 = Instant::now();
    let answer = postprocess(input, out)?;
    let t3 = Instant::now();
    Ok((
        answer,
        ModelTimings {
            preprocess: ms(t1 - t0),
            forward: ms(t2 - t1),
            postprocess: ms(t3 - t2),
        },
    ))
}
