//! `qd sweep`: CFG, temperature, the β-sweep students and weight interpolation, compared;
//! `qd curve`: learning curves of evaluated checkpoints.

use anyhow::Result;
use folk::FolkTask;

use crate::cli::{CurveArgs, SweepArgs};

pub fn sweep(a: SweepArgs) -> Result<()> {
    let device = a.compute.apply()?;
    let cfg = eval::sweep::SweepConfig {
        runs: a.runs,
        base: a.base,
        out: a.out,
        split: a.split,
        prompts: a.prompts as usize,
        samples: a.samples as usize,
        seed: a.seed,
        batch: a.batch as usize,
        max_new_tokens: a.max_new_tokens,
        gammas: a.gammas,
        temperatures: a.temperatures,
        plausibilities: a.plausibilities.into_iter().flatten().collect(),
        lambdas: a
            .lambdas
            .unwrap_or_else(|| eval::sweep::default_lambdas(a.fine)),
        device,
        progress: !a.no_progress,
    };
    let task = FolkTask::open(&a.data, &a.embedder, &a.judge)?;
    let s = eval::sweep::sweep(&cfg, &task)?;
    let files: Vec<_> = ["sweep.csv", "summary.md", "summary.json"]
        .iter()
        .map(|name| cfg.out.join(name))
        .collect();
    if a.json {
        // summary.json's object (which counts the points and names the plots), and the
        // tables written.
        let mut report = serde_json::to_value(&s)?;
        report["files"] = serde_json::json!(files);
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    println!("{}", s.markdown());
    println!(
        "{} points: {} evaluated, {} cached",
        s.points, s.evaluated, s.cached
    );
    for f in files {
        println!("wrote {}", f.display());
    }
    for png in &s.plots {
        println!("plot: {} (and .svg)", png.display());
    }
    Ok(())
}

pub fn curve(a: CurveArgs) -> Result<()> {
    let points = eval::curve::write_curves(&a.runs, &a.out, &a.title)?;
    for p in &points {
        println!(
            "{:<12} step {:>6}  validity {:.3} {}  quality {:.4} {}",
            p.run,
            p.step,
            p.validity,
            p.validity_interval.text(3),
            p.quality,
            p.quality_interval.text(4)
        );
    }
    println!("wrote {}.{{png,svg,csv}}", a.out.display());
    Ok(())
}
