//! `qd sample`, `qd eval`, `qd compare`, `qd merge` and `qd export`: using, comparing,
//! combining and shipping policy checkpoints.

use std::path::PathBuf;

use anyhow::{Context, Result};
use eval::evaluate::{evaluate, EvalConfig};
use folk::dataset::Dataset;
use folk::FolkTask;
use model::checkpoint::load_policy;
use model::task::Task;

use super::create_parent;
use crate::cli::{CompareArgs, EvalArgs, MergeArgs, ModelExportArgs, SampleArgs};

pub fn sample(a: SampleArgs) -> Result<()> {
    let device = a.compute.apply()?;
    let cfg = a.sampling.config(a.max_new_tokens)?;
    let task =
        FolkTask::new(Dataset::load(&a.data)?, PathBuf::new(), PathBuf::new()).with_qpm(a.qpm);
    let (_vs, model, _ck) = load_policy(&a.checkpoint, &task, device)?;
    let (prompt, unknown) = task.dataset().vocab.encode_prompt(&a.prompt);
    if !unknown.is_empty() {
        eprintln!(
            "warning: words not in the prompt vocabulary (read as <unk>): {}",
            unknown.join(", ")
        );
    }
    let n = a.n as usize;
    let seeds: Vec<u64> = (0..n as u64).map(|i| a.seed.wrapping_add(i)).collect();
    let samples =
        model::sampling::sample(&model, &vec![prompt; n], &seeds, task.vocabulary(), &cfg)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut tunes = Vec::with_capacity(n);
    for (i, ids) in samples.tokens.iter().enumerate() {
        let stem = a.out.join(format!("{:02}", i + 1));
        let written = task.write_sample(&a.prompt, i as u32 + 1, ids, &stem)?;
        if let Some(note) = &written.note {
            eprintln!("warning: sample {}: {note}", i + 1);
        }
        let finished = ids.last() == Some(&task.vocabulary().eos);
        if !a.json {
            let ended = if finished {
                ""
            } else {
                " (cut at --max-new-tokens)"
            };
            println!("% sample {}{ended}\n{}", i + 1, written.text);
        }
        tunes.push(serde_json::json!({
            "sample": i + 1,
            "seed": seeds[i],
            "tokens": ids.len(),
            "finished": finished,
            "files": written.files,
            "text": written.text,
            "note": written.note,
        }));
    }
    if a.json {
        let report = serde_json::json!({
            "prompt": a.prompt,
            "unknown_words": unknown,
            "checkpoint": a.checkpoint,
            "sampling": {
                "cfg_gamma": cfg.cfg_gamma,
                "cfg_plausibility": cfg.cfg_plausibility,
                "cfg_scope": cfg.cfg_scope,
                "temperature": cfg.temperature,
                "top_k": cfg.top_k,
                "max_new_tokens": cfg.max_new_tokens,
            },
            "out": a.out,
            "samples": tunes,
        });
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("wrote {n} tunes to {}", a.out.display());
    }
    Ok(())
}

pub fn eval(a: EvalArgs) -> Result<()> {
    let device = a.scoring.compute.apply()?;
    let sampling = a.sampling.config(a.scoring.max_new_tokens)?;
    let tunes = FolkTask::open(&a.scoring.data, &a.scoring.embedder, &a.scoring.judge)?;
    let task: Box<dyn Task> = if a.remi {
        Box::new(folk::remi::RemiTask::new(tunes))
    } else {
        Box::new(tunes)
    };
    let task = task.as_ref();
    let (_p, policy, _ck) = load_policy(&a.checkpoint, task, device)?;
    let embedder = task.embedder(device)?;
    let judge = task.judge(device)?;
    let cfg = EvalConfig {
        split: a.scoring.split,
        k: a.k as usize,
        prompts: a.prompts,
        batch: a.scoring.batch,
        sampling,
        seed: a.scoring.seed,
        progress: !a.scoring.no_progress && !a.scoring.json,
    };
    let r = evaluate(&policy, task, embedder.as_ref(), judge.as_ref(), &cfg)?;
    if a.scoring.json {
        let mut v = serde_json::to_value(&r)?;
        v["by_stratum"] = serde_json::to_value(r.by_stratum())?;
        println!("{v}");
    } else {
        print!("{}", r.table());
    }
    Ok(())
}

