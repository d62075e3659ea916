//! Compiles `qd.proto` with the protoc binary vendored by `protoc-bin-vendored`, so no
//! system protoc is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    config.bytes(["."]);
    // Every message is checked before it is decoded (src/codec.rs).
    tonic_prost_build::configure()
        .codec_path("crate::codec::BoundedCodec")
        .compile_with_config(config, &["qd.proto"], &["."])?;
    Ok(())
}
