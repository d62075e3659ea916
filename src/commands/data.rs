//! `qd data prepare` and `qd data export`: the folk-tune dataset.

use std::time::Instant;

use anyhow::{Context, Result};
use folk::dataset::{Dataset, PrepareConfig};
use folk::{midi, render};
use model::fsutil::write_atomic;

use crate::cli::{ExportArgs, PrepareArgs};

pub fn prepare(a: PrepareArgs) -> Result<()> {
    let start = Instant::now();
    let cfg = PrepareConfig {
        raw: a.raw,
        out: a.out.clone(),
        seed: a.seed,
        max_tokens: a.max_tokens as usize,
    };
    let summary = folk::dataset::prepare(&cfg)?;
    let took = start.elapsed();
    let load = Instant::now();
    let ds = Dataset::load(&a.out)?;
    let load_ms = load.elapsed().as_secs_f64() * 1e3;
    if a.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print!("{}", summary.table());
        println!(
            "\nwrote {} tunes to {} in {:.1}s (loads in {load_ms:.0} ms)",
            ds.records.len(),
            a.out.join("dataset.json").display(),
            took.as_secs_f64()
        );
    }
    tracing::info!(
        tunes = ds.records.len(),
        seconds = took.as_secs_f64(),
        load_ms,
        "dataset prepared"
    );
    Ok(())
}

pub fn export(a: ExportArgs) -> Result<()> {
    let ds = Dataset::load(&a.data)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut written = 0;
    for (i, r) in ds.split(a.split.into()).take(a.n).enumerate() {
        let tokens = ds.vocab.decode_tune(&r.tune)?;
        let abc = render::to_abc(&tokens, i as u32 + 1, &r.title);
        let stem = a.out.join(format!("{:02}", i + 1));
        write_atomic(&stem.with_extension("abc"), abc.as_bytes())?;
        let mid = midi::to_midi(&tokens, a.qpm).map_err(anyhow::Error::msg)?;
        write_atomic(&stem.with_extension("mid"), &mid)?;
        println!("% {} — \"{}\"\n{abc}", r.id, r.caption);
        written += 1;
    }
    println!(
        "wrote {written} tunes as .abc and .mid to {}",
        a.out.display()
    );
    Ok(())
}
