//! Image bytes → `decode_bytes` (small limits) → the preprocessing every
//! model runs. Nothing here may panic or abort.
//!
//! `decode_bytes` contains panics of the image decoders themselves (a known
//! `tiff` panic, see tests/fixtures/bad_inputs): such a file gets an error, by
//! design. libfuzzer-sys's panic hook would abort on those too, so while
//! `decode_bytes` runs, a panic is reported once per location and left to
//! unwind; if modeldock does not catch it, libfuzzer-sys aborts as usual.
//! `FUZZ_STRICT_DECODER=1` makes contained decoder panics crash as well.
#![no_main]

use std::cell::Cell;
use std::collections::HashSet;
use std::sync::{Mutex, Once};

use libfuzzer_sys::fuzz_target;
use modeldock::vision::decode::{decode_bytes, DecodeLimits};
use modeldock::vision::preprocess::FloatImage;

thread_local! {
    static IN_DECODE: Cell<bool> = const { Cell::new(false) };
}

fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("FUZZ_STRICT_DECODER").is_some_and(|v| v == "1") {
            return;
        }
        let seen: Mutex<HashSet<String>> = Mutex::default();
        let abort_hook = std::panic::take_hook(); // libfuzzer-sys's: print, then abort
        std::panic::set_hook(Box::new(move |info| {
            if IN_DECODE.with(Cell::get) {
                let at = info.location().map(|l| l.to_string()).unwrap_or_default();
                if seen.lock().map(|mut s| s.insert(at.clone())).unwrap_or(false) {
                    eprintln!("fuzz: panic inside decode_bytes at {at} (contained unless it escapes): {info}");
                }
                return;
            }
            abort_hook(info);
        }));
    });
}

fuzz_target!(|data: &[u8]| {
    install_hook();
    let limits = DecodeLimits {
        max_bytes: 1 << 20,
        max_pixels: 4_000_000,
    };
    IN_DECODE.with(|f| f.set(true));
    let decoded = decode_bytes("fuzz", data, &limits);
    IN_DECODE.with(|f| f.set(false));
    let Ok(img) = decoded else { return };
    assert!(
        img.width() > 0 && img.height() > 0,
        "decode_bytes returned an empty image"
    );
    assert!(img.width() as u64 * img.height() as u64 <= limits.max_pixels);

    let f = FloatImage::from_rgb(&img);
    // The models' steps: tiny face detector (bottom/right padding, straight
    // from 8-bit pixels, which must give the float path's values) and the
    // landmark nets (a crop, centred padding), then plain resizes at sizes
    // taken from the input's last bytes.
    let a = FloatImage::pad_square_resize_tf_rgb(&img, false, 64);
    assert_eq!((a.width, a.height, a.data.len()), (64, 64, 64 * 64 * 3));
    let a_f = f.pad_square_resize_tf(false, 64);
    assert!(
        a.data.iter().zip(&a_f.data).all(|(x, y)| x.to_bits() == y.to_bits()),
        "pad_square_resize_tf_rgb differs from pad_square_resize_tf"
    );
    let n = data.len();
    let byte = |k: usize| data[n - 1 - k % n] as usize;
    let (iw, ih) = (img.width() as usize, img.height() as usize);
    let (x, y) = (byte(2) % iw, byte(3) % ih);
    let (cw, ch) = (1 + byte(4) % (iw - x), 1 + byte(5) % (ih - y));
    let crop = FloatImage::from_rgb_region(&img, x, y, cw, ch);
    assert_eq!(crop.data.len(), cw * ch * 3);
    let b = crop.pad_square_resize_tf(true, 32);
    assert_eq!(b.data.len(), 32 * 32 * 3);
    let (w, h) = (1 + byte(0) % 96, 1 + byte(1) % 96);
    let r = f.resize_bilinear_tf(w, h);
    assert_eq!(r.data.len(), w * h * 3);
    let r = f.resize_area(w, h);
    assert_eq!(r.data.len(), w * h * 3);
    let _ = a.to_nchw([117.001, 114.697, 97.404], 255.0, &candle_core::Device::Cpu);
});
