//! `qd bench generate`: tokens per second of batched generation with and without CFG for
//! the same model, prompts and batch, against a PyTorch-eager reference of the
//! architecture (`scripts/reference_generate.py`) that loads the same checkpoint and runs
//! beside qd: each repetition times qd and then the reference ([`interleaved`]), the
//! plain repetitions first, then those with CFG (medians). Then the same with real
//! lengths: `<eos>` allowed, each row as long as it samples, qd's finished rows leaving
//! the batch, against the reference decoding the whole batch for as many steps as the
//! longest row (what an eager sampler that stops when every row has finished does);
//! both rated by the tokens the rows sampled.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use model::sampling::{guided_logprobs, sample, SamplingConfig, Vocabulary};
use model::task::{Split, Task};
use model::transformer::Transformer;

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub batch: usize,
    /// Tokens generated per row (`<eos>` is disallowed, so every row runs the full
    /// length); with real lengths, the most a row may take.
    pub new_tokens: usize,
    pub reps: usize,
    pub cfg_gamma: f64,
    /// Python with torch, to run the reference (`None`: skip it).
    pub python: Option<PathBuf>,
    pub script: PathBuf,
    /// How the reference computes the task's structure features (its Python module and
    /// vocabulary: `folk::metrical::python_port`), for a policy that embeds them.
    pub structure: Option<serde_json::Value>,
}

/// Medians in tokens per second.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub batch: usize,
    pub new_tokens: usize,
    pub reps: usize,
    pub threads: i32,
    pub qd_plain: f64,
    pub qd_cfg: f64,
    /// CFG throughput over plain throughput (about 0.5 when CFG doubles the work).
    pub cfg_over_plain: f64,
    pub torch_plain: Option<f64>,
    pub torch_cfg: Option<f64>,
    pub qd_over_torch_plain: Option<f64>,
    pub qd_over_torch_cfg: Option<f64>,
    /// Largest |Δ log p| between qd and the reference over every allowed id, step and row,
    /// both fed the tokens qd sampled, same weights: plain, and with CFG.
    pub max_logprob_diff: Option<f64>,
    pub max_logprob_diff_cfg: Option<f64>,
    /// With real lengths (`<eos>` allowed): the rows' mean length, plain and with CFG,
    /// and the throughputs in tokens the rows sampled per second.
    pub mean_length_plain: f64,
    pub mean_length_cfg: f64,
    pub qd_plain_real: f64,
    pub qd_cfg_real: f64,
    pub torch_plain_real: Option<f64>,
    pub torch_cfg_real: Option<f64>,
    pub qd_over_torch_plain_real: Option<f64>,
    pub qd_over_torch_cfg_real: Option<f64>,
}

/// The median (the upper one of an even count; NaN when empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

