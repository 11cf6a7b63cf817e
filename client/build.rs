//! Generates the client half of `suppress.v1` from the workspace's `proto/` with protox (pure Rust,
//! no `protoc`), as the server's build.rs does: one contract, two independent code generations, so
//! a client never links the server.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../proto/suppress/v1/suppression.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["../proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}
