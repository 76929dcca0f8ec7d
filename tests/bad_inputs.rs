//! Corpora of bad images and bad models: each gives a one-line error naming
//! the file and the problem; nothing panics and other models keep serving.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use modeldock::catalog::registry::Registry;
use modeldock::engine::ImageInput;
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
    // Points and boxes go to a model that takes prompts; any other refuses
    // them in the engine, for in-process callers as for the server.
    let prompts =
        modeldock::vision::prompt::Prompts::from_args(&["4,4".to_string()], None).unwrap_or_else(|e| panic!("{e}"));
    let e = engine
        .infer_wait(
            "t",
            ImageInput::Bytes {
                name: "fine".into(),
                bytes: Arc::new(png(9, 9)),
            },
            InferParams {
                prompts,
                ..InferParams::default()
            },
        )
        .err()
        .map(|e| e.error)
        .unwrap_or_default();
    assert!(e.contains("model 't' (arch toy) takes no prompts"), "{e}");
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
fn manifest_errors_name_the_file_the_key_and_what_was_expected() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    toy(d, "base", &[]);
    let base = std::fs::read_to_string(d.join("base/model.toml")).unwrap_or_else(|e| panic!("{e}"));
    let line_of = |text: &str, key: &str| {
        text.lines()
            .position(|l| l.starts_with(key))
            .map(|i| i + 1)
            .unwrap_or_else(|| panic!("no {key} in {text}"))
    };
    let set = |key: &str, value: &str| {
        base.lines()
            .map(|l| {
                if l.starts_with(&format!("{key} =")) {
                    format!("{key} = {value}")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    // The toy's manifest ends with its [options] table.
    let with_option = format!("{base}foo = \"x\"\n");
    let top_level = |line: &str| base.replacen("[options]", &format!("{line}\n[options]"), 1);
    let cases: Vec<(&str, String, String)> = vec![
        (
            "strsize",
            set("input_size", "\"big\""),
            format!(
                "malformed manifest: input_size (line {}): invalid type: string \"big\", expected a whole number (0 or more)",
                line_of(&base, "input_size")
            ),
        ),
        (
            "numweights",
            set("weights", "5"),
            format!(
                "malformed manifest: weights (line {}): expected a file name (a string), a list of shard file names, or a hub reference {{ repo = \"…\", file = \"…\" }}",
                line_of(&base, "weights")
            ),
        ),
        (
            "optstr",
            with_option.clone(),
            format!(
                "malformed manifest: options.foo (line {}): invalid type: string \"x\", expected a number",
                line_of(&with_option, "foo")
            ),
        ),
        (
            "nolicence",
            base.lines()
                .filter(|l| !l.starts_with("licence"))
                .collect::<Vec<_>>()
                .join("\n"),
            "malformed manifest: missing field `licence`".to_string(),
        ),
        ("badconf", top_level("conf = 2.0"), "conf = 2: out of range (0..=1)".to_string()),
        (
            "emptyw",
            set("weights", "\"\""),
            "weights = \"\": empty path (expected a file name relative to the manifest's folder)".to_string(),
        ),
    ];
    for (id, text, _) in &cases {
        let text = text.replace("id = \"base\"", &format!("id = \"{id}\""));
        write(&d.join(format!("{id}/model.toml")), text.as_bytes());
        std::fs::copy(d.join("base/toy.safetensors"), d.join(format!("{id}/toy.safetensors")))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let missing = set("weights", "\"nope.safetensors\"").replace("id = \"base\"", "id = \"missingw\"");
    write(&d.join("missingw/model.toml"), missing.as_bytes());
    let reg = Registry::discover(&[d.to_path_buf()]);
    let problem = |id: &str| {
        let file = d.join(format!("{id}/model.toml")).display().to_string();
        let p = reg
            .problems
            .iter()
            .find(|p| p.starts_with(&file))
            .cloned()
            .unwrap_or_else(|| panic!("no problem for {id}: {:?}", reg.problems));
        assert!(reg.get(id).is_none(), "{id} must be skipped");
        p[file.len()..].trim_start_matches(": ").to_string()
    };
    for (id, _, want) in &cases {
        assert_eq!(&problem(id), want, "{id}");
    }
    assert_eq!(
        problem("missingw"),
        format!(
            "weights file 'nope.safetensors' does not exist (expected it in {})",
            d.join("missingw").display()
        )
    );
    assert!(reg.get("base").is_some(), "{:?}", reg.problems);
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
    // Header with one tensor's offsets reversed.
    toy(d, "reversed", &[]);
    let h: serde_json::Value = serde_json::from_str(&header).unwrap_or_default();
    let (start, end) = (
        h["conv.bias"]["data_offsets"][0].as_u64().unwrap_or(0),
        h["conv.bias"]["data_offsets"][1].as_u64().unwrap_or(0),
    );
    let swapped = header.replacen(&format!("[{start},{end}]"), &format!("[{end},{start}]"), 1);
    assert_ne!(swapped, header, "the toy's header has conv.bias at [{start},{end}]");
    let mut bad = (swapped.len() as u64).to_le_bytes().to_vec();
    bad.extend_from_slice(swapped.as_bytes());
    bad.extend_from_slice(&weights[8 + n..]);
    write(&d.join("reversed/toy.safetensors"), &bad);
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
    // Offsets past the end, or reversed, are caught from the header at
    // registration, naming the manifest, the weights file and the tensor.
    let problem = |id: &str| {
        reg.problems
            .iter()
            .find(|p| p.contains(&format!("{id}/model.toml")))
            .cloned()
            .unwrap_or_default()
    };
    assert!(reg.get("offsets").is_none());
    let data_len = weights.len() - 8 - n;
    let p = problem("offsets");
    assert!(
        p.contains("offsets/toy.safetensors: tensor '")
            && p.contains("' data_offsets [0, 99999")
            && p.ends_with(&format!("] point past the end of the data ({data_len} bytes)")),
        "{p}"
    );
    assert!(reg.get("reversed").is_none());
    let p = problem("reversed");
    assert!(
        p.ends_with(&format!(
            "reversed/toy.safetensors: tensor 'conv.bias' data_offsets [{end}, {start}] are reversed: the start is after the end"
        )),
        "{p}"
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

/// A little-endian classic TIFF: one IFD of (tag, type, count, value) with
/// `None` standing for "the offset of the data after the IFD", then `data`.
fn tiff(entries: &[(u16, u16, u32, Option<u32>)], data: &[u8]) -> Vec<u8> {
    let mut e = entries.to_vec();
    e.sort_by_key(|x| x.0);
    let data_at = 8 + 2 + 12 * e.len() as u32 + 4;
    let mut out = b"II*\0".to_vec();
    out.extend_from_slice(&8u32.to_le_bytes());
    out.extend_from_slice(&(e.len() as u16).to_le_bytes());
    for (tag, typ, count, value) in e {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&typ.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&value.unwrap_or(data_at).to_le_bytes());
    }
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(data);
    out
}

/// A w×h one-strip TIFF: `bits` per sample, `compression` (1 none, 4 CCITT
/// G4, 5 LZW), a strip that declares `strip_bytes` and holds `data`.
fn tiff_strip(w: u32, h: u32, bits: u32, compression: u32, strip_bytes: u32, data: &[u8]) -> Vec<u8> {
    let photometric = if bits == 1 { 0 } else { 1 };
    tiff(
        &[
            (256, 3, 1, Some(w)),
            (257, 3, 1, Some(h)),
            (258, 3, 1, Some(bits)),
            (259, 3, 1, Some(compression)),
            (262, 3, 1, Some(photometric)),
            (273, 4, 1, None),
            (277, 3, 1, Some(1)),
            (278, 3, 1, Some(h)),
            (279, 4, 1, Some(strip_bytes)),
        ],
        data,
    )
}

/// A GIF whose logical screen is `sw`×`sh` and whose one frame is `fw`×`fh`.
fn gif(sw: u16, sh: u16, fw: u16, fh: u16) -> Vec<u8> {
    let mut g = b"GIF89a".to_vec();
    for v in [sw, sh] {
        g.extend_from_slice(&v.to_le_bytes());
    }
    g.extend_from_slice(&[0, 0, 0, b',']);
    for v in [0, 0, fw, fh] {
        g.extend_from_slice(&v.to_le_bytes());
    }
    g.extend_from_slice(&[0x80, 0, 0, 0, 255, 255, 255, 2, 2, 0x4c, 1, 0, b';']);
    g
}

#[test]
fn decode_errors_name_the_file_the_format_the_size_and_what_is_wrong() {
    let lim = DecodeLimits::default();
    let p = png(64, 64);
    // Flip bytes inside the IDAT chunk: the deflate stream breaks.
    let mut deflate = p.clone();
    let idat = deflate.windows(4).position(|w| w == b"IDAT").unwrap_or(0);
    for b in &mut deflate[idat + 8..idat + 24] {
        *b ^= 0x55;
    }
    let pattern = |k: usize| (0..64).map(|i| ((i * k * 37 + k) % 251) as u8).collect::<Vec<u8>>();
    let mut bmp = b"BM".to_vec();
    for v in [100u32, 0, 54, 40, 10, 10] {
        bmp.extend_from_slice(&v.to_le_bytes());
    }
    bmp.extend_from_slice(&1u16.to_le_bytes());
    bmp.extend_from_slice(&24u16.to_le_bytes());
    bmp.extend_from_slice(&[0u8; 24]);
    let cases: Vec<(&str, Vec<u8>, String)> = vec![
        (
            "cut.png",
            p[..p.len() / 2].to_vec(),
            "cut.png: cannot decode PNG image (64x64): the data ends early (truncated file)".into(),
        ),
        (
            "deflate.png",
            deflate,
            "deflate.png: cannot decode PNG image (64x64): Corrupt deflate stream. BadCodeLengthHuffmanTree".into(),
        ),
        (
            "fax_invalid.tif",
            tiff_strip(16, 16, 1, 4, 64, &pattern(8)),
            "fax_invalid.tif: cannot decode TIFF image (16x16): invalid CCITT Group 4 (fax) compressed data".into(),
        ),
        (
            "fax_unsupported.tif",
            tiff_strip(16, 16, 1, 4, 64, &pattern(2)),
            "fax_unsupported.tif: cannot decode TIFF image (16x16): the CCITT Group 4 (fax) data uses a feature the decoder does not support".into(),
        ),
        (
            "lzw.tif",
            tiff_strip(16, 16, 8, 5, 64, &[0xff; 64]),
            "lzw.tif: cannot decode TIFF image (16x16): invalid code in LZW stream".into(),
        ),
        (
            "short_strip.tif",
            tiff_strip(64, 64, 8, 1, 64 * 64, &[0x80; 100]),
            "short_strip.tif: cannot decode TIFF image (64x64): the data ends early (truncated file)".into(),
        ),
        (
            "cut.gif",
            gif(10, 10, 10, 10)[..23].to_vec(),
            "cut.gif: cannot decode GIF image (10x10): the data ends early (truncated file)".into(),
        ),
        (
            "header.bmp",
            bmp,
            "header.bmp: cannot decode BMP image (10x10): the data ends early (truncated file)".into(),
        ),
        (
            "frame_bomb.gif",
            gif(1, 1, 1000, 1000),
            "frame_bomb.gif: the 1x1 GIF image (4 bytes of pixels) needs more memory to decode than the limit of 1.0 MiB (1048576 bytes): a frame in it is larger than the image".into(),
        ),
        (
            "strip_bomb.tif",
            tiff_strip(4, 4, 8, 5, 50_000_000, &[0xff; 300]),
            "strip_bomb.tif: the 4x4 TIFF image (16 bytes of pixels) needs more memory to decode than the limit of 1.0 MiB (1048576 bytes): a strip, tile or tag in it holds more than the image needs".into(),
        ),
        (
            "notes.jpg",
            b"these are my notes".to_vec(),
            "notes.jpg: not an image (unrecognised format: starts with bytes 74 68 65 73; expected PNG, JPEG, BMP, GIF, WebP or TIFF)".into(),
        ),
        (
            "bomb.png",
            png_claiming(100_000, 100_000),
            "bomb.png: 100000x100000 is 10000000000 pixels, above the 64000000 pixel limit".into(),
        ),
    ];
    for (name, bytes, want) in cases {
        let r = std::panic::catch_unwind(|| decode_bytes(name, &bytes, &lim));
        let r = r.unwrap_or_else(|_| panic!("{name}: decoding panicked"));
        let e = r
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| panic!("{name}: decoded"));
        assert!(!e.contains('\n'), "one line: {e}");
        assert_eq!(e, want, "{name}");
        assert!(
            !e.contains("Decode Error") && !e.contains("Memory limit exceeded"),
            "{e}"
        );
    }
    // A wrong IDAT checksum: the message names the chunk, without Rust's Debug noise.
    let mut crc = p.clone();
    let len = u32::from_be_bytes([crc[idat - 4], crc[idat - 3], crc[idat - 2], crc[idat - 1]]) as usize;
    let stored = u32::from_be_bytes([
        crc[idat + 4 + len],
        crc[idat + 5 + len],
        crc[idat + 6 + len],
        crc[idat + 7 + len],
    ]);
    crc[idat + 4 + len + 3] ^= 1;
    let e = decode_bytes("crc.png", &crc, &lim)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert_eq!(
        e,
        format!(
            "crc.png: cannot decode PNG image (64x64): CRC error: expected 0x{:08x} have 0x{stored:08x} while decoding IDAT chunk",
            stored ^ 1
        )
    );

    // Over the file-size limit: the size and the limit, in bytes and for people.
    let small = DecodeLimits {
        max_bytes: 100,
        ..DecodeLimits::default()
    };
    let e = decode_bytes("big.png", &png(64, 64), &small)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    let n = png(64, 64).len();
    assert_eq!(
        e,
        format!(
            "big.png: file is {n} bytes ({}), above the image file limit of 100 B (100 bytes)",
            modeldock::units::human_bytes(n as u64)
        )
    );
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let f = dir.path().join("huge.png");
    std::fs::write(&f, vec![0u8; 3 << 20]).unwrap_or_else(|e| panic!("{e}"));
    let e = modeldock::vision::decode::read_file_limited(
        &f,
        &DecodeLimits {
            max_bytes: 2 << 20,
            ..DecodeLimits::default()
        },
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert_eq!(
        e,
        format!(
            "{}: file is 3145728 bytes (3.0 MiB), above the image file limit of 2.0 MiB (2097152 bytes)",
            f.display()
        )
    );
}

/// Safetensors bytes: `header` (JSON) then `data` zero bytes.
fn safetensors(header: serde_json::Value, data: usize) -> Vec<u8> {
    let h = header.to_string();
    let mut b = (h.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(h.as_bytes());
    b.extend(std::iter::repeat_n(0u8, data));
    b
}

#[test]
fn safetensors_header_errors_name_the_file_the_tensor_and_expected_against_actual() {
    use serde_json::json;
    let f32s = |shape: &[u64], a: u64, b: u64| json!({"dtype": "F32", "shape": shape, "data_offsets": [a, b]});
    let cases: Vec<(&str, serde_json::Value, usize, &str)> = vec![
        (
            "reversed",
            json!({"conv.weight": f32s(&[2], 8, 0)}),
            8,
            "tensor 'conv.weight' data_offsets [8, 0] are reversed: the start is after the end",
        ),
        (
            "past_end",
            json!({"conv.weight": f32s(&[4], 0, 16)}),
            8,
            "tensor 'conv.weight' data_offsets [0, 16] point past the end of the data (8 bytes)",
        ),
        (
            "size",
            json!({"conv.weight": f32s(&[8, 3, 3, 3], 0, 800)}),
            800,
            "tensor 'conv.weight' (F32, shape [8, 3, 3, 3]) needs 864 bytes, but its data_offsets [0, 800] hold 800",
        ),
        (
            "half_size",
            json!({"b": {"dtype": "F16", "shape": [3], "data_offsets": [0, 12]}}),
            12,
            "tensor 'b' (F16, shape [3]) needs 6 bytes, but its data_offsets [0, 12] hold 12",
        ),
        (
            "gap",
            json!({"a": f32s(&[1], 0, 4), "b": f32s(&[1], 8, 12)}),
            12,
            "tensor 'b' data_offsets [8, 12] leave a gap of 4 bytes: tensor 'a' ends at byte 4, expected this tensor to start there",
        ),
        (
            "overlap",
            json!({"a": f32s(&[2], 0, 8), "b": f32s(&[1], 4, 8)}),
            8,
            "tensor 'b' data_offsets [4, 8] leave an overlap of 4 bytes: tensor 'a' ends at byte 8, expected this tensor to start there",
        ),
        (
            "late_start",
            json!({"a": f32s(&[1], 4, 8)}),
            8,
            "tensor 'a' data_offsets [4, 8] leave a gap of 4 bytes: the data starts at byte 0, expected this tensor to start there",
        ),
        (
            "trailing",
            json!({"a": f32s(&[1], 0, 4)}),
            10,
            "6 bytes after the last tensor ('a' ends at byte 4) belong to no tensor: the data section is 10 bytes, the tensors cover 4",
        ),
        (
            "dtype",
            json!({"w": {"dtype": "F31", "shape": [1], "data_offsets": [0, 4]}}),
            4,
            "tensor 'w' has unknown dtype \"F31\" (expected one of F32, F16, BF16, F64, U8, U16, U32, I16, I32, I64, F8_E4M3, F8_E8M0, F6_E2M3, F6_E3M2, F4)",
        ),
        (
            "bool",
            json!({"mask": {"dtype": "BOOL", "shape": [4], "data_offsets": [0, 4]}}),
            4,
            "tensor 'mask' has dtype BOOL, which modeldock cannot load (expected one of F32, F16, BF16, F64, U8, U16, U32, I16, I32, I64, F8_E4M3, F8_E8M0, F6_E2M3, F6_E3M2, F4)",
        ),
        (
            "bits",
            json!({"q": {"dtype": "F4", "shape": [3], "data_offsets": [0, 2]}}),
            2,
            "tensor 'q' (F4, shape [3]) is 12 bits, not a whole number of bytes",
        ),
        (
            "overflow",
            json!({"w": f32s(&[1 << 40, 1 << 40], 0, 4)}),
            4,
            "tensor 'w' (F32, shape [1099511627776, 1099511627776]) is too large: its byte size overflows",
        ),
        (
            "shape",
            json!({"w": {"dtype": "F32", "shape": [2, -1], "data_offsets": [0, 8]}}),
            8,
            "tensor 'w' shape [2,-1]: expected a list of non-negative integers",
        ),
        (
            "offsets",
            json!({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0]}}),
            4,
            "tensor 'w' data_offsets [0]: expected [start, end], two byte offsets",
        ),
        (
            "no_dtype",
            json!({"w": {"shape": [1], "data_offsets": [0, 4]}}),
            4,
            "tensor 'w' has no dtype",
        ),
        (
            "metadata",
            json!({"__metadata__": {"format": 3}, "w": f32s(&[1], 0, 4)}),
            4,
            "__metadata__ {\"format\":3}: expected an object of string values",
        ),
    ];
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for (name, header, data, want) in cases {
        let bytes = safetensors(header, data);
        let e = modeldock::catalog::safetensors_header::header_of_bytes(&bytes)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| panic!("{name}: accepted"));
        assert_eq!(e, want, "{name}");
        // From a file, the message starts with the file.
        let f = dir.path().join(format!("{name}.safetensors"));
        std::fs::write(&f, &bytes).unwrap_or_else(|e| panic!("{e}"));
        let e = modeldock::catalog::safetensors_header::read_header(&f)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(e, format!("{}: {want}", f.display()), "{name}");
        // Loading goes through the same check, so candle never sees the file.
        let e = modeldock::models::weights::CountingBackend::open(
            &modeldock::catalog::weights_source::WeightsSource::File(f.clone()),
            0,
            Arc::new(|_, _| {}),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert_eq!(e, format!("{}: {want}", f.display()), "{name}");
        assert!(!e.contains("invalid shape, data type, or offset"), "{e}");
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]

    /// Whatever our header check accepts, candle reads: every tensor problem
    /// is found (and named) by the check, never by candle.
    #[test]
    fn what_the_header_check_accepts_candle_loads(
        tensors in proptest::collection::vec(
            // Mostly well-formed (skew 0), so that many cases pass the check.
            (0usize..6, proptest::collection::vec(0u64..5, 0..3), proptest::sample::select(vec![0i64, 0, 0, 0, -2, 3])),
            0..4,
        ),
        extra in proptest::sample::select(vec![0usize, 0, 0, 2]),
        shuffle in proptest::bool::ANY,
    ) {
        let dtypes = [("F32", 4u64), ("F16", 2), ("BF16", 2), ("I64", 8), ("U8", 1), ("BOOL", 1)];
        let mut header = serde_json::Map::new();
        let mut at = 0u64;
        for (i, (d, shape, skew)) in tensors.iter().enumerate() {
            let (dtype, w) = dtypes[*d];
            let n: u64 = shape.iter().product::<u64>() * w;
            let end = (at + n).saturating_add_signed(*skew);
            let (a, b) = if shuffle && i % 2 == 1 { (end, at) } else { (at, end) };
            header.insert(
                format!("t{i}"),
                serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [a, b]}),
            );
            at = end.max(at);
        }
        let bytes = safetensors(serde_json::Value::Object(header), at as usize + extra);
        let ours = modeldock::catalog::safetensors_header::header_of_bytes(&bytes);
        let theirs = candle_core::safetensors::SliceSafetensors::new(&bytes);
        if ours.is_ok() {
            let st = theirs.unwrap_or_else(|e| panic!("candle refuses what the check accepts: {e}"));
            for (name, _) in st.tensors() {
                st.load(&name, &candle_core::Device::Cpu)
                    .unwrap_or_else(|e| panic!("candle cannot load {name}: {e}"));
            }
        }
    }
}

#[test]
fn a_tensor_entry_with_a_field_twice_is_refused_naming_it() {
    // Found by the safetensors_header fuzzer: JSON keeps the last `shape`,
    // candle's reader refuses the file; our check must refuse it first.
    let bytes = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/regressions/safetensors_header/duplicate-shape-field"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let err = modeldock::catalog::safetensors_header::header_of_bytes(&bytes)
        .err()
        .unwrap_or_else(|| panic!("accepted a header with two `shape` fields"))
        .to_string();
    assert!(
        err.contains("tensor '_'") && err.contains("duplicate field `shape`"),
        "{err}"
    );
    assert!(candle_core::safetensors::SliceSafetensors::new(&bytes).is_err());
}

#[test]
fn a_tensor_named_twice_is_refused_naming_it() {
    // Found by the safetensors_header fuzzer: the first of two entries named
    // `s` is malformed; a JSON map keeps only the second, candle's reader
    // refuses the file; our check must refuse it first.
    let bytes = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/regressions/safetensors_header/duplicate-tensor-name"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let err = modeldock::catalog::safetensors_header::header_of_bytes(&bytes)
        .err()
        .unwrap_or_else(|| panic!("accepted a header naming a tensor twice"))
        .to_string();
    assert!(err.contains("tensor 's' is named twice"), "{err}");
    assert!(candle_core::safetensors::SliceSafetensors::new(&bytes).is_err());
}
