//! libtorch facts: what `qd info` prints and what every role logs at start-up.

/// The libtorch build qd runs on.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TorchInfo {
    pub cuda_available: bool,
    pub cuda_devices: i64,
    pub cudnn_available: bool,
    pub threads: i32,
}

/// Reads the facts from the linked libtorch.
pub fn info() -> TorchInfo {
    TorchInfo {
        cuda_available: tch::Cuda::is_available(),
        cuda_devices: tch::Cuda::device_count(),
        cudnn_available: tch::Cuda::cudnn_is_available(),
        threads: tch::get_num_threads(),
    }
}

/// Sets the number of intra-op threads libtorch uses (several processes share a machine).
pub fn set_threads(n: usize) {
    tch::set_num_threads(n.clamp(1, 1024) as i32);
}
