//! The command line, declared with clap: every subcommand, its flags and the
//! engine flags they share. `main` parses it and dispatches.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::camera::SourceSpec;
pub use crate::setup::EngineFlags;

/// Where a modeldock server is: the `MODELDOCK_HOST` variable or `--host` of the client commands.
#[derive(Args, Debug, Clone, Default)]
pub struct ServerFlags {
    /// The modeldock server to use: host:port or a URL [default: 127.0.0.1:8765]
    #[arg(long = "server", value_name = "HOST:PORT", env = "MODELDOCK_HOST")]
    pub server: Option<String>,
    /// A header sent with every request to that server, e.g. an access token
    /// (repeatable; MODELDOCK_REMOTE_HEADERS="Name=Value;Name2=Value2" adds more)
    #[arg(long = "remote-header", value_name = "NAME=VALUE")]
    pub remote_header: Vec<String>,
}

impl ServerFlags {
    /// Sends the remote headers (`MODELDOCK_REMOTE_HEADERS`, `--remote-header`)
    /// to the server these flags name, or to `remote` when given.
    pub fn apply_remote_headers(&self, remote: Option<&str>) -> crate::error::Result<()> {
        let base = crate::client::base_url(remote.or(self.server.as_deref()))?;
        crate::backend::transport::set_remote_headers(&base, &self.remote_header)
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "modeldock",
    version,
    about = "Run vision models on a local GPU or CPU: loaded once, when needed, never on the UI thread.",
    long_about = None,
    args_conflicts_with_subcommands = true,
    after_help = "With no command, opens the desktop app.\nLogging: MODELDOCK_LOG (or RUST_LOG) takes EnvFilter directives, e.g. modeldock=debug,wgpu=warn."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub app: AppArgs,
}

/// Flags of the desktop app (no command).
#[derive(Args, Debug, Clone, Default)]
pub struct AppArgs {
    #[command(flatten)]
    pub engine: EngineFlags,
    #[command(flatten)]
    pub server: ServerFlags,
    /// Images to open at start (repeatable)
    #[arg(long, value_name = "IMAGE")]
    pub open: Vec<PathBuf>,
    /// The Viewer's model
    #[arg(long, value_name = "ID")]
    pub model: Option<String>,
    /// Start the Live panel on this source: synthetic, webcam[:N] or a folder
    #[arg(long, value_name = "SOURCE")]
    pub live: Option<SourceSpec>,
    /// Close the window after this many seconds and print timing figures
    #[arg(long, value_name = "SECS", value_parser = positive_secs)]
    pub exit_after: Option<f64>,
    /// Do not sample GPU / system telemetry
    #[arg(long)]
    pub no_telemetry: bool,
    /// Do not serve the engine's API on loopback while the app runs
    #[arg(long)]
    pub no_serve: bool,
    /// Drive a remote Open Inference Protocol v2 server (modeldock, Triton,
    /// KServe, MLServer) instead of a local engine
    #[arg(long, value_name = "URL")]
    pub remote: Option<String>,
    /// Where the remote server's Prometheus metrics are [default: URL/metrics,
    /// then port 8002 of the same host (Triton's)]
    #[arg(long, value_name = "URL", requires = "remote")]
    pub remote_metrics: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Every registered model, its state and size
    Models(ModelsArgs),
    /// Run a model on images, folders or globs
    Infer(InferArgs),
    /// Time loads, inference, the cache and concurrency
    Bench(BenchArgs),
    /// Download a model's weights from the Hugging Face Hub into its cache (HF_ENDPOINT, HF_TOKEN, HF_HOME, HF_HUB_OFFLINE)
    Pull(PullArgs),
    /// Convert foreign weights into a modeldock model folder
    #[command(subcommand)]
    Import(ImportCommand),
    /// The live pipeline without a window
    Live(LiveArgs),
    /// Compare a network's raw output with a reference tensor
    Verify(VerifyArgs),
    /// What the GPU / System panel shows (MODELDOCK_NVML_LIB picks libnvidia-ml)
    Gpu(GpuArgs),
    /// Run the engine and serve it over HTTP (Open Inference Protocol v2 + /api + /metrics)
    Serve(ServeArgs),
    /// Models a running server holds in memory (like `ollama ps`)
    Ps(PsArgs),
    /// Load a model on the running server, with a progress bar
    Load(LoadArgs),
    /// Unload a model (or all) on the running server
    Unload(UnloadArgs),
    /// Keep a model in memory on the running server
    Pin(PinArgs),
    /// Let a pinned model leave memory again
    Unpin(PinArgs),
    /// Shell completions: modeldock completions bash|zsh|fish
    Completions(CompletionsArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ModelsArgs {
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub engine: EngineFlags,
    #[command(flatten)]
    pub server: ServerFlags,
}

#[derive(Args, Debug, Clone)]
pub struct InferArgs {
    /// The model id (see `modeldock models`)
    #[arg(long, value_name = "ID")]
    pub model: String,
    /// Confidence threshold (0..1) [default: the model's]
    #[arg(long, value_name = "F", value_parser = unit_interval)]
    pub conf: Option<f32>,
    /// IoU threshold of non-maximum suppression (0..1) [default: the model's]
    #[arg(long, value_name = "F", value_parser = unit_interval)]
    pub iou: Option<f32>,
    /// One JSON line per input, in input order
    #[arg(long)]
    pub json: bool,
    /// Write annotated copies and one JSON file per image into DIR
    #[arg(long, value_name = "DIR")]
    pub save: Option<PathBuf>,
    /// How --save draws masks: tint, blur (the background) or replace:#RRGGBB (the background)
    #[arg(long, value_name = "STYLE", default_value = "tint", value_parser = crate::vision::mask_overlay::parse_mode)]
    pub mask_style: crate::vision::mask_overlay::MaskMode,
    /// A point prompt for promptable segmentation (SAM): X,Y in image
    /// pixels, or X,Y,0 for a point outside the object; repeatable
    #[arg(long = "point", value_name = "X,Y[,LABEL]")]
    pub points: Vec<String>,
    /// A box prompt for promptable segmentation (SAM): X0,Y0,X1,Y1 in image pixels
    #[arg(long = "box", value_name = "X0,Y0,X1,Y1")]
    pub bbox: Option<String>,
    /// Run in this process even when a server answers
    #[arg(long)]
    pub local: bool,
    /// Image files, folders or glob patterns
    #[arg(value_name = "IMAGE", required = true)]
    pub inputs: Vec<String>,
    #[command(flatten)]
    pub engine: EngineFlags,
    #[command(flatten)]
    pub server: ServerFlags,
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// The model to time [default: a 16 MiB toy model written to a temporary folder]
    #[arg(long, value_name = "ID")]
    pub model: Option<String>,
    /// Random weights of the right shapes instead of the real ones
    #[arg(long)]
    pub random_weights: bool,
    /// The image to run [default: a generated test card]
    #[arg(long, value_name = "PATH")]
    pub image: Option<PathBuf>,
    /// Timed runs per figure (at least 3)
    #[arg(long, value_name = "N", default_value_t = 30)]
    pub runs: usize,
    /// Compare the model in this process with the same model over HTTP (loopback, keep-alive)
    #[arg(long)]
    pub http: bool,
    /// The loader at scale: write an N GiB toy model (one file, and shards) and time its loads against streaming the files, cold and warm, with peak RSS
    #[arg(long, value_name = "N", conflicts_with_all = ["model", "http"])]
    pub weights_gib: Option<f64>,
    /// The loader on Segment Anything: write random SAM weights of VARIANT (vit_b, vit_l, vit_h, vit_t; one file, and shards) and time their loads as --weights-gib does
    #[arg(long, value_name = "VARIANT", conflicts_with_all = ["model", "http", "weights_gib"])]
    pub sam_weights: Option<String>,
    /// Shards of the `--weights-gib` or `--sam-weights` model
    #[arg(long, value_name = "K", default_value_t = 4)]
    pub shards: usize,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub engine: EngineFlags,
}

#[derive(Args, Debug, Clone)]
pub struct PullArgs {
    /// A model id whose manifest names hub weights (see `modeldock models`), or a Hub repo: org/name[@REVISION]
    #[arg(value_name = "MODEL|REPO[@REVISION]")]
    pub target: String,
    /// The file in the repo (needed with a repo)
    #[arg(value_name = "FILE")]
    pub file: Option<String>,
    /// Times an interrupted download resumes before the command gives up
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub retries: usize,
    #[command(flatten)]
    pub catalog: crate::setup::CatalogFlags,
}

#[derive(Subcommand, Debug, Clone)]
pub enum ImportCommand {
    /// A tfjs weights manifest (model.json) → safetensors + model.toml
    Tfjs {
        #[arg(value_name = "MANIFEST.json")]
        manifest: PathBuf,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Merge another manifest's weights under PREFIX
        #[arg(long, value_name = "PREFIX=MANIFEST.json")]
        add: Vec<String>,
    },
    /// An ONNX model (Ultralytics YOLO detect/pose/segment exports, or any graph as raw tensors) → safetensors (weights + graph) + model.toml
    Onnx {
        #[arg(value_name = "MODEL.onnx")]
        model: PathBuf,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The model id (default: the file's stem)
        #[arg(long, value_name = "ID")]
        id: Option<String>,
        /// auto (from the model's metadata, else its shapes), yolo, yolo-pose, yolo-seg or raw (the graph's tensors in and out over v2)
        #[arg(long, value_name = "FAMILY", default_value = "auto")]
        family: String,
    },
    /// An Ultralytics YOLOv8 detect/pose checkpoint (.pt) → safetensors + model.toml (no Python, nothing executed)
    Pt {
        #[arg(value_name = "FILE.pt")]
        checkpoint: PathBuf,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(Args, Debug, Clone)]
pub struct LiveArgs {
    /// synthetic, webcam[:N] or a folder of images
    #[arg(long, value_name = "SOURCE", default_value = "synthetic")]
    pub source: SourceSpec,
    #[arg(long, value_name = "ID")]
    pub model: Option<String>,
    #[arg(long, value_name = "N", default_value_t = 300)]
    pub frames: u64,
    #[arg(long, value_name = "F", default_value_t = 30.0, value_parser = positive_secs)]
    pub fps: f64,
    /// Frame size of synthetic and webcam sources
    #[arg(long, value_name = "WxH", default_value = "640x480")]
    pub size: String,
    #[arg(long, value_name = "F", value_parser = unit_interval)]
    pub conf: Option<f32>,
    #[arg(long)]
    pub mirror: bool,
    /// Run a hands model's palm detector on every frame instead of tracking
    /// hands between frames (the single-image pipeline)
    #[arg(long)]
    pub no_track: bool,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub engine: EngineFlags,
    /// The frames go to the modeldock server when one answers (at
    /// interactive priority, beside its other clients), else to an engine
    /// in this process
    #[command(flatten)]
    pub server: ServerFlags,
}

#[derive(Args, Debug, Clone)]
pub struct VerifyArgs {
    /// yolov8, tiny_face_detector, face_landmarks_68, nanodet, movenet, palm_detector, hand_landmarks
    #[arg(long, required_unless_present = "onnx", default_value = "")]
    pub arch: String,
    /// An ONNX model, run on the graph executor as `import onnx` would store it
    /// (inputs and outputs named as in the graph)
    #[arg(long, value_name = "MODEL.onnx", conflicts_with_all = ["weights"])]
    pub onnx: Option<PathBuf>,
    #[arg(long, default_value = "n")]
    pub variant: String,
    #[arg(long, default_value = "detect")]
    pub task: String,
    /// safetensors, or an Ultralytics checkpoint (.pt) for yolov8
    #[arg(long, value_name = "W", required_unless_present = "onnx")]
    pub weights: Option<PathBuf>,
    #[arg(long, value_name = "I")]
    pub input: PathBuf,
    #[arg(long, value_name = "O")]
    pub expected: PathBuf,
    /// Absolute tolerance
    #[arg(long, default_value_t = 1e-3)]
    pub tol: f64,
    /// Relative tolerance: |diff| <= tol + rtol·|expected|
    #[arg(long, default_value_t = 3e-5)]
    pub rtol: f64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct GpuArgs {
    #[arg(long)]
    pub json: bool,
    /// Keep printing
    #[arg(long)]
    pub watch: bool,
    #[arg(long, value_name = "SECS", default_value_t = 1.0, value_parser = positive_secs)]
    pub interval: f64,
    /// Stop after N readings (with --watch)
    #[arg(long, value_name = "N")]
    pub count: Option<usize>,
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to bind; anything but loopback needs MODELDOCK_API_KEY or --insecure-no-api-key
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = crate::setup::DEFAULT_PORT)]
    pub port: u16,
    /// Requests waiting for the engine before new ones get 503 + Retry-After
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_queue: u32,
    /// Images one client (one connection) may have waiting at once [default: half of --max-queue]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_queue_per_client: Option<u32>,
    /// Largest request body
    #[arg(long, value_name = "SIZE", default_value = "256MiB")]
    pub max_body: String,
    /// Seconds a client has to send its request and a request has to be answered
    #[arg(long, value_name = "SECS", default_value_t = 120.0, value_parser = positive_secs)]
    pub timeout: f64,
    /// Bearer token clients must send (required off loopback)
    #[arg(long, env = "MODELDOCK_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Bearer token that allows inference and reading only (no load, unload, pin)
    #[arg(long, env = "MODELDOCK_INFER_KEY", hide_env_values = true)]
    pub infer_key: Option<String>,
    /// Serve a non-loopback address without an API key
    #[arg(long)]
    pub insecure_no_api_key: bool,
    #[command(flatten)]
    pub engine: EngineFlags,
}

#[derive(Args, Debug, Clone)]
pub struct PsArgs {
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerFlags,
}

#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    #[arg(value_name = "ID")]
    pub model: String,
    /// Idle time before this model is unloaded: 5m, 30s, 0, -1 (never)
    #[arg(long, value_name = "D")]
    pub keep_alive: Option<crate::units::KeepAlive>,
    /// Keep it in memory until unpinned
    #[arg(long)]
    pub pin: bool,
    /// Say what the load would do (size, evictions, headroom or the refusal), changing nothing
    #[arg(long, conflicts_with_all = ["keep_alive", "pin"])]
    pub dry_run: bool,
    /// With --dry-run: the plan as JSON
    #[arg(long, requires = "dry_run")]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerFlags,
}

#[derive(Args, Debug, Clone)]
pub struct UnloadArgs {
    #[arg(value_name = "ID", required_unless_present = "all", conflicts_with = "all")]
    pub model: Option<String>,
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub server: ServerFlags,
}

#[derive(Args, Debug, Clone)]
pub struct PinArgs {
    #[arg(value_name = "ID")]
    pub model: String,
    #[command(flatten)]
    pub server: ServerFlags,
}

#[derive(Args, Debug, Clone)]
pub struct CompletionsArgs {
    pub shell: clap_complete::Shell,
}

fn unit_interval(s: &str) -> crate::Result<f32> {
    let v: f32 = s
        .parse()
        .map_err(|_| crate::Error::usage(format!("'{s}' is not a number")))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(crate::Error::usage(format!("{v} is outside 0..1")))
    }
}

fn positive_secs(s: &str) -> crate::Result<f64> {
    let v: f64 = s
        .parse()
        .map_err(|_| crate::Error::usage(format!("'{s}' is not a number")))?;
    if v > 0.0 && v.is_finite() {
        Ok(v)
    } else {
        Err(crate::Error::usage(format!("'{s}' must be a positive number")))
    }
}
