//! The sweep's tables: `sweep.csv` (one row per operating point, with its intervals) and
//! `summary.md` (the tables and findings, with their intervals).

use std::fmt::Write as _;

use super::summary::Summary;
use super::{Family, Row};

/// One line of `sweep.csv`; the field names are its header.
#[derive(serde::Serialize)]
struct CsvRow<'a> {
    family: &'a str,
    param: f64,
    quality: f64,
    quality_lo: f64,
    quality_hi: f64,
    adherence: f64,
    validity: f64,
    embed_diversity: f64,
    embed_diversity_lo: f64,
    embed_diversity_hi: f64,
    edit_diversity: f64,
    edit_diversity_lo: f64,
    edit_diversity_hi: f64,
    embed_diversity_across: f64,
    edit_diversity_across: f64,
    tokens_per_s: f64,
    mean_length: f64,
    finished: f64,
    prompts: usize,
    samples: usize,
    /// The training seed of a `beta` row's run; empty for the other families.
    seed: Option<u64>,
}

pub(super) fn csv(rows: &[Row]) -> anyhow::Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        let p = &r.report;
        let i = &p.intervals;
        w.serialize(CsvRow {
            family: r.family.name(),
            param: r.param,
            quality: p.quality,
            quality_lo: i.quality.lo,
            quality_hi: i.quality.hi,
            adherence: p.adherence,
            validity: p.validity,
            embed_diversity: p.embed_diversity,
            embed_diversity_lo: i.embed_diversity.lo,
            embed_diversity_hi: i.embed_diversity.hi,
            edit_diversity: p.edit_diversity,
            edit_diversity_lo: i.edit_diversity.lo,
            edit_diversity_hi: i.edit_diversity.hi,
            embed_diversity_across: p.embed_diversity_across,
            edit_diversity_across: p.edit_diversity_across,
            tokens_per_s: p.tokens_per_s,
            mean_length: p.mean_length,
            finished: p.finished,
            prompts: p.prompts,
            samples: p.samples,
            seed: r.seed,
        })?;
    }
    Ok(w.into_inner().map_err(|e| e.into_error())?)
}

impl Summary {
    /// The tables and findings as markdown (what `docs/results.md` takes).
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let betas: Vec<String> = self.runs.iter().map(|r| r.beta.to_string()).collect();
        let _ = writeln!(
            s,
            "{} held-out {} prompts × {} samples, seed {}, the same for every row; base model `{}`; \
             β runs {}{}.\n",
            self.prompts,
            match self.split {
                model::task::Split::Val => "validation",
                model::task::Split::Test => "test",
                model::task::Split::Train => "training",
            },
            self.samples,
            self.seed,
            self.base.display(),
            betas.join(", "),
            match &self.most_diverse {
                Some(r) => format!(
                    "; the diverse end of LERP is β = {} (the most diverse student)",
                    r.beta
                ),
                None => String::new(),
            }
        );
        for png in &self.plots {
            let name = png
                .file_name()
                .map_or(String::new(), |n| n.to_string_lossy().into());
            let alt = match name.as_str() {
                "front.png" => "Quality against diversity, each family a line",
                "lerp.png" => {
                    "Quality and diversity against λ, and the straight lines between the ends"
                }
                _ => "KL, held-out quality and diversity against the learner step",
            };
            let _ = writeln!(s, "![{alt}]({name})\n");
        }
        if let Some(t) = &self.teacher {
            let _ = writeln!(
                s,
                "Teacher of every run, and the CFG family's sampling: {t}. Intervals are 95%: \
                 a row's `[lo, hi]` by bootstrap over its prompts; effects, fronts and \
                 baselines by bootstrap over runs, then prompts (paired: both sides on the \
                 same resampled runs and prompts; a point with several runs is their mean); \
                 the β runs' spread by Student's t.\n"
            );
        }
        s.push_str(
            "| family | parameter | seed | quality | adherence | validity | embedding diversity | edit diversity | tokens/s |\n\
             |---|---|---|---|---|---|---|---|---|\n",
        );
        for r in &self.rows {
            let p = &r.report;
            let i = &p.intervals;
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.4} {} | {:.3} | {:.3} | {:.3} {} | {:.3} | {:.0} |",
                r.family.describe(),
                r.family.param_text(r.param),
                r.seed.map_or(String::new(), |s| s.to_string()),
                p.quality,
                i.quality.text(4),
                p.adherence,
                p.validity,
                p.embed_diversity,
                i.embed_diversity.text(3),
                p.edit_diversity,
                p.tokens_per_s
            );
        }
        if self.betas.iter().any(|b| b.runs > 1) {
            s.push_str(
                "\nThe β runs, over their seeds (mean [95% t interval over runs]):\n\n\
                 | β | runs | quality | embedding diversity | edit diversity |\n|---|---|---|---|---|\n",
            );
            for b in &self.betas {
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.4} {} | {:.3} {} | {:.3} {} |",
                    b.beta,
                    b.runs,
                    b.quality,
                    b.quality_runs.text(4),
                    b.embed_diversity,
                    b.embed_diversity_runs.text(3),
                    b.edit_diversity,
                    b.edit_diversity_runs.text(3)
                );
            }
        }
        if !self.effects.is_empty() {
            s.push_str(
                "\nPaired differences on the same prompts and seeds (estimate [95% interval]):\n\n\
                 | comparison | quality | embedding diversity |\n|---|---|---|\n",
            );
            for e in &self.effects {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} |",
                    e.what,
                    e.quality.text(4),
                    e.embed_diversity.text(3)
                );
            }
        }
        let _ = writeln!(
            s,
            "\nHypervolume of each family's points in (quality, embedding diversity) against the \
             reference point (quality {}, diversity {}):\n\n| family | points | hypervolume |\n|---|---|---|",
            self.reference.quality, self.reference.diversity
        );
        for f in &self.fronts {
            let _ = writeln!(
                s,
                "| {} | {} | {:.4} {} |",
                f.family.describe(),
                f.points,
                f.hypervolume,
                f.interval.text(4)
            );
        }
        for d in &self.front_differences {
            let _ = writeln!(
                s,
                "\nHypervolume of {} − {}: {}.",
                d.family.describe(),
                d.against.describe(),
                d.difference.text(4)
            );
        }
        match &self.best_cfg {
            Some(b) => {
                let _ = write!(
                    s,
                    "\nBest CFG point: {} (quality {:.4}, embedding diversity {:.3}). ",
                    Family::Cfg.param_text(b.param),
                    b.quality,
                    b.embed_diversity
                );
                if self.dominating_best_cfg.is_empty() {
                    s.push_str("No other point dominates it.\n");
                } else {
                    let names: Vec<String> = self
                        .dominating_best_cfg
                        .iter()
                        .map(|n| format!("{} {}", n.family.name(), n.family.param_text(n.param)))
                        .collect();
                    let lerp = self
                        .dominating_best_cfg
                        .iter()
                        .filter(|n| matches!(n.family, Family::Lerp | Family::LerpBase))
                        .count();
                    let _ = writeln!(
                        s,
                        "Points that dominate it ({lerp} of them LERP): {}.",
                        names.join(", ")
                    );
                }
            }
            None => s.push_str("\nNo CFG point was evaluated.\n"),
        }
        if !self.baseline_gains.is_empty() {
            s.push_str(&self.baselines_markdown());
        }
        for c in &self.chords {
            let _ = writeln!(
                s,
                "\n{}: quality above the straight line between its ends at {} of {} interior λ \
                 (largest gain {:+.4}); embedding diversity above it at {} of {} (largest gain {:+.3}).",
                c.family.describe(),
                c.quality_above,
                c.interior,
                c.max_quality_gain,
                c.diversity_above,
                c.interior,
                c.max_diversity_gain
            );
        }
        s
    }
}

