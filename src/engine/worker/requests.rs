//! A request's way through the worker: staged with the scheduler, decoded
//! in a lane, parked with the residency until its model is resident, run in
//! a lane, answered; or cancelled, or expired, on the way.

use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use image::RgbImage;

use super::{ms, Decoding, LaneOut, Pending, RunOutput, Staged, Work, Worker};
use crate::engine::cache;
use crate::engine::lanes::Finished;
use crate::engine::scheduler::{lane_for, Class};
use crate::engine::{ImageInput, InferError, InferResult, Reply, RequestId};
use crate::vision::decode::{decode_bytes, read_file_limited};
use crate::vision::{ModelTimings, Output, Timings};

impl Worker {
    /// Answers the requests among `ids` that have not started with an
    /// error, and forgets them: waiting in the scheduler, being decoded, or
    /// parked behind their model's load (a load nothing else waits for is
    /// cancelled). A request already running is left to finish.
    pub(super) fn cancel(&mut self, ids: Vec<RequestId>) {
        for id in ids {
            let (model, image) = if self.scheduler.remove(id) {
                match self.staged.remove(&id) {
                    Some(st) => {
                        let (m, i) = (st.model.clone(), st.input.name());
                        self.answer_cancelled(id, st.reply, m.clone(), i.clone());
                        (m, i)
                    }
                    None => continue,
                }
            } else if let Some(d) = self.decoding.remove(&id) {
                // The lane's decoded image is dropped when it comes back.
                self.answer_cancelled(id, d.reply, d.model.clone(), d.image_name.clone());
                (d.model, d.image_name)
            } else if let Some(p) = self.requests.remove(&id) {
                let now = self.now();
                let a = match self.runnable.iter().position(|(_, r)| *r == id) {
                    // Let run but waiting for a lane.
                    Some(at) => {
                        self.runnable.remove(at);
                        self.residency.request_finished(&p.model, id, now)
                    }
                    None => self.residency.withdraw(&p.model, id),
                };
                self.actions.extend(a);
                self.answer_cancelled(id, p.reply, p.model.clone(), p.image_name.clone());
                (p.model, p.image_name)
            } else {
                continue;
            };
            tracing::debug!("{image}: {model}: cancelled before it started");
            self.dirty = true;
        }
    }

    pub(super) fn answer_cancelled(&mut self, id: RequestId, reply: Option<Reply>, model: String, image: String) {
        let error = format!("{image}: {model}: cancelled before it started");
        self.answer(reply, Err(InferError::new(id, model, image, error)));
    }

    /// Starts the request whose turn it is, if a lane may take it; false
    /// when nothing could start.
    pub(super) fn start_next(&mut self) -> bool {
        let now = self.now();
        let busy = self.lanes.busy().to_vec();
        // Beside bulk work, interactive images start no closer together
        // than their pace (see `engine::pacer`).
        let paced_ok = self.pacer.may_start(self.now_us(), self.bulk_present());
        // A bulk request whose image is decoded and waits for a lane goes
        // before more bulk images are decoded (memory stays bounded).
        let bulk_ready = self
            .runnable
            .iter()
            .any(|(_, id)| self.requests.get(id).is_some_and(|p| p.class == Class::Bulk));
        let Some(id) = self.scheduler.pop_if(now, |c| {
            lane_for(&busy, c).is_some()
                && match c {
                    Class::Bulk => !bulk_ready,
                    Class::Interactive => paced_ok,
                }
        }) else {
            return false;
        };
        if let Some(st) = self.staged.remove(&id) {
            self.on_infer(id, st);
        }
        true
    }

    /// Starts the first request that is ready to run (its model resident)
    /// and may take a free lane: interactive ones first.
    pub(super) fn start_runnable(&mut self) -> bool {
        let class_of = |id: &RequestId| self.requests.get(id).map(|p| p.class).unwrap_or_default();
        let pick = [Class::Interactive, Class::Bulk].into_iter().find_map(|c| {
            let lane = lane_for(self.lanes.busy(), c)?;
            let at = self.runnable.iter().position(|(_, id)| class_of(id) == c)?;
            Some((at, lane))
        });
        let Some((at, lane)) = pick else { return false };
        let Some((model, id)) = self.runnable.remove(at) else {
            return false;
        };
        self.run_in_lane(lane, model, id);
        true
    }

