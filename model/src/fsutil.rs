//! File-system helpers.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

/// How the temporary file of an atomic write ends (`.<name>.<pid>.<random>.tmp`).
const TEMP_SUFFIX: &str = ".tmp";

/// The temporary files of atomic writes in `dir` (what a write killed midway leaves),
/// with the pid of the process that wrote each.
pub fn temp_files(dir: &Path) -> Vec<(std::path::PathBuf, Option<u32>)> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let stem = name.strip_prefix('.')?.strip_suffix(TEMP_SUFFIX)?;
            let (writer, _random) = stem.rsplit_once('.')?;
            let pid = writer.rsplit_once('.').and_then(|(_, p)| p.parse().ok());
            Some((e.path(), pid))
        })
        .collect()
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, fsync, then
/// rename, so a reader sees the old file or the new one, never a partial one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with_mode(path, bytes, 0o666)
}

/// [`write_atomic`] for a file only its owner may read (mode 0600).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with_mode(path, bytes, 0o600)
}

fn write_with_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().context("no file name")?.to_string_lossy();
    // The temporary file goes when it is dropped unpersisted, i.e. on any error.
    let result = (|| {
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}.{}.", std::process::id()))
            .suffix(TEMP_SUFFIX)
            .permissions(std::fs::Permissions::from_mode(mode))
            .tempfile_in(dir)?;
        tmp.write_all(bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok::<_, std::io::Error>(())
    })();
    result.with_context(|| format!("writing {}", path.display()))
}

/// Keeps the lines of the JSON-lines log `path` whose `step` satisfies `keep` (and drops
/// a line a crash cut short), rewriting the file atomically when anything goes. A
/// resumed run calls it so that each step is logged once.
pub fn retain_steps(path: &Path, keep: impl Fn(u64) -> bool) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get("step").and_then(serde_json::Value::as_u64))
                .is_some_and(&keep)
        })
        .collect();
    if kept.len() == text.lines().count() {
        return Ok(());
    }
    tracing::info!(
        path = %path.display(),
        dropped = text.lines().count() - kept.len(),
        "log: dropping the lines of steps that will be taken again"
    );
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    write_atomic(path, out.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::retain_steps;

    #[test]
    fn a_resumed_log_keeps_each_step_once() {
        let dir = std::env::temp_dir().join(format!("qd-fsutil-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let path = dir.join("train.jsonl");
        let lines = [
            "{\"step\":1}",
            "{\"step\":2}",
            "{\"step\":3}",
            "{\"step\":4}",
            "{\"st",
        ];
        std::fs::write(&path, lines.join("\n")).unwrap_or_else(|e| panic!("{e}"));
        retain_steps(&path, |s| s <= 2).unwrap_or_else(|e| panic!("{e}"));
        let kept = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(kept, "{\"step\":1}\n{\"step\":2}\n");
        // Nothing to drop: the file is left as it is.
        retain_steps(&path, |s| s < 5).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(std::fs::read_to_string(&path).unwrap_or_default(), kept);
        retain_steps(&path, |s| s < 1).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(std::fs::read_to_string(&path).unwrap_or_default(), "");
        // Every write went through a temporary file and left none; one a killed write
        // left is found, with its writer's pid.
        assert!(super::temp_files(&dir).is_empty());
        let stray = dir.join(".train.jsonl.4242.Xy12Ab.tmp");
        std::fs::write(&stray, b"{").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(super::temp_files(&dir), vec![(stray, Some(4242))]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
