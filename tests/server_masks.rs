//! Output `MASKS` over real HTTP on an ephemeral loopback port: a toy model
//! whose manifest task is `segment` and whose mask is known from the image
//! (red over green), read back with the library's own reply codec.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::*;
use modeldock::catalog::registry::Registry;
use modeldock::engine::Engine;
use modeldock::server::{self, ServerHandle, ServerOptions};
use modeldock::v2::image_infer::{decode_masks, MasksTensor};
use modeldock::vision::Mask;
use serde_json::{json, Value};

struct Served {
    handle: Option<ServerHandle>,
    engine: Engine,
    base: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
        self.engine.shutdown();
    }
}

/// A server with `seg` (task segment, masks) and `plain` (task detect).
fn serve(dir: &std::path::Path) -> Served {
    let seg = toy(dir, "seg", &[("mask_red", 1.0)]);
    let toml = seg.join("model.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(&toml, text.replace("task = \"detect\"", "task = \"segment\"")).unwrap();
    toy(dir, "plain", &[]);
    let engine = Engine::start(Registry::discover(&[dir.to_path_buf()]), config(), None);
    let listener = server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let handle = server::start(engine.clone(), ServerOptions::default(), listener).unwrap();
    let base = format!("http://{}", handle.addr);
    Served {
        handle: Some(handle),
        engine,
        base,
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

/// (status, Inference-Header-Content-Length, body)
fn post(url: &str, body: &[u8], json_body: bool) -> (u16, Option<usize>, Vec<u8>) {
    let mut req = agent().post(url);
    if json_body {
        req = req.header("Content-Type", "application/json");
    }
    let mut r = req.send(body).unwrap();
    let hl = r
        .headers()
        .get("inference-header-content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let st = r.status().as_u16();
    (
        st,
        hl,
        r.body_mut().with_config().limit(64 << 20).read_to_vec().unwrap(),
    )
}

/// A `w`×`h` PNG, red in the top-left quadrant, green elsewhere.
fn quadrant_png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        if x < w / 2 && y < h / 2 {
            image::Rgb([255, 0, 0])
        } else {
            image::Rgb([0, 255, 0])
        }
    });
    let mut c = std::io::Cursor::new(Vec::new());
    img.write_to(&mut c, image::ImageFormat::Png).unwrap();
    c.into_inner()
}

/// A binary request for `images` asking for `outputs` (name, binary).
fn binary_request(images: &[Vec<u8>], outputs: &[(&str, bool)]) -> (Vec<u8>, usize) {
    let mut tail = Vec::new();
    for b in images {
        tail.extend_from_slice(&(b.len() as u32).to_le_bytes());
        tail.extend_from_slice(b);
    }
    let outs: Vec<Value> = outputs
        .iter()
        .map(|(n, b)| json!({"name": n, "parameters": {"binary_data": b}}))
        .collect();
    let head = json!({
        "inputs": [{"name": "IMAGE", "shape": [images.len()], "datatype": "BYTES",
                    "parameters": {"binary_data_size": tail.len()}}],
        "outputs": outs,
    })
    .to_string();
    let n = head.len();
    let mut body = head.into_bytes();
    body.extend_from_slice(&tail);
    (body, n)
}

