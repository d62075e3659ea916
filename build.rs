//! Link settings shared by every crate that links libtorch (members point their `build`
//! key here): libtorch's folder goes on the rpath, so binaries and tests run without
//! LD_LIBRARY_PATH; with `QD_CUDA=1`, libtorch_cuda is linked for real (the linker's
//! `--as-needed` would otherwise drop it, and CUDA would be unavailable at run time).
fn main() {
    println!("cargo:rerun-if-env-changed=QD_CUDA");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    if std::env::var("QD_CUDA").is_ok_and(|v| v == "1") {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