/// `beats`, `loses` or `cannot tell` from an interval of a gain.
fn verdict(d: &crate::stats::Difference) -> &'static str {
    if d.interval.lo > 0.0 {
        "beats"
    } else if d.interval.hi < 0.0 {
        "loses"
    } else {
        "cannot tell"
    }
}

impl Summary {
    /// Does the diversity reward beat its baselines: each arm's quality against each
    /// baseline's at the arm's diversity, and the fronts over the range both cover.
    fn baselines_markdown(&self) -> String {
        let mut s = String::new();
        // Each baseline once, in the order of the first arm's (the gains run arm by arm).
        let mut against: Vec<Family> = Vec::new();
        for g in &self.baseline_gains {
            if !against.contains(&g.against) {
                against.push(g.against);
            }
        }
        let _ = writeln!(
            s,
            "\nThe diversity reward against its baselines: each arm's quality minus the \
             baseline's at the arm's embedding diversity (along the baseline's front, linear \
             between its points; `—`: the baseline reaches no such diversity), with its 95% \
             interval over runs and prompts and the verdict.\n"
        );
        let _ = write!(s, "| arm | quality | diversity |");
        for f in &against {
            let _ = write!(s, " {} |", f.describe());
        }
        let _ = writeln!(s, "\n|---|---|---|{}", "---|".repeat(against.len()));
        let mut arms: Vec<(Family, f64)> = self
            .baseline_gains
            .iter()
            .map(|g| (g.family, g.param))
            .collect();
        arms.dedup();
        for (family, param) in arms {
            let of: Vec<&super::baselines::BaselineGain> = self
                .baseline_gains
                .iter()
                .filter(|g| g.family == family && g.param == param)
                .collect();
            let name = match family {
                Family::Beta => format!("β = {param}"),
                _ => format!("LERP β = 0 → diverse, λ = {param}"),
            };
            let _ = write!(
                s,
                "| {name} | {:.4} | {:.3} |",
                of[0].quality, of[0].embed_diversity
            );
            for f in &against {
                let cell = match of
                    .iter()
                    .find(|g| g.against == *f)
                    .and_then(|g| g.gain.as_ref())
                {
                    Some(d) => format!("{} {}", d.text(4), verdict(d)),
                    None => "—".into(),
                };
                let _ = write!(s, " {cell} |");
            }
            s.push('\n');
        }
        if !self.baseline_fronts.is_empty() {
            s.push_str(
                "\nThe reward's front (the β students and the merges toward the most diverse) \
                 against each baseline's, over the diversity range both cover: hypervolume in \
                 that range, the reward's minus the baseline's.\n\n\
                 | baseline | diversity range | difference | verdict |\n|---|---|---|---|\n",
            );
            for b in &self.baseline_fronts {
                let _ = writeln!(
                    s,
                    "| {} | {:.3}–{:.3} | {} | {} |",
                    b.against.describe(),
                    b.lo,
                    b.hi,
                    b.difference.text(4),
                    verdict(&b.difference)
                );
            }
        }
        s
    }
}