pub fn compare(a: CompareArgs) -> Result<()> {
    let device = a.scoring.compute.apply()?;
    let task = FolkTask::open(&a.scoring.data, &a.scoring.embedder, &a.scoring.judge)?;
    let embedder = task.embedder(device)?;
    let judge = task.judge(device)?;
    let mut reports = Vec::new();
    for (name, side) in [("A", &a.a), ("B", &a.b)] {
        let (_p, policy, _ck) =
            load_policy(&side.checkpoint, &task, device).with_context(|| format!("side {name}"))?;
        let cfg = EvalConfig {
            split: a.scoring.split,
            k: a.k as usize,
            prompts: Some(a.prompts as usize),
            batch: a.scoring.batch,
            sampling: side.sampling(a.scoring.max_new_tokens),
            seed: a.scoring.seed,
            progress: !a.scoring.no_progress && !a.scoring.json,
        };
        if !a.scoring.json {
            eprintln!("{name}: {side}");
        }
        reports.push(evaluate(
            &policy,
            &task,
            embedder.as_ref(),
            judge.as_ref(),
            &cfg,
        )?);
    }
    let rb = reports.pop().context("side B was not evaluated")?;
    let ra = reports.pop().context("side A was not evaluated")?;
    let c = eval::compare::Comparison::new(a.a, a.b, ra, rb)?;
    if a.scoring.json {
        println!("{}", serde_json::to_string(&c)?);
    } else {
        print!("{}", c.table());
    }
    Ok(())
}

pub fn merge(a: MergeArgs) -> Result<()> {
    use model::merge;
    let cks = merge::read_compatible(&a.checkpoints)?;
    let names: Vec<String> = a
        .checkpoints
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let (tensors, extra) = match (a.lambda, a.average) {
        (Some(l), false) => {
            anyhow::ensure!(
                cks.len() == 2,
                "--lambda merges exactly two checkpoints (got {})",
                cks.len()
            );
            (
                merge::lerp(&cks[0], &cks[1], l)?,
                serde_json::json!({"merge": "lerp", "lambda": l, "from": names}),
            )
        }
        (None, true) => (
            merge::average(&cks)?,
            serde_json::json!({"merge": "average", "from": names}),
        ),
        _ => anyhow::bail!("say how to merge: --lambda λ (two checkpoints) or --average"),
    };
    create_parent(&a.out)?;
    merge::write(&a.out, &cks[0], tensors, extra.clone())?;
    if a.json {
        let mut report = extra;
        report["out"] = serde_json::json!(a.out);
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("wrote {}", a.out.display());
    }
    Ok(())
}

/// The PyTorch module `qd export` ships (the same file qd's PyTorch references use).
const QD_MODEL_PY: &str = include_str!("../../scripts/qd_model.py");
/// The folk task's metrical position in Python (`folk::metrical`), shipped beside it.
const FOLK_METRICAL_PY: &str = include_str!("../../scripts/folk_metrical.py");

pub fn export(a: ModelExportArgs) -> Result<()> {
    // The task's vocabulary and structure; its embedder and judge are not needed.
    let task = FolkTask::new(Dataset::load(&a.data)?, PathBuf::new(), PathBuf::new());
    let ds = task.dataset();
    let (vs, _model, ck) = load_policy(&a.checkpoint, &task, tch::Device::Cpu)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    // The weights alone: no optimizer state, whatever the checkpoint held.
    model::checkpoint::save(
        &a.out.join("model.safetensors"),
        &vs,
        None,
        model::checkpoint::Stamp {
            kind: model::checkpoint::ModelKind::Policy,
            config: &ck.meta.config,
            vocab_hash: &ck.meta.vocab_hash,
            step: ck.meta.step,
            version: ck.meta.version,
            extra: serde_json::json!({"exported_from": a.checkpoint.display().to_string()}),
        },
    )?;
    let vocabulary = folk::task::vocabulary(&ds.vocab);
    let config = serde_json::json!({
        "model": ck.meta.config,
        "vocab_hash": ck.meta.vocab_hash,
        "pad": vocabulary.pad,
        "sep": vocabulary.sep,
        "eos": vocabulary.eos,
        "generatable": vocabulary.allowed,
        "input": "[prompt word ids] <sep> [tune ids]; the logits at each position predict the next id",
        "structure": ck.meta.config.structure.as_ref().map(|s| serde_json::json!({
            "name": s.name,
            "features": "folk_metrical.py (Metrical(vocab, generatable).batch(ids, sep))",
        })),
    });
    let vocab: Vec<String> = (0..ds.vocab.len() as u32)
        .map(|id| ds.vocab.text(id))
        .collect();
    for (name, bytes) in [
        ("config.json", serde_json::to_vec_pretty(&config)?),
        ("vocab.json", serde_json::to_vec_pretty(&vocab)?),
        ("qd_model.py", QD_MODEL_PY.as_bytes().to_vec()),
        ("folk_metrical.py", FOLK_METRICAL_PY.as_bytes().to_vec()),
    ] {
        model::fsutil::write_atomic(&a.out.join(name), &bytes)?;
    }
    println!(
        "wrote {}: model.safetensors, config.json, vocab.json, qd_model.py, folk_metrical.py \
         (python -c 'import qd_model; m = qd_model.load(\"{}\")')",
        a.out.display(),
        a.out.display()
    );
    Ok(())
}