fn infer_binary(s: &Served, model: &str, images: &[Vec<u8>], outputs: &[(&str, bool)]) -> (Option<usize>, Vec<u8>) {
    let (body, n) = binary_request(images, outputs);
    let mut req = agent().post(&format!("{}/v2/models/{model}/infer", s.base));
    req = req
        .header("Content-Type", "application/octet-stream")
        .header("Inference-Header-Content-Length", n.to_string());
    let mut r = req.send(&body[..]).unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let hl = r
        .headers()
        .get("inference-header-content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    (hl, r.body_mut().with_config().limit(64 << 20).read_to_vec().unwrap())
}

/// The masks in image `i`'s DETECTIONS element.
fn detection_masks(body: &[u8], header_length: Option<usize>, i: usize) -> Vec<Mask> {
    let head: Value = serde_json::from_slice(&body[..header_length.unwrap_or(body.len())]).unwrap();
    let det = head["outputs"]
        .as_array()
        .and_then(|o| o.iter().find(|t| t["name"] == "DETECTIONS"))
        .and_then(|t| t["data"][i].as_str())
        .map(|s| serde_json::from_str::<Value>(s).unwrap())
        .unwrap_or_else(|| panic!("no DETECTIONS[{i}] in {head}"));
    serde_json::from_value(det["masks"].clone()).unwrap()
}

fn masks(body: &[u8], header_length: Option<usize>) -> MasksTensor {
    decode_masks(body, header_length)
        .unwrap()
        .unwrap_or_else(|| panic!("no MASKS in {}", String::from_utf8_lossy(body)))
}

#[test]
fn masks_come_binary_at_the_image_resolution_and_match_the_detections_masks() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path());
    let (hl, body) = infer_binary(
        &s,
        "seg",
        &[quadrant_png(80, 48)],
        &[("DETECTIONS", false), ("MASKS", true)],
    );
    assert!(hl.is_some(), "a binary output makes a binary reply");
    let m = masks(&body, hl);
    assert_eq!(m.shape, [1, 1, 48, 80], "[N, M, H, W]");
    let plane = m.plane(0, 0);
    let at = |x: usize, y: usize| plane[y * 80 + x];
    // The red quadrant is kept, the rest is not (the map is 32×32, so
    // pixels next to the quadrant's edges blend).
    assert_eq!((at(5, 5), at(35, 20)), (255, 255));
    assert_eq!((at(45, 5), at(5, 27), at(70, 40)), (0, 0, 0));
    let kept = plane.iter().filter(|p| **p >= 128).count();
    assert!((40 * 24 - 150..=40 * 24 + 150).contains(&kept), "{kept} pixels kept");
    // The same mask as the DETECTIONS element's PNG, on the image's grid.
    let from_json = detection_masks(&body, hl, 0);
    assert_eq!(from_json.len(), 1);
    assert_eq!(from_json[0].label, "red");
    assert_eq!(from_json[0].to_image(80, 48), plane.to_vec());
}

#[test]
fn a_batch_pads_smaller_images_and_json_replies_carry_the_same_values() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path());
    let images = [quadrant_png(80, 48), quadrant_png(20, 10)];
    let (hl, body) = infer_binary(&s, "seg", &images, &[("MASKS", true)]);
    let bin = masks(&body, hl);
    assert_eq!(bin.shape, [2, 1, 48, 80]);
    let small = bin.plane(1, 0);
    assert_eq!(small[0], 255, "the small image sits at the top left");
    assert_eq!(small[15], 0, "right of its red quadrant");
    assert!(small[20..80].iter().all(|p| *p == 0), "padding right of its 20 columns");
    assert!(small[10 * 80..].iter().all(|p| *p == 0), "padding below its 10 rows");

    // All outputs in JSON (no `outputs` list): MASKS is among them, as numbers.
    let data: Vec<String> = images
        .iter()
        .map(|b| base64::engine::general_purpose::STANDARD.encode(b))
        .collect();
    let req = json!({"inputs": [{"name": "IMAGE", "shape": [2], "datatype": "BYTES", "data": data}]});
    let (st, hl, body) = post(
        &format!("{}/v2/models/seg/infer", s.base),
        req.to_string().as_bytes(),
        true,
    );
    assert_eq!((st, hl), (200, None), "{}", String::from_utf8_lossy(&body));
    assert_eq!(masks(&body, None), bin);
}

#[test]
fn masks_are_listed_and_sent_only_for_models_that_make_them() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path());
    let meta = |m: &str| -> Value {
        let mut r = agent().get(&format!("{}/v2/models/{m}", s.base)).call().unwrap();
        serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap()
    };
    let listed = |v: &Value| {
        v["outputs"]
            .as_array()
            .is_some_and(|o| o.iter().any(|t| t["name"] == "MASKS"))
    };
    let seg = meta("seg");
    assert!(listed(&seg), "{seg}");
    let entry = seg["outputs"]
        .as_array()
        .and_then(|o| o.iter().find(|t| t["name"] == "MASKS"))
        .cloned();
    assert_eq!(entry.map(|e| e["datatype"].clone()), Some(json!("UINT8")));
    assert!(!listed(&meta("plain")));
    let (hl, body) = infer_binary(
        &s,
        "plain",
        &[quadrant_png(16, 16)],
        &[("MASKS", true), ("COUNTS", true)],
    );
    assert_eq!(decode_masks(&body, hl).unwrap(), None, "a detector has no MASKS");
    // A segment model asked only for COUNTS sends no MASKS.
    let (hl, body) = infer_binary(&s, "seg", &[quadrant_png(16, 16)], &[("COUNTS", false)]);
    assert_eq!(decode_masks(&body, hl).unwrap(), None);
}
