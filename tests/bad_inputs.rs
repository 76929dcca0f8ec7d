//! Corpora of bad images and bad models: each gives a one-line error naming
//! the file and the problem; nothing panics and other models keep serving.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use modeldock::engine::ImageInput;
use modeldock::models::registry::Registry;
use modeldock::vision::decode::{decode_bytes, DecodeLimits};
use modeldock::vision::InferParams;

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    !c
}

/// A real PNG whose IHDR claims `w`×`h` (CRC fixed so decoders read the header).
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut p = png(8, 8);
    p[16..20].copy_from_slice(&w.to_be_bytes());
    p[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&p[12..29]);
    p[29..33].copy_from_slice(&crc.to_be_bytes());
    p
}

fn jpeg(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 7]));
    let mut c = std::io::Cursor::new(Vec::new());
    img.write_to(&mut c, image::ImageFormat::Jpeg)
        .unwrap_or_else(|e| panic!("{e}"));
    c.into_inner()
}

fn encoded(img: image::DynamicImage) -> Vec<u8> {
    let mut c = std::io::Cursor::new(Vec::new());
    img.write_to(&mut c, image::ImageFormat::Png)
        .unwrap_or_else(|e| panic!("{e}"));
    c.into_inner()
}

fn one_line_naming(err: &str, name: &str, problem: &str) {
    assert!(!err.contains('\n'), "one line: {err}");
    assert!(err.contains(name), "names the file: {err}");
    assert!(err.to_lowercase().contains(problem), "says '{problem}': {err}");
}

#[test]
fn bad_images_give_one_line_errors() {
    let lim = DecodeLimits::default();
    let p = png(64, 64);
    let j = jpeg(64, 64);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated.png", p[..p.len() / 2].to_vec(), "decode"),
        ("truncated.jpg", j[..j.len() / 3].to_vec(), "decode"),
        ("empty.png", Vec::new(), "empty"),
        (
            "notes.jpg",
            b"these are my notes, not a picture\n".to_vec(),
            "not an image",
        ),
        ("bomb.png", png_claiming(100_000, 100_000), "pixel limit"),
        ("big.tif", b"II+\0\x08\0\0\0\x10\0\0\0\0\0\0\0".to_vec(), "bigtiff"),
    ];
    for (name, bytes, problem) in cases {
        let r = std::panic::catch_unwind(|| decode_bytes(name, &bytes, &lim));
        let r = r.unwrap_or_else(|_| panic!("{name}: decoding panicked"));
        let e = r
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| panic!("{name}: decoded"));
        one_line_naming(&e, name, problem);
    }
}

#[test]
fn odd_but_valid_images_become_rgb8() {
    let lim = DecodeLimits::default();
    let gray = encoded(image::DynamicImage::ImageLuma8(image::GrayImage::from_pixel(
        5,
        4,
        image::Luma([77]),
    )));
    let img = decode_bytes("gray.png", &gray, &lim).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((img.width(), img.height(), img.get_pixel(0, 0).0), (5, 4, [77, 77, 77]));
    let deep = image::ImageBuffer::<image::Rgb<u16>, _>::from_pixel(3, 3, image::Rgb([65535u16, 0, 32896]));
    let img = decode_bytes("deep.png", &encoded(image::DynamicImage::ImageRgb16(deep)), &lim)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(img.get_pixel(1, 1).0, [255, 0, 128]);
    let rgba = image::RgbaImage::from_pixel(2, 2, image::Rgba([10, 20, 30, 0]));
    let img = decode_bytes("alpha.png", &encoded(image::DynamicImage::ImageRgba8(rgba)), &lim)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(img.get_pixel(0, 0).0, [10, 20, 30]);
    // CMYK JPEG: left half cyan, right half white.
    let b = std::fs::read(fixture("bad_images/cmyk.jpg")).unwrap_or_else(|e| panic!("{e}"));
    let img = decode_bytes("cmyk.jpg", &b, &lim).unwrap_or_else(|e| panic!("{e}"));
    let (l, r) = (img.get_pixel(5, 15).0, img.get_pixel(35, 15).0);
    assert!(l[0] < 60 && l[1] > 180 && l[2] > 180, "cyan: {l:?}");
    assert!(r.iter().all(|&v| v > 200), "white: {r:?}");
    // EXIF orientation 6: stored 40×20 (green left, red right), shown 20×40 with green on top.
    let b = std::fs::read(fixture("bad_images/exif_rotated.jpg")).unwrap_or_else(|e| panic!("{e}"));
    let img = decode_bytes("exif_rotated.jpg", &b, &lim).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((img.width(), img.height()), (20, 40));
    let (top, bottom) = (img.get_pixel(10, 5).0, img.get_pixel(10, 35).0);
    assert!(top[1] > 150 && top[0] < 80, "green on top: {top:?}");
    assert!(bottom[0] > 150 && bottom[1] < 80, "red below: {bottom:?}");
}

