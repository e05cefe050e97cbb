//! Compiles the protos in `proto/` with `protox` (pure Rust, no system
//! `protoc`) and hands the descriptors to `tonic-prost-build`: prost
//! messages always, and with the `service` feature also the gRPC client and
//! server of `StatusUpdateManager` and the descriptor set for reflection.
//! Without the feature the generated code refers to no tonic item.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "mesos/mesos.proto",
    "mesos/messages.proto",
    "status_update_manager/v1/service.proto",
    "status_update_manager/v1/native.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed=proto/{proto}");
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let service = std::env::var_os("CARGO_FEATURE_SERVICE").is_some();

    let fds = protox::Compiler::new(["proto"])?
        .include_imports(true)
        .include_source_info(true)
        .open_files(PROTOS)?
        .file_descriptor_set();

    let builder = tonic_prost_build::configure().include_file("protos.rs");
    if service {
        // Kept beside the generated code for server reflection.
        std::fs::write(
            out_dir.join("descriptor.bin"),
            prost::Message::encode_to_vec(&fds),
        )?;
        builder
            // Bad input is INVALID_ARGUMENT, not prost's INTERNAL (src/service/codec.rs).
            .codec_path("crate::service::codec::ValidatingCodec")
            .compile_fds(fds)?;
    } else {
        builder
            .build_client(false)
            .build_server(false)
            .compile_fds(fds)?;
    }
    Ok(())
}
