//! `qd compare A B`: the automatic counterpart of the paper's side-by-side human study.
//! Two operating points (a checkpoint and a way of sampling it) generate for the same
//! held-out prompts with the same seeds; per prompt, the side whose samples the judge
//! scores higher wins on quality, and the side whose pair of samples lies further apart
//! in the embedding wins on diversity. The result: win, tie and loss rates, and the
//! preference with ties split, each with its 95% interval (bootstrap over prompts).

use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use model::sampling::{CfgScope, SamplingConfig};

use crate::evaluate::EvalReport;
use crate::stats::{mean, mean_interval, paired_difference, Difference, Interval};

/// An operating point: `PATH[@key=value,…]` with keys `cfg` (γ), `scope` (all, content),
/// `plausibility`, `temperature` and `top_k`; e.g.
/// `runs/pretrain/last.safetensors@cfg=3,scope=content`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Side {
    pub checkpoint: PathBuf,
    pub temperature: f64,
    pub top_k: Option<usize>,
    pub cfg_gamma: Option<f64>,
    pub cfg_scope: CfgScope,
    pub cfg_plausibility: Option<f64>,
}

impl FromStr for Side {
    type Err = anyhow::Error;

    fn from_str(spec: &str) -> Result<Side> {
        let (path, settings) = match spec.rsplit_once('@') {
            Some((p, s)) => (p, s),
            None => (spec, ""),
        };
        if path.is_empty() {
            bail!(
                "{spec:?}: no checkpoint path before the settings (PATH[@cfg=3,scope=content,…])"
            );
        }
        let mut side = Side {
            checkpoint: PathBuf::from(path),
            temperature: 1.0,
            top_k: None,
            cfg_gamma: None,
            cfg_scope: CfgScope::All,
            cfg_plausibility: None,
        };
        for item in settings.split(',').filter(|s| !s.is_empty()) {
            let (key, value) = item
                .split_once('=')
                .with_context(|| format!("{spec:?}: {item:?} is not key=value"))?;
            let number = || -> Result<f64> {
                let v: f64 = value
                    .parse()
                    .with_context(|| format!("{spec:?}: {key}={value:?} is not a number"))?;
                if !v.is_finite() {
                    bail!("{spec:?}: {key} must be finite");
                }
                Ok(v)
            };
            match key {
                "cfg" => {
                    let g = number()?;
                    if g < 0.0 {
                        bail!("{spec:?}: cfg (γ) must be ≥ 0, got {g}");
                    }
                    side.cfg_gamma = Some(g);
                }
                "scope" => {
                    side.cfg_scope = value.parse().map_err(|e: String| {
                        anyhow::anyhow!("{spec:?}: {e}")
                    })?;
                }
                "plausibility" => {
                    let p = number()?;
                    if !(0.0..=1.0).contains(&p) {
                        bail!("{spec:?}: plausibility must be in [0, 1], got {p}");
                    }
                    side.cfg_plausibility = Some(p);
                }
                "temperature" | "t" => {
                    let t = number()?;
                    if t <= 0.0 {
                        bail!("{spec:?}: temperature must be positive, got {t}");
                    }
                    side.temperature = t;
                }
                "top_k" => {
                    side.top_k = Some(value.parse().with_context(|| {
                        format!("{spec:?}: top_k={value:?} is not a whole number")
                    })?);
                }
                _ => bail!(
                    "{spec:?}: unknown setting {key:?} (expected cfg, scope, plausibility, temperature, top_k)"
                ),
            }
        }
        if side.cfg_gamma.is_none()
            && (side.cfg_plausibility.is_some() || side.cfg_scope != CfgScope::All)
        {
            bail!("{spec:?}: scope and plausibility apply to CFG: give cfg=γ as well");
        }
        Ok(side)
    }
}

impl Side {
    pub fn sampling(&self, max_new_tokens: usize) -> SamplingConfig {
        SamplingConfig {
            temperature: self.temperature,
            top_k: self.top_k,
            cfg_gamma: self.cfg_gamma.filter(|&g| g != 1.0),
            cfg_plausibility: self.cfg_plausibility,
            cfg_scope: self.cfg_scope,
            max_new_tokens,
        }
    }
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.checkpoint.display())?;
        match self.cfg_gamma {
            Some(g) => write!(f, " with CFG γ = {g} (scope {})", self.cfg_scope)?,
            None => write!(f, " without CFG")?,
        }
        if let Some(p) = self.cfg_plausibility {
            write!(f, ", plausibility {p}")?;
        }
        write!(f, ", T = {}", self.temperature)?;
        if let Some(k) = self.top_k {
            write!(f, ", top-k {k}")?;
        }
        Ok(())
    }
}