#[test]
fn a_bad_image_through_the_engine_fails_alone() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    toy(dir.path(), "t", &[]);
    let (engine, _) = engine_for(dir.path(), config());
    let bad = dir.path().join("holiday.jpg");
    std::fs::write(&bad, b"not really").unwrap_or_else(|e| panic!("{e}"));
    let e = engine
        .infer_wait("t", ImageInput::Path(bad.clone()), InferParams::default())
        .err()
        .map(|e| e.error)
        .unwrap_or_default();
    one_line_naming(&e, "holiday.jpg", "not an image");
    let missing = dir.path().join("nowhere.png");
    let e = engine
        .infer_wait("t", ImageInput::Path(missing), InferParams::default())
        .err()
        .map(|e| e.error)
        .unwrap_or_default();
    assert!(e.contains("nowhere.png"), "{e}");
    let ok = engine.infer_wait(
        "t",
        ImageInput::Bytes {
            name: "fine".into(),
            bytes: Arc::new(png(9, 9)),
        },
        InferParams::default(),
    );
    assert!(ok.is_ok());
    engine.shutdown();
}

fn write(p: &Path, b: &[u8]) {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("{e}"));
    }
    std::fs::write(p, b).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn bad_manifests_are_reported_and_skipped_and_the_rest_register() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    toy(d, "good", &[]);
    write(&d.join("broken/model.toml"), b"id = \"broken\"\nname = [unclosed\n");
    write(
        &d.join("noweights/model.toml"),
        b"id = \"noweights\"\nname = \"x\"\ntask = \"detect\"\narch = \"toy\"\ninput_size = 32\nlicence = \"x\"\n",
    );
    let escape = "id = \"escape\"\nname = \"x\"\ntask = \"detect\"\narch = \"toy\"\nweights = \"../good/toy.safetensors\"\ninput_size = 32\nlicence = \"x\"\n";
    write(&d.join("escape/model.toml"), escape.as_bytes());
    let outside = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let secret = outside.path().join("secret.safetensors");
    std::fs::copy(d.join("good/toy.safetensors"), &secret).unwrap_or_else(|e| panic!("{e}"));
    let abs = format!(
        "id = \"absolute\"\nname = \"x\"\ntask = \"detect\"\narch = \"toy\"\nweights = \"{}\"\ninput_size = 32\nlicence = \"x\"\n",
        secret.display()
    );
    write(&d.join("absolute/model.toml"), abs.as_bytes());
    #[cfg(unix)]
    {
        write(
            &d.join("linked/model.toml"),
            escape
                .replace("escape", "linked")
                .replace("../good/toy.safetensors", "w.safetensors")
                .as_bytes(),
        );
        std::os::unix::fs::symlink(&secret, d.join("linked/w.safetensors")).unwrap_or_else(|e| panic!("{e}"));
    }
    write(&d.join("badsize/model.toml"), b"id = \"badsize\"\nname = \"x\"\ntask = \"detect\"\narch = \"toy\"\nweights = \"w\"\ninput_size = 0\nlicence = \"x\"\n");

    let reg = Registry::discover(&[d.to_path_buf()]);
    assert!(
        reg.get("good").is_some(),
        "the good model registers: {:?}",
        reg.problems
    );
    for id in ["broken", "noweights", "escape", "absolute", "linked", "badsize"] {
        assert!(reg.get(id).is_none(), "{id} must be skipped");
    }
    let find = |dir: &str| {
        reg.problems
            .iter()
            .find(|p| p.contains(&format!("{dir}/model.toml")))
            .cloned()
            .unwrap_or_default()
    };
    assert!(find("broken").contains("malformed manifest"), "{:?}", reg.problems);
    assert!(find("noweights").contains("weights"), "{:?}", reg.problems);
    assert!(
        find("escape").contains("escapes the model folder"),
        "{:?}",
        reg.problems
    );
    assert!(
        find("absolute").contains("escapes the model folder"),
        "{:?}",
        reg.problems
    );
    #[cfg(unix)]
    assert!(
        find("linked").contains("escapes the model folder"),
        "{:?}",
        reg.problems
    );
    assert!(find("badsize").contains("input_size"), "{:?}", reg.problems);
    for p in &reg.problems {
        assert!(!p.contains('\n'), "one line: {p}");
    }
}

