//! Ultralytics `.pt` checkpoints: imported without Python and without running
//! the pickle (tests/fixtures/yolov8n-pt), and hostile or broken files refused.

mod common;

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use candle_core::{Device, IndexOp, Tensor};
use common::{fixture, no_server};
use modeldock::catalog::registry::load_manifest_file;
use modeldock::import::pt as pt_import;

fn load(rel: &str, name: &str) -> Tensor {
    let mut t = candle_core::safetensors::load(fixture(rel), &Device::Cpu).unwrap_or_else(|e| panic!("{rel}: {e}"));
    t.remove(name).unwrap_or_else(|| panic!("{rel}: {name}"))
}

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_scalar())
        .unwrap_or(f32::INFINITY)
}

fn checkpoint() -> PathBuf {
    fixture("yolov8n-pt/yolov8n-random.pt")
}

fn modeldock(args: &[&std::ffi::OsStr]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_modeldock"))
        .env("MODELDOCK_HOST", no_server())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn imported_checkpoint_matches_the_ultralytics_output() {
    let dir = tempdir();
    let w = pt_import::import(&checkpoint(), dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(w.tensors, 298);
    // Load it the way the engine does: through its model.toml.
    let entry = load_manifest_file(&dir.path().join("model.toml")).unwrap_or_else(|e| panic!("{e}"));
    let source = entry.weights_source(false).unwrap_or_else(|e| panic!("{e}"));
    let model = modeldock::models::build(
        &entry.manifest,
        &source,
        entry.predicted_bytes,
        &Device::Cpu,
        Arc::new(|_, _| {}),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let input = load("yolov8n-random/input.safetensors", "input");
    let expected = load("yolov8n-pt/output.safetensors", "output");
    let out = model.forward_raw(&input).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.dims(), &[1, 84, 8400]);
    let part = |t: &Tensor, r: std::ops::Range<usize>| t.i((.., r)).unwrap_or_else(|e| panic!("{e}"));
    let boxes = max_abs(&part(&out, 0..4), &part(&expected, 0..4));
    let scores = max_abs(&part(&out, 4..84), &part(&expected, 4..84));
    println!("box rows max abs diff {boxes:.3e} px, score rows {scores:.3e}");
    assert!(scores <= 1e-4, "scores differ by {scores}");
    assert!(boxes <= 2e-2, "boxes differ by {boxes} px");
}

fn verify_pt(variant: &str, expected: &Path) -> Output {
    let (ck, input) = (checkpoint(), fixture("yolov8n-random/input.safetensors"));
    modeldock(&[
        "verify".as_ref(),
        "--arch".as_ref(),
        "yolov8".as_ref(),
        "--variant".as_ref(),
        variant.as_ref(),
        "--json".as_ref(),
        "--weights".as_ref(),
        ck.as_os_str(),
        "--input".as_ref(),
        input.as_os_str(),
        "--expected".as_ref(),
        expected.as_os_str(),
    ])
}

#[test]
fn verify_takes_the_checkpoint_directly() {
    let expected = fixture("yolov8n-pt/output.safetensors");
    let out = verify_pt("n", &expected);
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(0), "{v}");
    assert_eq!(v["pass"], true);
    // The wrong variant is named, not a shape error deep in the network.
    let out = verify_pt("s", &expected);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("YOLOv8n detect checkpoint") && err.contains("--variant n"),
        "{err}"
    );
}

