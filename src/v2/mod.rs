//! The Open Inference Protocol v2 on the wire, in one room: the only place
//! that knows the JSON tensor layout and Triton's binary tensor extension.
//! Pure functions over bytes (fuzzed without a socket): `head` parses a
//! message's JSON head once into typed tensor entries, `body` writes every
//! message and reads the binary part; on top of them `image_infer` (image
//! requests in, detections out; the CLI/app client's image request) and
//! `tensor_infer` (a network's FP32 tensor in and out, for the server and
//! the remote backends).

pub mod body;
pub mod error_body;
pub mod head;
pub mod image_infer;
pub mod named_tensors;
pub mod prompt_tensors;
pub mod tensor_infer;

pub use tensor_infer::Tensor32;

/// The request and response header of the binary tensor extension, as
/// HTTP sees it (header names are case-insensitive).
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// The same header as people spell it, for messages and CORS lists.
pub const HEADER_LENGTH_NAME: &str = "Inference-Header-Content-Length";

/// The request headers a page may send a v2 server (CORS preflight).
pub const CORS_ALLOWED_HEADERS: &str = "Authorization, Content-Type, Inference-Header-Content-Length";

/// The parameter that gives a tensor's byte count in the binary part.
pub const BINARY_DATA_SIZE: &str = "binary_data_size";
