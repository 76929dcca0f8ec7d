//! An ONNX model's bytes → `import::onnx::parse` (protobuf decoding, tensor
//! size checks, lowering onto the graph executor's IR) and `build` (op
//! compilation, conv weight packing): the whole load path of `import onnx`
//! and `verify --onnx` minus reading the file. External data points into a
//! folder that does not exist, so it is refused like a missing file. The
//! graph is not run (an arbitrary graph may ask for any amount of work);
//! nothing here may panic or allocate beyond what the input holds.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(model) = modeldock::import::onnx::parse(data, Path::new("/nonexistent/modeldock-fuzz")) else {
        return;
    };
    let _ = model.build();
    let _ = model.tensors();
});