/// Runs the benchmark on `checkpoint` (the reference reads the same file).
pub fn bench_generate(
    model: &Transformer,
    checkpoint: &Path,
    task: &dyn Task,
    cfg: &BenchConfig,
) -> Result<BenchReport> {
    let prompts: Vec<Vec<u32>> = task
        .prompts(Split::Test)
        .into_iter()
        .chain(task.prompts(Split::Train))
        .take(cfg.batch)
        .map(|p| p.ids)
        .collect();
    if prompts.len() < cfg.batch {
        bail!("the task has fewer than {} prompts", cfg.batch);
    }
    let task_vocabulary = task.vocabulary();
    let allowed: Vec<u32> = task_vocabulary
        .allowed
        .iter()
        .copied()
        .filter(|&id| id != task_vocabulary.eos)
        .collect();
    // No <eos> among the allowed ids: every row generates exactly new_tokens.
    let v = Vocabulary {
        eos: u32::MAX,
        allowed: allowed.clone(),
        content_groups: Vec::new(),
        ..task_vocabulary.clone()
    };
    let seeds: Vec<u64> = (0..cfg.batch as u64).collect();
    let plain = SamplingConfig {
        max_new_tokens: cfg.new_tokens,
        ..SamplingConfig::default()
    };
    let guided = SamplingConfig {
        cfg_gamma: Some(cfg.cfg_gamma),
        ..plain.clone()
    };
    let tokens = (cfg.batch * cfg.new_tokens) as f64;
    // A warm-up of each, which also draws the tokens the reference is checked on, and
    // the real lengths.
    let drawn = (
        sample(model, &prompts, &seeds, &v, &plain)?.tokens,
        sample(model, &prompts, &seeds, &v, &guided)?.tokens,
    );
    let real = (
        sample(model, &prompts, &seeds, task_vocabulary, &plain)?.tokens,
        sample(model, &prompts, &seeds, task_vocabulary, &guided)?.tokens,
    );
    let longest = |rows: &[Vec<u32>]| rows.iter().map(Vec::len).max().unwrap_or(0);
    let sampled = |rows: &[Vec<u32>]| rows.iter().map(Vec::len).sum::<usize>() as f64;
    let mut reference = match &cfg.python {
        Some(python) => {
            let structure = model.config.structure.as_ref().and(cfg.structure.as_ref());
            let body = serde_json::json!({
                "prompts": prompts, "sep": v.sep, "pad": v.pad, "allowed": allowed,
                "follow": {"plain": drawn.0, "cfg": drawn.1}, "structure": structure,
                "real_steps": {"plain": longest(&real.0), "cfg": longest(&real.1)},
            });
            // Read by the reference before it says it is ready.
            let request = tempfile::Builder::new()
                .prefix("qd-bench-")
                .suffix(".json")
                .tempfile()?;
            std::fs::write(request.path(), serde_json::to_vec(&body)?)?;
            let mut command = Command::new(python);
            command
                .arg(&cfg.script)
                .arg("--checkpoint")
                .arg(checkpoint)
                .arg("--request")
                .arg(request.path())
                .args(["--new-tokens", &cfg.new_tokens.to_string()])
                .args(["--cfg", &cfg.cfg_gamma.to_string()])
                .args(["--threads", &tch::get_num_threads().to_string()]);
            let (mut r, _) = Reference::start(command)?;
            r.seconds("plain")?; // the reference's warm-up
            r.seconds("cfg")?;
            Some(r)
        }
        None => None,
    };
    let timed = |s: &SamplingConfig| -> Result<f64> {
        let start = Instant::now();
        sample(model, &prompts, &seeds, &v, s)?;
        Ok(start.elapsed().as_secs_f64())
    };
    let (t_plain, r_plain) = interleaved(cfg.reps, "plain", || timed(&plain), reference.as_mut())?;
    let (t_cfg, r_cfg) = interleaved(cfg.reps, "cfg", || timed(&guided), reference.as_mut())?;
    let timed_real = |s: &SamplingConfig| -> Result<f64> {
        let start = Instant::now();
        sample(model, &prompts, &seeds, task_vocabulary, s)?;
        Ok(start.elapsed().as_secs_f64())
    };
    let (t_plain_real, r_plain_real) = interleaved(
        cfg.reps,
        "plain_real",
        || timed_real(&plain),
        reference.as_mut(),
    )?;
    let (t_cfg_real, r_cfg_real) = interleaved(
        cfg.reps,
        "cfg_real",
        || timed_real(&guided),
        reference.as_mut(),
    )?;
    let rate = |seconds: f64| tokens / seconds;
    let (qd_plain, qd_cfg) = (rate(t_plain), rate(t_cfg));
    let (plain_real, cfg_real) = (sampled(&real.0), sampled(&real.1));
    let (qd_plain_real, qd_cfg_real) = (plain_real / t_plain_real, cfg_real / t_cfg_real);
    let torch_plain_real = r_plain_real.map(|s| plain_real / s);
    let torch_cfg_real = r_cfg_real.map(|s| cfg_real / s);
    let mut report = BenchReport {
        batch: cfg.batch,
        new_tokens: cfg.new_tokens,
        reps: cfg.reps,
        threads: tch::get_num_threads(),
        qd_plain,
        qd_cfg,
        cfg_over_plain: qd_cfg / qd_plain,
        torch_plain: None,
        torch_cfg: None,
        qd_over_torch_plain: None,
        qd_over_torch_cfg: None,
        max_logprob_diff: None,
        max_logprob_diff_cfg: None,
        mean_length_plain: plain_real / cfg.batch as f64,
        mean_length_cfg: cfg_real / cfg.batch as f64,
        qd_plain_real,
        qd_cfg_real,
        torch_plain_real,
        torch_cfg_real,
        qd_over_torch_plain_real: torch_plain_real.map(|t| qd_plain_real / t),
        qd_over_torch_cfg_real: torch_cfg_real.map(|t| qd_cfg_real / t),
    };
    let (Some(mut r), Some(r_plain), Some(r_cfg)) = (reference, r_plain, r_cfg) else {
        return Ok(report);
    };
    let (torch_plain, torch_cfg) = (rate(r_plain), rate(r_cfg));
    report.torch_plain = Some(torch_plain);
    report.torch_cfg = Some(torch_cfg);
    report.qd_over_torch_plain = Some(qd_plain / torch_plain);
    report.qd_over_torch_cfg = Some(qd_cfg / torch_cfg);
    let scored = r.ask("score")?;
    let ours = |s: &SamplingConfig, tokens| guided_logprobs(model, &prompts, tokens, &v, s);
    report.max_logprob_diff = max_diff(&ours(&plain, &drawn.0)?, &scored["logprobs"]["plain"]);
    report.max_logprob_diff_cfg = max_diff(&ours(&guided, &drawn.1)?, &scored["logprobs"]["cfg"]);
    r.finish()?;
    Ok(report)
}

