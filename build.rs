//! Compiles `proto/` with protox (pure Rust, so no system `protoc`) and generates the tonic
//! services. The descriptor set is written as protox encoded it: decoding it into
//! `prost_types` and encoding again would drop custom options such as `google.api.http`, which
//! reflection clients and the HTTP gateway read.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "tally/v1/users.proto",
    "tally/v1/sessions.proto",
    "tally/v1/roles.proto",
    "tally/v1/accounts.proto",
    "tally/v1/transfers.proto",
    "tally/v1/audit.proto",
    "tally/v1/exchange.proto",
    "tally/v1/events.proto",
    "tally/v1/webhooks.proto",
    // Error details, so reflection clients and the gateway can decode them.
    "google/rpc/status.proto",
    "google/rpc/error_details.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    // sqlx::migrate! embeds migrations/ at compile time but cannot tell cargo so on stable Rust:
    // without this, an edited migration is not rebuilt into the binary.
    println!("cargo:rerun-if-changed=migrations");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(PROTOS)?;
    std::fs::write(
        out_dir.join("tally_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // google.rpc.Status in CreateTransferResult: tonic-types' own type, so the rich error
        // helpers apply to it.
        .extern_path(".google.rpc", "::tonic_types::pb")
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