    /// Answers the waiting requests whose queue timeout has passed.
    pub(super) fn expire_waiting(&mut self) {
        let now = Instant::now();
        let staged = &self.staged;
        let late = self
            .scheduler
            .expire(|id, _| staged.get(&id).and_then(|s| s.deadline).is_some_and(|d| d <= now));
        for id in late {
            let Some(st) = self.staged.remove(&id) else { continue };
            let (image, model) = (st.input.name(), st.model);
            let waited = ms(st.submitted.elapsed());
            let error = format!(
                "{image}: {model}: waited {waited:.0} ms in the queue without starting, past its timeout; retry later or raise the timeout"
            );
            let e = InferError {
                timed_out: true,
                ..InferError::new(id, model, image, error)
            };
            self.answer_failed(e, st.reply);
        }
    }

    /// The earliest queue deadline among waiting requests.
    pub(super) fn next_expiry(&self) -> Option<Instant> {
        self.staged.values().filter_map(|s| s.deadline).min()
    }

    /// An interactive image starts its way to a lane: the pacer spaces the
    /// next one from now (a cache hit or a refused request does not count).
    fn pace_started(&mut self, class: Class) {
        if class == Class::Interactive {
            self.pacer.started(self.now_us());
        }
    }

    /// Request `id`'s turn came: answered from the cache, or read and
    /// handed to a lane to decode (a frame or a tensor goes straight on).
    pub(super) fn on_infer(&mut self, id: RequestId, st: Staged) {
        let Staged {
            class,
            model,
            input,
            params,
            reply,
            submitted,
            deadline: _,
        } = st;
        let name = input.name();
        let fail = |error: String| InferError::new(id, model.clone(), name.clone(), error);
        let Some(entry) = self.registry.get(&model) else {
            let e = fail(format!("unknown model '{model}'"));
            self.answer(reply, Err(e));
            return;
        };
        if params.prompts.is_some() && !entry.manifest.arch.takes_prompts() {
            let e = fail(format!(
                "model '{model}' (arch {}) takes no prompts (points, boxes)",
                entry.manifest.arch
            ));
            self.answer(reply, Err(e));
            return;
        }
        let t0 = Instant::now();
        let limits = self.config.decode_limits;
        // Bytes first: a cache hit must not pay for decoding.
        let (bytes, frame): (Option<Arc<Vec<u8>>>, Option<Arc<RgbImage>>) = match input {
            ImageInput::Path(p) => match read_file_limited(&p, &limits) {
                Ok(b) => (Some(Arc::new(b)), None),
                Err(e) => {
                    self.answer_failed(fail(e.to_string()), reply);
                    return;
                }
            },
            ImageInput::Bytes { bytes, .. } => (Some(bytes), None),
            ImageInput::Frame { image, .. } => (None, Some(image)),
            ImageInput::Tensors { tensors, .. } => {
                self.pace_started(class);
                self.queue_request(
                    id,
                    Pending {
                        class,
                        model: model.clone(),
                        image_name: name,
                        work: Work::Tensors(tensors),
                        params,
                        reply,
                        submitted,
                        decode_ms: 0.0,
                        cache_key: None,
                        unscale: None,
                    },
                );
                return;
            }
        };
        let cache_key = bytes
            .as_ref()
            .map(|b| cache::key(blake3::hash(b).as_bytes(), &model, &params));
        if let Some(r) = cache_key
            .as_ref()
            .and_then(|k| self.cached_answer(id, k, class, &model, &name, submitted))
        {
            self.answer(reply, Ok(r));
            return;
        }
        // It will run (not a cache hit): the pacer counts its start.
        self.pace_started(class);
        let bytes = match (frame, bytes) {
            (Some(image), _) => {
                let p = Pending {
                    class,
                    model: model.clone(),
                    image_name: name,
                    work: Work::Image(image),
                    params,
                    reply,
                    submitted,
                    decode_ms: ms(t0.elapsed()),
                    cache_key,
                    unscale: None,
                };
                self.queue_request(id, p);
                return;
            }
            (None, Some(b)) => b,
            (None, None) => {
                self.answer_failed(fail(format!("{name}: no image data")), reply);
                return;
            }
        };
        let d = Decoding {
            class,
            model,
            image_name: name,
            params,
            reply,
            submitted,
            cache_key,
        };
        self.decode_in_lane(id, d, bytes);
    }

    /// The cached result of request `id` when the cache holds `key`, with
    /// its statistics recorded.
    fn cached_answer(
        &mut self,
        id: RequestId,
        key: &cache::Key,
        class: Class,
        model: &str,
        name: &str,
        submitted: Instant,
    ) -> Option<InferResult> {
        let mut out = self.cache.get(key)?;
        out.cached = true;
        let total = ms(submitted.elapsed());
        let timings = Timings {
            queue: total,
            total,
            ..Default::default()
        };
        self.stats.record(model, &timings, true);
        self.stats.record_queue(class.as_str(), timings.queue);
        Some(InferResult {
            request_id: id,
            model: model.to_string(),
            image: name.to_string(),
            output: out,
            timings,
        })
    }