#[test]
fn bad_weight_files_fail_their_load_with_the_file_and_problem() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    toy(d, "good", &[]);
    let weights = std::fs::read(d.join("good/toy.safetensors")).unwrap_or_else(|e| panic!("{e}"));
    // Truncated: header intact, data cut.
    toy(d, "truncated", &[]);
    write(&d.join("truncated/toy.safetensors"), &weights[..weights.len() - 40]);
    // Header claims offsets past the end.
    toy(d, "offsets", &[]);
    let n = u64::from_le_bytes(weights[..8].try_into().unwrap_or([0; 8])) as usize;
    let header = String::from_utf8_lossy(&weights[8..8 + n]).to_string();
    let grown = header.replacen("\"data_offsets\":[0,", "\"data_offsets\":[0,99999", 1);
    let mut bad = (grown.len() as u64).to_le_bytes().to_vec();
    bad.extend_from_slice(grown.as_bytes());
    bad.extend_from_slice(&weights[8 + n..]);
    write(&d.join("offsets/toy.safetensors"), &bad);
    // Wrong shapes and missing tensors.
    toy(d, "shapes", &[]);
    let mut t = std::collections::HashMap::new();
    let dev = candle_core::Device::Cpu;
    let z =
        |s: &[usize]| candle_core::Tensor::zeros(s, candle_core::DType::F32, &dev).unwrap_or_else(|e| panic!("{e}"));
    t.insert("conv.weight".to_string(), z(&[8, 3, 5, 5]));
    t.insert("conv.bias".to_string(), z(&[8]));
    t.insert("head.weight".to_string(), z(&[5, 8]));
    t.insert("head.bias".to_string(), z(&[5]));
    candle_core::safetensors::save(&t, d.join("shapes/toy.safetensors")).unwrap_or_else(|e| panic!("{e}"));
    toy(d, "missing", &[]);
    t.remove("head.bias");
    t.insert("conv.weight".to_string(), z(&[8, 3, 3, 3]));
    candle_core::safetensors::save(&t, d.join("missing/toy.safetensors")).unwrap_or_else(|e| panic!("{e}"));

    let reg = Registry::discover(&[d.to_path_buf()]);
    // Offsets past the end are caught from the header at registration.
    assert!(reg.get("offsets").is_none());
    assert!(
        reg.problems
            .iter()
            .any(|p| p.contains("offsets/model.toml") && p.contains("past the end")),
        "{:?}",
        reg.problems
    );
    let truncated_at_start = reg.get("truncated").is_none();
    let engine = modeldock::engine::Engine::start(reg, config(), None);
    let img = || ImageInput::Bytes {
        name: "i.png".into(),
        bytes: Arc::new(png(9, 9)),
    };
    let mut expect = vec![("shapes", "shape"), ("missing", "missing tensor 'head.bias'")];
    if !truncated_at_start {
        expect.push(("truncated", "toy.safetensors"));
    }
    for (id, problem) in expect {
        let e = engine
            .infer_wait(id, img(), InferParams::default())
            .err()
            .map(|e| e.error)
            .unwrap_or_default();
        assert!(e.contains("toy.safetensors") && e.contains(problem), "{id}: {e}");
        assert!(!e.contains('\n'), "{e}");
        wait_state(&engine, id, "Failed");
        assert!(
            engine.infer_wait("good", img(), InferParams::default()).is_ok(),
            "others keep serving"
        );
    }
    engine.shutdown();
}
