//! Writes random-initialised SAM weights from a seed (`models::sam_random`),
//! the input of `tests/python/sam_reference.py` and of big-model loads:
//!
//!     cargo run --release --example sam_random_weights -- VARIANT SEED DIR [SHARDS]
//!
//! VARIANT is vit_b, vit_l, vit_h or vit_t (MobileSAM). Prints the file a
//! manifest's `weights` names.

use std::path::PathBuf;

use modeldock::models::sam::Variant;
use modeldock::models::sam_random::write_sam_weights;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: sam_random_weights VARIANT SEED DIR [SHARDS]";
    let (Some(v), Some(seed), Some(dir)) = (args.first(), args.get(1), args.get(2)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let Some(variant) = Variant::parse(v) else {
        eprintln!("variant '{v}': one of {}", Variant::NAMES.join(", "));
        std::process::exit(2);
    };
    let (Ok(seed), Ok(shards)) = (seed.parse::<u64>(), args.get(3).map_or(Ok(1), |s| s.parse::<usize>())) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let dir = PathBuf::from(dir);
    let stem = format!("sam-{v}-seed{seed}");
    let made = std::fs::create_dir_all(&dir)
        .map_err(|e| modeldock::error::Error::msg(format!("{}: {e}", dir.display())))
        .and_then(|_| write_sam_weights(variant, seed, &dir, &stem, shards));
    match made {
        Ok(file) => println!("{}", dir.join(file).display()),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