    /// Decodes request `id`'s image in a lane (decoding is as costly as a
    /// small model), at a reduced scale where the model allows it.
    fn decode_in_lane(&mut self, id: RequestId, d: Decoding, bytes: Arc<Vec<u8>>) {
        let limits = self.config.decode_limits;
        let reduced = self.reduced_side(&d.model);
        let job_name = d.image_name.clone();
        let class = d.class;
        let job = move || {
            let t = Instant::now();
            let image = match reduced.and_then(|side| crate::vision::jpeg_scaled::decode_reduced(&bytes, side, &limits))
            {
                Some(r) => {
                    let unscale = (r.factor(), r.original);
                    Ok((Arc::new(r.image), Some(unscale)))
                }
                None => decode_bytes(&job_name, &bytes, &limits).map(|i| (Arc::new(i), None)),
            };
            LaneOut::Decoded {
                image,
                decode_ms: ms(t.elapsed()),
            }
        };
        self.decoding.insert(id, d);
        match lane_for(self.lanes.busy(), class) {
            Some(lane) => self.lanes.spawn(lane, class, id, job),
            // Not reached (a request starts only when a lane may take it);
            // decoding here keeps the request's answer if it were.
            None => {
                let out = job();
                self.on_decoded(id, out);
            }
        }
    }

    /// A lane finished a job: the request goes on (decoded → parked with the
    /// residency) or is answered (ran), and the lane takes the next job.
    pub(super) fn on_finished(&mut self, f: Finished<LaneOut>) {
        self.dirty = true;
        self.lanes.release(f.lane);
        match f.value {
            Ok(out) => self.on_decoded(f.id, out),
            Err(panic) => {
                if let Some(d) = self.decoding.remove(&f.id) {
                    let error = format!("{}: decoding panicked: {panic}", d.image_name);
                    self.fail_decoding(f.id, d, error);
                } else if let Some(p) = self.running.remove(&f.id) {
                    let error = format!("{}: {} panicked during inference: {panic}", p.image_name, p.model);
                    self.finish_run(f.id, p, Err(crate::Error::msg(error)), Instant::now());
                }
            }
        }
    }

    pub(super) fn fail_decoding(&mut self, id: RequestId, d: Decoding, error: String) {
        self.answer_failed(InferError::new(id, d.model, d.image_name, error), d.reply);
    }

    pub(super) fn on_decoded(&mut self, id: RequestId, out: LaneOut) {
        match out {
            LaneOut::Decoded { image, decode_ms } => {
                let Some(d) = self.decoding.remove(&id) else { return };
                match image {
                    Ok((image, unscale)) => {
                        let p = Pending {
                            class: d.class,
                            model: d.model,
                            image_name: d.image_name,
                            work: Work::Image(image),
                            params: d.params,
                            reply: d.reply,
                            submitted: d.submitted,
                            decode_ms,
                            cache_key: d.cache_key,
                            unscale,
                        };
                        self.queue_request(id, p);
                    }
                    Err(e) => self.fail_decoding(id, d, e.to_string()),
                }
            }
            LaneOut::Ran { result, started } => {
                if let Some(p) = self.running.remove(&id) {
                    if p.class == Class::Interactive {
                        // Its cost beside bulk work paces the next ones.
                        let lane_time = p.decode_ms * 1e3 + started.elapsed().as_secs_f64() * 1e6;
                        let bulk = self.bulk_present();
                        self.pacer.ran(lane_time as u64, bulk);
                    }
                    self.finish_run(id, p, result, started);
                }
            }
        }
    }

    /// The longer side a JPEG may be decoded down to for `model`
    /// ([`crate::catalog::Manifest::reduced_decode_side`]); `None`: full size.
    pub(super) fn reduced_side(&self, model: &str) -> Option<u32> {
        self.registry.get(model)?.manifest.reduced_decode_side()
    }