#[test]
fn manifest_has_task_variant_labels_and_input_size() {
    let dir = tempdir();
    let out_dir = dir.path().join("yolov8n-random");
    let ck = checkpoint();
    let out = modeldock(&[
        "import".as_ref(),
        "pt".as_ref(),
        ck.as_os_str(),
        "--out".as_ref(),
        out_dir.as_os_str(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("yolov8n-random.safetensors") && stdout.contains("model.toml"),
        "{stdout}"
    );
    let entry = load_manifest_file(&out_dir.join("model.toml")).unwrap_or_else(|e| panic!("{e}"));
    let m = &entry.manifest;
    assert_eq!(m.task, modeldock::catalog::Task::Detect);
    assert_eq!(m.arch, modeldock::catalog::Arch::Yolov8);
    assert_eq!(m.variant, "n");
    assert_eq!(m.input_size, 640);
    assert_eq!(m.dtype, "f32");
    assert_eq!(m.labels.len(), 80);
    // The fixture's model.names are '0'..'79', not the COCO names.
    assert_eq!(m.labels[0], "0");
    assert_eq!(m.labels[79], "79");
    assert_eq!(m.id, "yolov8n-random");
    assert!(
        m.provenance.as_deref().unwrap_or("").contains("ultralytics 8.4.190"),
        "{:?}",
        m.provenance
    );
    // The weights are f32 with state_dict names.
    let w = candle_core::safetensors::load(out_dir.join("yolov8n-random.safetensors"), &Device::Cpu)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(w.values().all(|t| t.dtype() == candle_core::DType::F32));
    assert!(w.contains_key("model.22.dfl.conv.weight"));
    assert!(w.contains_key("model.0.bn.running_var"));
    assert!(!w.keys().any(|k| k.ends_with("num_batches_tracked")));
}

/// A zip-format checkpoint holding `entries` (STORED, as torch writes them).
fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in entries {
        z.start_file(*name, opts).unwrap_or_else(|e| panic!("{e}"));
        z.write_all(bytes).unwrap_or_else(|e| panic!("{e}"));
    }
    z.finish().unwrap_or_else(|e| panic!("{e}")).into_inner()
}

/// `os.system(cmd)` as protocol-2 GLOBAL + REDUCE.
fn system_via_global(cmd: &str) -> Vec<u8> {
    let mut p = vec![0x80, 2];
    p.extend(b"cos\nsystem\n");
    p.push(b'X');
    p.extend((cmd.len() as u32).to_le_bytes());
    p.extend(cmd.as_bytes());
    p.extend([0x85, b'R', b'.']); // TUPLE1, REDUCE, STOP
    p
}

/// `os.system(cmd)` as protocol-4 STACK_GLOBAL + REDUCE, inside a dict like a checkpoint's.
fn system_via_stack_global(cmd: &str) -> Vec<u8> {
    let mut p = vec![0x80, 4, b'}', 0x8c, 5];
    p.extend(b"model");
    p.extend([0x8c, 2]);
    p.extend(b"os");
    p.extend([0x8c, 6]);
    p.extend(b"system");
    p.push(0x93);
    p.push(b'X');
    p.extend((cmd.len() as u32).to_le_bytes());
    p.extend(cmd.as_bytes());
    p.extend([0x85, b'R', b's', b'.']); // TUPLE1, REDUCE, SETITEM, STOP
    p
}

/// A pickled state dict `{name: float32 tensor}` as torch writes it:
/// (name, storage key, storage elements, shape), row-major strides.
fn state_dict_pickle(tensors: &[(&str, &str, u32, &[u32])]) -> Vec<u8> {
    let short = |p: &mut Vec<u8>, s: &str| {
        p.extend([0x8c, s.len() as u8]);
        p.extend(s.as_bytes());
    };
    let int = |p: &mut Vec<u8>, v: u32| {
        p.push(b'J');
        p.extend(v.to_le_bytes());
    };
    let mut p = vec![0x80, 2, b'}', b'('];
    for (name, key, numel, shape) in tensors {
        short(&mut p, name);
        p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((");
        short(&mut p, "storage");
        p.extend(b"ctorch\nFloatStorage\n");
        short(&mut p, key);
        short(&mut p, "cpu");
        int(&mut p, *numel);
        p.extend([b't', b'Q']);
        int(&mut p, 0);
        p.push(b'(');
        for d in *shape {
            int(&mut p, *d);
        }
        p.extend([b't', b'(']);
        for i in 0..shape.len() {
            int(&mut p, shape[i + 1..].iter().product());
        }
        p.extend([b't', 0x89, b'}', b't', b'R']);
    }
    p.extend([b'u', b'.']);
    p
}

fn one_line_error(path: &Path) -> String {
    let e = pt_import::read_checkpoint(path)
        .err()
        .unwrap_or_else(|| panic!("{} was accepted", path.display()))
        .to_string();
    assert!(!e.contains('\n'), "not one line: {e}");
    assert!(
        e.starts_with(&path.display().to_string()),
        "does not name the file: {e}"
    );
    e
}

#[test]
fn a_malicious_pickle_is_refused_and_nothing_runs() {
    let dir = tempdir();
    let marker = dir.path().join("pwned");
    let cmd = format!("touch {}", marker.display());
    for (i, pkl) in [system_via_global(&cmd), system_via_stack_global(&cmd)]
        .iter()
        .enumerate()
    {
        let pt = dir.path().join(format!("evil{i}.pt"));
        std::fs::write(&pt, zip_of(&[("evil/data.pkl", pkl), ("evil/byteorder", b"little")]))
            .unwrap_or_else(|e| panic!("{e}"));
        let e = one_line_error(&pt);
        assert_eq!(
            e,
            format!(
                "{}: data.pkl: refusing global 'os.system' (not a checkpoint type)",
                pt.display()
            )
        );
        // Through the CLI: exit 1, one line naming the global, nothing written.
        let out_dir = dir.path().join(format!("out{i}"));
        let out = modeldock(&[
            "import".as_ref(),
            "pt".as_ref(),
            pt.as_os_str(),
            "--out".as_ref(),
            out_dir.as_os_str(),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains("refusing global 'os.system'"), "{err}");
        assert!(!out_dir.join("model.toml").exists());
    }
    assert!(!marker.exists(), "the payload ran");
}

#[test]
fn truncated_or_garbage_checkpoints_fail_with_one_line_naming_the_file() {
    let dir = tempdir();
    let real = std::fs::read(checkpoint()).unwrap_or_else(|e| panic!("{e}"));
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap_or_else(|e| panic!("{e}"));
        p
    };

    // Not a zip at all; an empty file; the real file cut in half (no central directory).
    for (name, bytes) in [
        ("garbage.pt", b"this is not a checkpoint \x00\x01\x02".repeat(50)),
        ("empty.pt", Vec::new()),
        ("half.pt", real[..real.len() / 2].to_vec()),
    ] {
        let e = one_line_error(&write(name, &bytes));
        assert!(e.contains("not a zip-format torch checkpoint"), "{e}");
    }

    // A flipped byte inside a storage: the CRC check catches it.
    let mut flipped = real.clone();
    let at = real.len() / 2;
    flipped[at] ^= 0x55;
    let e = one_line_error(&write("flipped.pt", &flipped));
    assert!(e.contains("entry") || e.contains("data.pkl"), "{e}");

    // A zip without data.pkl.
    let e = one_line_error(&write("nopkl.pt", &zip_of(&[("x/other", b"1")])));
    assert!(e.contains("data.pkl"), "{e}");

    // A pickle cut short: every prefix of a good one.
    let pkl = state_dict_pickle(&[("w", "0", 4, &[4])]);
    let e = one_line_error(&write("cut.pt", &zip_of(&[("a/data.pkl", &pkl[..pkl.len() / 2])])));
    assert!(e.contains("data.pkl: truncated"), "{e}");
    for n in 0..pkl.len() {
        let z = zip_of(&[("a/data.pkl", &pkl[..n]), ("a/data/0", &[0u8; 16])]);
        let len = z.len() as u64;
        let e = pt_import::read_checkpoint_from(Cursor::new(z), len)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.starts_with("data.pkl: truncated") || (n == 0 && e.contains("data.pkl")),
            "{n}: {e}"
        );
    }

    // A storage shorter than the pickle declares: refused before it is read.
    let conv = ("model.0.conv.weight", "0", 432, &[16u32, 3, 3, 3][..]);
    let cls = ("model.22.cv3.0.2.bias", "1", 80, &[80u32][..]);
    let p = state_dict_pickle(&[conv, cls]);
    let e = one_line_error(&write(
        "short.pt",
        &zip_of(&[("s/data.pkl", &p), ("s/data/0", &[0u8; 40]), ("s/data/1", &[0u8; 320])]),
    ));
    assert!(
        e.contains("tensor 'model.0.conv.weight': entry 'data/0' is 40 bytes; the pickle declares 1728"),
        "{e}"
    );
    // A view reaching past its storage.
    let p = state_dict_pickle(&[("model.0.conv.weight", "0", 10, &[16, 3, 3, 3]), cls]);
    let e = one_line_error(&write(
        "view.pt",
        &zip_of(&[("s/data.pkl", &p), ("s/data/0", &[0u8; 40]), ("s/data/1", &[0u8; 320])]),
    ));
    assert!(e.contains("reaches past its 10 element storage"), "{e}");
    // The same pickle writer with well-sized storages imports (so the cases above fail for their reason).
    let p = state_dict_pickle(&[conv, cls]);
    let ok = write(
        "ok.pt",
        &zip_of(&[
            ("s/data.pkl", &p),
            ("s/data/0", &[0u8; 1728]),
            ("s/data/1", &[0u8; 320]),
        ]),
    );
    let ck = pt_import::read_checkpoint(&ok).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((ck.variant.as_str(), ck.task.as_str(), ck.nc()), ("n", "detect", 80));
    // A state dict that is no YOLOv8.
    let p = state_dict_pickle(&[("w", "0", 4, &[4])]);
    let e = one_line_error(&write(
        "plain.pt",
        &zip_of(&[("s/data.pkl", &p), ("s/data/0", &[0u8; 16])]),
    ));
    assert!(e.contains("not a YOLOv8 checkpoint"), "{e}");

    // Through the CLI as well.
    let bad = write("garbage2.pt", b"PK\x03\x04 not really");
    let out_dir = dir.path().join("out");
    let out = modeldock(&[
        "import".as_ref(),
        "pt".as_ref(),
        bad.as_os_str(),
        "--out".as_ref(),
        out_dir.as_os_str(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains(&bad.display().to_string()), "{err}");
}

/// A Segment Anything state dict (`sam_vit_*.pth`, `mobile_sam.pt`) imports
/// as an `arch = "sam"` model whose variant its patch embedding tells; a
/// checkpoint that lacks what the network needs then fails to load in one
/// line naming the tensor.
#[test]
#[cfg(feature = "sam")]
fn sam_state_dicts_import_as_sam_models_of_the_right_variant() {
    let dir = tempdir();
    for (dim, patch, variant) in [
        (768u32, "image_encoder.patch_embed.proj.weight", "vit_b"),
        (1280, "image_encoder.patch_embed.proj.weight", "vit_h"),
        (8, "image_encoder.patch_embed.seq.0.c.weight", "vit_t"),
    ] {
        let tensors = [
            (patch, "0", dim * 3, &[dim, 3, 1, 1][..]),
            (
                "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
                "1",
                4,
                &[2u32, 2][..],
            ),
            ("mask_decoder.iou_token.weight", "2", 4, &[1u32, 4][..]),
        ];
        let pkl = state_dict_pickle(&tensors);
        let zeros = vec![0u8; dim as usize * 12];
        let file = dir.path().join(format!("sam_{variant}.pth"));
        std::fs::write(
            &file,
            zip_of(&[
                ("a/data.pkl", &pkl),
                ("a/data/0", &zeros),
                ("a/data/1", &[0u8; 16]),
                ("a/data/2", &[0u8; 16]),
            ]),
        )
        .unwrap();
        let out = dir.path().join(variant);
        let o = modeldock(&[
            "import".as_ref(),
            "pt".as_ref(),
            file.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let m = load_manifest_file(&out.join("model.toml"))
            .unwrap_or_else(|e| panic!("{e}"))
            .manifest;
        assert_eq!(m.arch.name(), "sam", "{variant}");
        assert_eq!(m.variant, variant);
        assert_eq!(m.input_size, 1024);
        let models = dir.path().display().to_string();
        let img = fixture("images/astronaut.png");
        let o = modeldock(&[
            "infer".as_ref(),
            "--local".as_ref(),
            "--models-dir".as_ref(),
            models.as_ref(),
            "--model".as_ref(),
            m.id.as_ref(),
            "--point".as_ref(),
            "5,5".as_ref(),
            img.as_os_str(),
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        eprintln!("{variant}: {err}");
        assert!(!o.status.success(), "{variant}: a partial checkpoint loaded");
        assert!(err.contains(&m.id) && err.contains("image_encoder"), "{variant}: {err}");
    }
}
