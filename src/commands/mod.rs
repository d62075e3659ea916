//! The command bodies, by concern: the dataset (`data`), training (`train`), using and
//! merging checkpoints (`models`), benchmarks (`bench`), the comparison sweep (`sweep`)
//! and the service roles (`service`).

use std::path::Path;

use anyhow::{Context, Result};

pub mod bench;
pub mod data;
pub mod models;
pub mod service;
pub mod sweep;
pub mod train;

/// `qd info`: the libtorch build qd runs on.
pub fn info(json: bool) -> Result<()> {
    let info = model::device::info();
    if json {
        println!("{}", serde_json::to_string(&info)?);
    } else {
        println!("{info:#?}");
    }
    Ok(())
}

/// Creates the folder a file goes in.
fn create_parent(path: &Path) -> Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
        }
        None => Ok(()),
    }
}