    /// Parks a request with the residency: it runs once its model is resident.
    pub(super) fn queue_request(&mut self, id: RequestId, p: Pending) {
        let model = p.model.clone();
        self.requests.insert(id, p);
        let now = self.now();
        let a = self.residency.request(&model, id, now);
        self.actions.extend(a);
    }
    /// The residency let request `id` run: in a free lane, or once one is.
    pub(super) fn run_request(&mut self, model: String, id: RequestId) {
        let Some(class) = self.requests.get(&id).map(|p| p.class) else {
            let now = self.now();
            let a = self.residency.request_finished(&model, id, now);
            self.actions.extend(a);
            return;
        };
        // Ready requests keep their order: a new one never passes a waiting one.
        let waiting_same = self
            .runnable
            .iter()
            .any(|(_, r)| self.requests.get(r).is_some_and(|p| p.class == class));
        match lane_for(self.lanes.busy(), class) {
            Some(lane) if !waiting_same => self.run_in_lane(lane, model, id),
            _ => self.runnable.push_back((model, id)),
        }
    }

    pub(super) fn run_in_lane(&mut self, lane: usize, model: String, id: RequestId) {
        let Some(p) = self.requests.remove(&id) else {
            let now = self.now();
            let a = self.residency.request_finished(&model, id, now);
            self.actions.extend(a);
            return;
        };
        let Some(m) = self.models.get(&model).cloned() else {
            let error = crate::Error::msg(format!("{model}: not resident (internal state mismatch)"));
            self.finish_run(id, p, Err(error), Instant::now());
            return;
        };
        let device = self.device.clone().unwrap_or(Device::Cpu);
        let work = match &p.work {
            Work::Image(i) => Work::Image(Arc::clone(i)),
            Work::Tensors(t) => Work::Tensors(Arc::clone(t)),
        };
        let params = p.params;
        let image_name = p.image_name.clone();
        let class = p.class;
        let job = move || {
            let started = Instant::now();
            let result = match &work {
                Work::Image(img) => m.infer_with_masks(img, &params).map(|(d, k, t)| (d, k, t, None)),
                Work::Tensors(x) => crate::models::remote_net::serve_tensors(m.as_ref(), x, &device).map(|y| {
                    let t = ModelTimings {
                        forward: ms(started.elapsed()),
                        ..Default::default()
                    };
                    (Vec::new(), Vec::new(), t, Some(Arc::new(y)))
                }),
            };
            // The model is let go before the worker hears of the end, so an
            // unload that waited for this request frees its memory.
            drop(m);
            LaneOut::Ran {
                result: result.map_err(|e| e.context(format_args!("{image_name}: {model}"))),
                started,
            }
        };
        self.running.insert(id, p);
        self.lanes.spawn(lane, class, id, job);
    }

    /// Answers a request that ran (or failed to) and tells the residency.
    pub(super) fn finish_run(&mut self, id: RequestId, p: Pending, result: crate::Result<RunOutput>, started: Instant) {
        let model = p.model.clone();
        let total = ms(p.submitted.elapsed());
        let answer = match result {
            Ok((mut detections, mut masks, mt, tensors)) => {
                let before = detections.len();
                detections.retain(|d| {
                    d.score.is_finite()
                        && d.bbox.iter().all(|v| v.is_finite())
                        && d.keypoints.iter().all(|k| k.iter().all(|v| v.is_finite()))
                });
                if detections.len() < before {
                    tracing::warn!(
                        "{model}: {}: dropped {} detection(s) with non-finite values",
                        p.image_name,
                        before - detections.len()
                    );
                }
                let timings = Timings {
                    queue: (ms(started.saturating_duration_since(p.submitted)) - p.decode_ms).max(0.0),
                    decode: p.decode_ms,
                    preprocess: mt.preprocess,
                    forward: mt.forward,
                    postprocess: mt.postprocess,
                    total,
                };
                let image_size = match (&p.work, p.unscale) {
                    (_, Some((f, original))) => {
                        for d in &mut detections {
                            d.scale(f.0, f.1);
                        }
                        for m in &mut masks {
                            m.scale(f.0, f.1);
                        }
                        [original.0, original.1]
                    }
                    (Work::Image(i), None) => [i.width(), i.height()],
                    (Work::Tensors(_), None) => [0, 0],
                };
                let output = Output {
                    image_size,
                    detections,
                    masks,
                    cached: false,
                    tensors,
                };
                if let Some(k) = p.cache_key {
                    self.cache.put(k, output.clone());
                }
                self.stats.record(&model, &timings, false);
                self.stats.record_queue(p.class.as_str(), timings.queue);
                Ok(InferResult {
                    request_id: id,
                    model: model.clone(),
                    image: p.image_name,
                    output,
                    timings,
                })
            }
            Err(error) => {
                tracing::error!("{error}");
                self.stats.record_error(&model);
                Err(InferError::new(id, model.clone(), p.image_name, error.to_string()))
            }
        };
        self.answer(p.reply, answer);
        let now = self.now();
        let a = self.residency.request_finished(&model, id, now);
        self.actions.extend(a);
    }
}