/// Who wins a criterion, prompt by prompt.
#[derive(Clone, Debug, Serialize)]
pub struct WinRates {
    pub a_wins: f64,
    pub a_wins_interval: Interval,
    pub ties: f64,
    pub ties_interval: Interval,
    pub b_wins: f64,
    pub b_wins_interval: Interval,
    /// The share of comparisons A wins, counting a tie as half a win (what a rater
    /// forced to choose would give on average).
    pub a_preferred: f64,
    pub a_preferred_interval: Interval,
}

impl WinRates {
    /// From per-prompt values of the two sides (higher is better).
    pub fn of(a: &[f64], b: &[f64]) -> WinRates {
        let pairs: Vec<(f64, f64)> = a.iter().copied().zip(b.iter().copied()).collect();
        let ind =
            |f: &dyn Fn(f64, f64) -> f64| pairs.iter().map(|&(x, y)| f(x, y)).collect::<Vec<f64>>();
        let wins = ind(&|x, y| f64::from(u8::from(x > y)));
        let ties = ind(&|x, y| f64::from(u8::from(x == y)));
        let losses = ind(&|x, y| f64::from(u8::from(x < y)));
        let preferred = ind(&|x, y| {
            if x > y {
                1.0
            } else if x == y {
                0.5
            } else {
                0.0
            }
        });
        WinRates {
            a_wins: mean(&wins),
            a_wins_interval: mean_interval(&wins),
            ties: mean(&ties),
            ties_interval: mean_interval(&ties),
            b_wins: mean(&losses),
            b_wins_interval: mean_interval(&losses),
            a_preferred: mean(&preferred),
            a_preferred_interval: mean_interval(&preferred),
        }
    }
}

/// What `qd compare` reports.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub a: Side,
    pub b: Side,
    pub prompts: usize,
    /// Samples per prompt on each side.
    pub samples: usize,
    /// Per prompt: the judge's mean quality of each side's samples.
    pub quality: WinRates,
    /// Per prompt: the embedding diversity of each side's samples.
    pub diversity: WinRates,
    /// Mean differences A − B, paired over prompts: quality, its two factors, and the
    /// embedding diversity.
    pub quality_difference: Difference,
    pub adherence_difference: Difference,
    pub validity_difference: Difference,
    pub diversity_difference: Difference,
    pub a_report: EvalReport,
    pub b_report: EvalReport,
}

impl Comparison {
    /// Compares two reports evaluated on the same prompts and seeds.
    pub fn new(a: Side, b: Side, ra: EvalReport, rb: EvalReport) -> Result<Comparison> {
        let (pa, pb) = (&ra.per_prompt, &rb.per_prompt);
        if pa.quality.len() != pb.quality.len() || ra.samples != rb.samples {
            bail!(
                "the two sides were not evaluated on the same prompts ({} vs {})",
                pa.quality.len(),
                pb.quality.len()
            );
        }
        Ok(Comparison {
            prompts: ra.prompts,
            samples: ra.samples / ra.prompts.max(1),
            quality: WinRates::of(&pa.quality, &pb.quality),
            diversity: WinRates::of(&pa.embed_diversity, &pb.embed_diversity),
            quality_difference: paired_difference(&pb.quality, &pa.quality),
            adherence_difference: paired_difference(&pb.adherence, &pa.adherence),
            validity_difference: paired_difference(&pb.validity, &pa.validity),
            diversity_difference: paired_difference(&pb.embed_diversity, &pa.embed_diversity),
            a,
            b,
            a_report: ra,
            b_report: rb,
        })
    }