/// A PyTorch reference script running beside qd (`scripts/reference_*.py`): it prints
/// one JSON line when ready, then answers one command a line (`reference_learner.serve`),
/// so that qd can time its own repetitions between the reference's.
#[derive(Debug)]
pub struct Reference {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Reference {
    /// Starts `command` with piped standard input and output (its errors reach the
    /// terminal) and reads the line it prints when ready.
    pub fn start(mut command: Command) -> Result<(Reference, serde_json::Value)> {
        let what = format!("{}", command.get_program().to_string_lossy());
        let mut child = command
            // torch's warning that numpy is missing is not worth a line.
            .env("PYTHONWARNINGS", "ignore")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("running the PyTorch reference ({what})"))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            bail!("the PyTorch reference's pipes were not opened");
        };
        let mut r = Reference {
            child,
            stdin,
            stdout: BufReader::new(stdout),
        };
        let first = r.answer().context("the PyTorch reference did not start")?;
        Ok((r, first))
    }

    /// The next JSON line the reference prints.
    fn answer(&mut self) -> Result<serde_json::Value> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            let status = self.child.wait()?;
            bail!("the PyTorch reference ended ({status}); its error is printed above");
        }
        serde_json::from_str(&line).context("reading the reference's answer")
    }

    /// Sends one command and reads its answer.
    pub fn ask(&mut self, command: &str) -> Result<serde_json::Value> {
        writeln!(self.stdin, "{command}")?;
        self.stdin.flush()?;
        self.answer()
    }

    /// The seconds of one timed repetition of `command`.
    pub fn seconds(&mut self, command: &str) -> Result<f64> {
        self.ask(command)?["seconds"]
            .as_f64()
            .context("the reference's answer has no seconds")
    }

    /// Closes its input and waits for it to exit.
    pub fn finish(self) -> Result<()> {
        let Reference {
            mut child, stdin, ..
        } = self;
        drop(stdin);
        let status = child.wait()?;
        if !status.success() {
            bail!("the PyTorch reference exited with {status}");
        }
        Ok(())
    }
}

/// `reps` rounds of qd's side (`qd` returns its seconds) and, when a reference runs
/// beside, one repetition of its `command` right after, so that both see the same
/// machine; the median seconds of each.
pub fn interleaved(
    reps: usize,
    command: &str,
    mut qd: impl FnMut() -> Result<f64>,
    mut reference: Option<&mut Reference>,
) -> Result<(f64, Option<f64>)> {
    let (mut ours, mut theirs) = (Vec::with_capacity(reps), Vec::with_capacity(reps));
    for _ in 0..reps {
        ours.push(qd()?);
        if let Some(r) = reference.as_deref_mut() {
            theirs.push(r.seconds(command)?);
        }
    }
    let theirs = (!theirs.is_empty()).then(|| median(theirs));
    Ok((median(ours), theirs))
}

/// The largest |a − b| over every row, step and id of qd's log-probabilities and the
/// reference's (`None` when the reference's do not have the same shape).
fn max_diff(ours: &[Vec<Vec<f32>>], theirs: &serde_json::Value) -> Option<f64> {
    let theirs = theirs.as_array()?;
    if theirs.len() != ours.len() {
        return None;
    }
    let mut max = 0f64;
    for (a, b) in ours.iter().zip(theirs) {
        let b = b.as_array()?;
        if a.len() != b.len() {
            return None;
        }
        for (a, b) in a.iter().zip(b) {
            let b = b.as_array()?;
            if a.len() != b.len() {
                return None;
            }
            for (x, y) in a.iter().zip(b) {
                max = max.max((f64::from(*x) - y.as_f64()?).abs());
            }
        }
    }
    Some(max)
}

impl BenchReport {
    pub fn table(&self) -> String {
        let opt =
            |x: Option<f64>, prec: usize| x.map_or("-".to_string(), |v| format!("{v:.prec$}"));
        format!(
            "batch {} × {} new tokens, {} repetitions (medians), {} threads\n\
             {:<10} {:>12} {:>12} {:>9}\n\
             {:<10} {:>12.0} {:>12} {:>9}\n\
             {:<10} {:>12.0} {:>12} {:>9}\n\
             {:<10} {:>12.0} {:>12} {:>9}\n\
             {:<10} {:>12.0} {:>12} {:>9}\n\
             CFG / plain throughput (qd): {:.3}\n\
             real lengths (`<eos>` allowed): mean {:.1} tokens plain, {:.1} with CFG\n\
             max |Δ log p| qd vs PyTorch, every id, step and row: plain {}, CFG {}\n",
            self.batch,
            self.new_tokens,
            self.reps,
            self.threads,
            "tokens/s",
            "qd",
            "PyTorch",
            "qd/PT",
            "plain",
            self.qd_plain,
            opt(self.torch_plain, 0),
            opt(self.qd_over_torch_plain, 2),
            "cfg",
            self.qd_cfg,
            opt(self.torch_cfg, 0),
            opt(self.qd_over_torch_cfg, 2),
            "plain real",
            self.qd_plain_real,
            opt(self.torch_plain_real, 0),
            opt(self.qd_over_torch_plain_real, 2),
            "cfg real",
            self.qd_cfg_real,
            opt(self.torch_cfg_real, 0),
            opt(self.qd_over_torch_cfg_real, 2),
            self.cfg_over_plain,
            self.mean_length_plain,
            self.mean_length_cfg,
            self.max_logprob_diff
                .map_or("-".to_string(), |d| format!("{d:.1e}")),
            self.max_logprob_diff_cfg
                .map_or("-".to_string(), |d| format!("{d:.1e}")),
        )
    }
}
