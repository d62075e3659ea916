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

/// Why a device cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeviceError {
    #[error("unknown device {0:?} (expected cpu, cuda or cuda:N)")]
    Unknown(String),
    #[error(
        "device cuda:{index} requested but libtorch sees {visible} CUDA devices \
         (a CUDA build needs the CUDA torch wheel and `QD_CUDA=1 make build`: docs/operations.md)"
    )]
    Unavailable { index: usize, visible: i64 },
}

/// Parses `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(s: &str) -> Result<tch::Device, DeviceError> {
    match s {
        "cpu" => Ok(tch::Device::Cpu),
        "cuda" => Ok(tch::Device::Cuda(0)),
        _ => s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(tch::Device::Cuda)
            .ok_or_else(|| DeviceError::Unknown(s.to_string())),
    }
}

/// Sets the thread count (0: leave libtorch's default, every core) and checks that the
/// device exists.
pub fn use_device(device: tch::Device, threads: usize) -> Result<tch::Device, DeviceError> {
    if threads > 0 {
        set_threads(threads);
    }
    if let tch::Device::Cuda(index) = device {
        let visible = tch::Cuda::device_count();
        if (index as i64) >= visible {
            return Err(DeviceError::Unavailable { index, visible });
        }
    }
    Ok(device)
}