    /// The comparison as a table.
    pub fn table(&self) -> String {
        let pct = |v: f64, i: &Interval| {
            format!(
                "{:5.1}% [{:.1}, {:.1}]",
                100.0 * v,
                100.0 * i.lo,
                100.0 * i.hi
            )
        };
        let line = |name: &str, w: &WinRates| {
            format!(
                "{name:<10} {:<22} {:<22} {:<22} {}\n",
                pct(w.a_wins, &w.a_wins_interval),
                pct(w.ties, &w.ties_interval),
                pct(w.b_wins, &w.b_wins_interval),
                pct(w.a_preferred, &w.a_preferred_interval)
            )
        };
        format!(
            "A: {}\nB: {}\n{} held-out prompts ({} split) × {} samples a side, the same prompts and seeds; \
             95% intervals by bootstrap over prompts\n\n\
             {:<10} {:<22} {:<22} {:<22} {}\n{}{}\n\
             mean A − B: quality {}, embedding diversity {}\n\
             \x20           adherence {}, validity {}\n\
             A: quality {:.4} (adherence {:.3}, validity {:.3}), embedding diversity {:.4}\n\
             B: quality {:.4} (adherence {:.3}, validity {:.3}), embedding diversity {:.4}\n",
            self.a,
            self.b,
            self.prompts,
            self.a_report.split,
            self.samples,
            "",
            "A wins",
            "ties",
            "B wins",
            "A preferred (ties half)",
            line("quality", &self.quality),
            line("diversity", &self.diversity),
            self.quality_difference.text(4),
            self.diversity_difference.text(4),
            self.adherence_difference.text(3),
            self.validity_difference.text(3),
            self.a_report.quality,
            self.a_report.adherence,
            self.a_report.validity,
            self.a_report.embed_diversity,
            self.b_report.quality,
            self.b_report.adherence,
            self.b_report.validity,
            self.b_report.embed_diversity,
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn sides_parse_or_say_what_is_wrong() {
        let s: Side = "runs/a.safetensors@cfg=3,scope=content,plausibility=0.1,temperature=0.8"
            .parse()
            .unwrap();
        assert_eq!(s.checkpoint, PathBuf::from("runs/a.safetensors"));
        assert_eq!(
            (s.cfg_gamma, s.cfg_scope, s.cfg_plausibility, s.temperature),
            (Some(3.0), CfgScope::Content, Some(0.1), 0.8)
        );
        let plain: Side = "m.safetensors".parse().unwrap();
        assert_eq!((plain.cfg_gamma, plain.temperature), (None, 1.0));
        // γ = 1 samples without guidance.
        let one: Side = "m@cfg=1".parse().unwrap();
        assert_eq!(one.sampling(8).cfg_gamma, None);
        for (bad, says) in [
            ("m@cfg=x", "is not a number"),
            ("m@cfg=-1", "must be ≥ 0"),
            ("m@scope=content", "give cfg=γ"),
            ("m@cfg=3,scope=pitch", "unknown CFG scope"),
            ("m@temperature=0", "must be positive"),
            ("m@plausibility=2,cfg=3", "in [0, 1]"),
            ("m@gamma=3", "unknown setting"),
            ("m@cfg", "not key=value"),
            ("@cfg=3", "no checkpoint path"),
            ("m@cfg=inf", "finite"),
        ] {
            let e = bad.parse::<Side>().unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn win_rates_count_wins_ties_and_losses() {
        let a = [0.5, 0.2, 0.3, 0.9];
        let b = [0.4, 0.2, 0.6, 0.1];
        let w = WinRates::of(&a, &b);
        assert_eq!((w.a_wins, w.ties, w.b_wins), (0.5, 0.25, 0.25));
        assert_eq!(w.a_preferred, 0.625);
        // The preference's interval is the bootstrap interval of the per-prompt scores
        // (win 1, tie ½, loss 0).
        assert_eq!(
            w.a_preferred_interval,
            crate::stats::mean_interval(&[1.0, 0.5, 0.0, 1.0])
        );
        // On 200 prompts of which A wins 120 and loses 80 the interval is about
        // 0.6 ± 1.96 · √(0.6 · 0.4 / 200).
        let a200: Vec<f64> = (0..200).map(|i| f64::from(u8::from(i < 120))).collect();
        let w200 = WinRates::of(&a200, &[0.5; 200]);
        let half = 1.96 * (0.24f64 / 200.0).sqrt();
        let i = w200.a_preferred_interval;
        assert!(i.lo < 0.6 && 0.6 < i.hi, "{i:?}");
        assert!(
            ((i.hi - i.lo) / 2.0 - half).abs() < 0.15 * half,
            "{i:?} vs ±{half}"
        );
        // Symmetric: B's view is the mirror image.
        let m = WinRates::of(&b, &a);
        assert_eq!((m.a_wins, m.b_wins, m.a_preferred), (0.25, 0.5, 0.375));
    }
}
