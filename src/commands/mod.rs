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
/// `qd man`: the manual pages of qd and of each command (`qd-<command>.1`; nested
/// commands too, `qd-bench-learner.1`).
pub fn man(out: &std::path::Path) -> Result<()> {
    use anyhow::Context;
    use clap::CommandFactory;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut pages = vec![("qd".to_string(), crate::cli::Cli::command())];
    let mut written = 0;
    while let Some((name, cmd)) = pages.pop() {
        for sub in cmd.get_subcommands() {
            let full = format!("{name}-{}", sub.get_name());
            pages.push((full.clone(), sub.clone().name(full)));
        }
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut page)?;
        let path = out.join(format!("{name}.1"));
        std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
        written += 1;
    }
    eprintln!("{written} manual pages in {}", out.display());
    Ok(())
}

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
