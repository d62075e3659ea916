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

/// Parses `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(s: &str) -> Result<tch::Device, String> {
    match s {
        "cpu" => Ok(tch::Device::Cpu),
        "cuda" => Ok(tch::Device::Cuda(0)),
        _ => s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(tch::Device::Cuda)
            .ok_or_else(|| format!("unknown device {s:?} (expected cpu, cuda or cuda:N)")),
    }
}

/// Sets the thread count (0: leave libtorch's default, every core) and checks that the
/// device exists.
pub fn use_device(device: tch::Device, threads: usize) -> anyhow::Result<tch::Device> {
    if threads > 0 {
        set_threads(threads);
    }
    if let tch::Device::Cuda(i) = device {
        let n = tch::Cuda::device_count();
        anyhow::ensure!(
            (i as i64) < n,
            "device cuda:{i} requested but libtorch sees {n} CUDA devices"
        );
    }
    Ok(device)
}
