//! Compiles `proto/` with protox (pure Rust), so a fresh machine needs no system `protoc`. The same
//! descriptor set is written to OUT_DIR for server reflection.

use prost::Message;
use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/suppress/v1/suppression.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    // `sqlx::migrate!` embeds the migration folders; a new file there must rebuild the crate.
    println!("cargo:rerun-if-changed=migrations");
    let fds = protox::compile(protos, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(out.join("suppress_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        // prost's codec, but a request that does not decode is INVALID_ARGUMENT, not INTERNAL.
        .codec_path("crate::proto::codec::Codec")
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
