//! A `.pt` checkpoint (zip + pickle) → modeldock's reader, which executes
//! nothing: the pickle VM on the raw bytes, then the whole checkpoint path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modeldock::import::{pickle, pt as pt_import};

fuzz_target!(|data: &[u8]| {
    // The pickle VM alone, with tight bounds.
    let limits = pickle::Limits {
        max_stack: 1 << 12,
        max_marks: 1 << 8,
        max_memo: 1 << 12,
        max_objects: 1 << 14,
        ..Default::default()
    };
    let _ = pickle::load(data, limits);
    // The checkpoint reader (zip, storages, module tree).
    let _ = pt_import::read_checkpoint_from(std::io::Cursor::new(data), data.len() as u64);
});
