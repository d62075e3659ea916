//! `qd sweep`: CFG, temperature, the β-sweep students and weight interpolation, compared.

use anyhow::Result;
use folk::FolkTask;

use crate::cli::SweepArgs;

pub fn sweep(a: SweepArgs) -> Result<()> {
    let device = a.compute.apply()?;
    let cfg = eval::sweep::SweepConfig {
        runs: a.runs,
        base: a.base,
        out: a.out,
        prompts: a.prompts as usize,
        samples: a.samples as usize,
        seed: a.seed,
        batch: a.batch as usize,
        max_new_tokens: a.max_new_tokens,
        gammas: a.gammas,
        temperatures: a.temperatures,
        lambdas: a
            .lambdas
            .unwrap_or_else(|| eval::sweep::default_lambdas(a.fine)),
        device,
        progress: !a.no_progress,
    };
    let task = FolkTask::open(&a.data, &a.embedder, &a.judge)?;
    let s = eval::sweep::sweep(&cfg, &task)?;
    println!("{}", s.markdown());
    println!(
        "{} points: {} evaluated, {} cached",
        s.points, s.evaluated, s.cached
    );
    for name in ["sweep.csv", "summary.md", "summary.json"] {
        println!("wrote {}", cfg.out.join(name).display());
    }
    for png in &s.plots {
        println!("plot: {} (and .svg)", png.display());
    }
    Ok(())
}
