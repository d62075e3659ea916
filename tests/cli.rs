//! The `qd` binary as a user runs it: without LD_LIBRARY_PATH, with bad arguments, and
//! `qd data prepare --json` / `qd data export` on a small corpus and on the real one;
//! `make gpu-check` where no GPU is.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use model::task::Task;

fn qd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qd"))
        .args(args)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("qd runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn runs_without_ld_library_path() {
    let o = qd(&["info", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(v["threads"].as_i64().unwrap() >= 1);
}

/// What `make install` installs beside the binary: completions that know the commands
/// and their flags, a manual page per command, and the configuration reference.
#[test]
fn completions_manual_pages_and_the_configuration_reference() {
    let bash = qd(&["completions", "bash"]);
    assert!(
        bash.status.success(),
        "{}",
        String::from_utf8_lossy(&bash.stderr)
    );
    let script = stdout(&bash);
    for word in ["sweep", "learner", "--prompts", "--reference"] {
        assert!(script.contains(word), "bash completion lacks {word}");
    }
    assert!(!qd(&["completions", "tcsh"]).status.success());

    let dir = tempfile::tempdir().unwrap();
    let man = qd(&["man", "--out", dir.path().to_str().unwrap()]);
    assert!(
        man.status.success(),
        "{}",
        String::from_utf8_lossy(&man.stderr)
    );
    for page in ["qd.1", "qd-run.1", "qd-bench-learner.1", "qd-config.1"] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page}: {text:.80}"
        );
    }
    let config = std::fs::read_to_string(dir.path().join("qd-config.1")).unwrap();
    assert!(
        config.contains("reference"),
        "qd-config.1 lacks --reference"
    );

    let reference = qd(&["config", "--reference"]);
    assert!(reference.status.success());
    let text = stdout(&reference);
    assert!(text.contains("## `[limits]`") && text.contains("| `handshake_timeout_s` |"));
    // The reference describes the built-in defaults: a file or --set does not change it.
    assert!(!qd(&["config", "--reference", "--set", "learner.beta=2"])
        .status
        .success());
}

/// `make gpu-check` where there is no GPU stops at its first step, saying why.
#[test]
fn gpu_check_without_a_gpu_says_so() {
    let o = Command::new("bash")
        .arg(testkit::repo_root().join("scripts/gpu-check.sh"))
        .env("NVIDIA_SMI", "/nonexistent/nvidia-smi")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("no NVIDIA GPU here"), "{err}");
}

#[test]
fn bad_arguments_are_refused_clearly() {
    let o = qd(&["data", "prepare", "--max-tokens", "lots"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--max-tokens"));
    let o = qd(&[
        "data",
        "prepare",
        "--raw",
        "/nonexistent/raw",
        "--out",
        "/nonexistent/out",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("make setup"));
}

fn write_tiny_corpus(raw: &Path) {
    for c in [
        "essenFolksong",
        "oneills1850",
        "ryansMammoth",
        "airdsAirs",
        "miscFolk",
    ] {
        std::fs::create_dir_all(raw.join(c)).unwrap();
    }
    let tunes: String = (0..30)
        .map(|i| {
            let p = ["C", "D", "E", "F", "G", "A", "B", "c"];
            format!(
                "X:{i}\nT:Reel {i}\nR:reel\nM:C|\nL:1/8\nK:G\nG{}{}B d2 g2|[1 e4 d4:|2 g8|]\n\n",
                p[i % 8],
                p[i / 8]
            )
        })
        .collect();
    std::fs::write(
        raw.join("ryansMammoth/reels.abc"),
        tunes + "X:31\nT:bad\nM:C\nK:G\nA [CEG] |\n",
    )
    .unwrap();
}

#[test]
fn prepare_json_and_export() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("raw");
    let out = dir.path().join("folk");
    write_tiny_corpus(&raw);
    let o = qd(&[
        "data",
        "prepare",
        "--raw",
        raw.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["found"], 31);
    assert_eq!(v["parsed"], 30);
    assert_eq!(v["skipped"]["chord"], 1);

    let samples = dir.path().join("samples");
    let o = qd(&[
        "data",
        "export",
        "--data",
        out.to_str().unwrap(),
        "--split",
        "train",
        "-n",
        "2",
        "--out",
        samples.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let abc = std::fs::read_to_string(samples.join("01.abc")).unwrap();
    assert!(abc.starts_with("X:1\nT:Reel"), "{abc}");
    assert!(abc.contains("L:1/8\nK:G\n"));
    let mid = std::fs::read(samples.join("01.mid")).unwrap();
    assert_eq!(&mid[..4], b"MThd");
    assert_abc2midi_reads(&out, "train", 30);
}

/// The real corpus, when `make setup` has fetched it: at least 85% of the tunes parse.
#[test]
fn prepare_real_corpus() {
    testkit::require_setup("data/raw/essenFolksong");
    let raw = testkit::require_setup("data/raw");
    let dir = tempfile::tempdir().unwrap();
    let o = qd(&[
        "data",
        "prepare",
        "--raw",
        raw.to_str().unwrap(),
        "--out",
        dir.path().to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let (found, parsed) = (v["found"].as_u64().unwrap(), v["parsed"].as_u64().unwrap());
    assert!(found > 12_000, "found {found}");
    assert!(
        parsed as f64 >= 0.85 * found as f64,
        "parsed {parsed} of {found}"
    );
    assert!(
        v["bars_fit"].as_f64().unwrap() > 0.85,
        "bars_fit {}",
        v["bars_fit"]
    );
    assert_abc2midi_reads(dir.path(), "test", 600);
}

/// Exports `n` tunes of a split and checks that abc2midi, a standard ABC tool, reads them all
/// without an error (`make setup` installs abc2midi from Debian's packages).
fn assert_abc2midi_reads(data: &Path, split: &str, n: usize) {
    assert!(
        Command::new("abc2midi").arg("-ver").output().is_ok(),
        "abc2midi is not installed: run `make setup` first (`make test` runs it)"
    );
    let out = data.join("export");
    let o = qd(&[
        "data",
        "export",
        "--data",
        data.to_str().unwrap(),
        "--split",
        split,
        "-n",
        &n.to_string(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut files: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.retain(|f| f.extension().is_some_and(|x| x == "abc"));
    files.sort();
    assert!(files.len() >= n / 2, "only {} tunes exported", files.len());
    let all: String = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap() + "\n")
        .collect();
    std::fs::write(out.join("all.abc"), all).unwrap();
    let o = Command::new("abc2midi")
        .arg(out.join("all.abc"))
        .arg("-o")
        .arg(out.join("all.mid"))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("Error")).collect();
    assert!(
        errors.is_empty(),
        "abc2midi reports {} errors, first: {:?}",
        errors.len(),
        errors.first()
    );
}

/// Every model command end to end on the real corpus with the tiny preset and a handful
/// of steps: pre-training, embedder, judge, sampling, evaluation, and the benchmark, whose
/// PyTorch reference must agree with qd on the same weights.
#[test]
fn model_commands_end_to_end() {
    let raw = testkit::require_setup("data/raw");
    testkit::require_setup("data/raw/essenFolksong");
    let python = testkit::require_setup(".venv/bin/python");
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let run = |args: &[&str]| {
        let o = qd(args);
        assert!(
            o.status.success(),
            "qd {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        stdout(&o)
    };
    run(&[
        "data",
        "prepare",
        "--raw",
        raw.to_str().unwrap(),
        "--out",
        &p("folk"),
        "--json",
    ]);
    let small = [
        "--data",
        &p("folk"),
        "--steps",
        "3",
        "--batch-size",
        "8",
        "--no-progress",
        "--threads",
        "1",
    ];
    let out = run(&[
        &[
            "pretrain",
            "--preset",
            "tiny",
            "--out",
            &p("pt"),
            "--context",
            "64",
        ],
        &small[..],
    ]
    .concat());
    assert!(out.contains("pre-trained 3 steps"), "{out}");
    // The model has exactly the positions pre-training trained (the tiny preset has 320).
    let trained =
        model::checkpoint::Checkpoint::read(Path::new(&p("pt/last.safetensors"))).unwrap();
    assert_eq!(trained.meta.config.max_len, 64);
    let out = run(&[
        &["embedder", "train", "--out", &p("emb.safetensors")],
        &small[..],
    ]
    .concat());
    assert!(out.contains("validation retrieval accuracy"), "{out}");
    let out = run(&[
        &["judge", "train", "--out", &p("judge.safetensors")],
        &small[..],
    ]
    .concat());
    assert!(out.contains("validation accuracy genre"), "{out}");

    let ck = p("pt/last.safetensors");
    let out = run(&[
        "sample",
        "a lively irish zorblax reel",
        "--checkpoint",
        &ck,
        "--data",
        &p("folk"),
        "-n",
        "2",
        "--cfg",
        "3",
        "--max-new-tokens",
        "24",
        "--out",
        &p("samples"),
    ]);
    assert!(out.contains("X:1") && out.contains("X:2"), "{out}");
    assert!(Path::new(&p("samples")).join("01.abc").exists());

    // A merged checkpoint is an ordinary one; what cannot be merged is refused. With
    // --json, merge and sample say what they did as one JSON object.
    let out = run(&[
        "merge",
        &ck,
        &ck,
        "--lambda",
        "0.5",
        "--out",
        &p("merged.safetensors"),
    ]);
    assert!(out.contains("wrote"), "{out}");
    let merged: serde_json::Value = serde_json::from_str(&run(&[
        "merge",
        &ck,
        &ck,
        "--lambda",
        "0.25",
        "--out",
        &p("merged.safetensors"),
        "--json",
    ]))
    .unwrap();
    assert_eq!(merged["merge"], "lerp");
    assert_eq!(merged["lambda"], 0.25);
    assert_eq!(merged["out"], p("merged.safetensors"));
    assert_eq!(merged["from"], serde_json::json!([ck, ck]));
    // Two different models at λ = 0.25: every weight is 0.75·a + 0.25·b.
    let a = model::checkpoint::Checkpoint::read(Path::new(&ck)).unwrap();
    tch::manual_seed(9);
    let other: Vec<(String, tch::Tensor)> = a
        .tensors()
        .map(|(n, t)| (n.to_string(), t + t.randn_like() * 0.1))
        .collect();
    model::merge::write(
        Path::new(&p("other.safetensors")),
        &a,
        other,
        serde_json::Value::Null,
    )
    .unwrap();
    run(&[
        "merge",
        &ck,
        &p("other.safetensors"),
        "--lambda",
        "0.25",
        "--out",
        &p("quarter.safetensors"),
    ]);
    let b = model::checkpoint::Checkpoint::read(Path::new(&p("other.safetensors"))).unwrap();
    let q = model::checkpoint::Checkpoint::read(Path::new(&p("quarter.safetensors"))).unwrap();
    let named =
        |c: &model::checkpoint::Checkpoint| -> std::collections::HashMap<String, tch::Tensor> {
            c.tensors()
                .map(|(n, t)| (n.to_string(), t.shallow_clone()))
                .collect()
        };
    let (b, q) = (named(&b), named(&q));
    let mut compared = 0;
    for (name, ta) in a.tensors() {
        let (tb, tq) = (&b[name], &q[name]);
        let want = ta * 0.75 + tb * 0.25;
        let diff = f64::try_from((tq - &want).abs().max()).unwrap();
        assert!(diff < 1e-6, "{name}: {diff}");
        assert!(!tq.equal(ta), "{name} did not move");
        compared += 1;
    }
    assert!(compared > 0);
    let sampled: serde_json::Value = serde_json::from_str(&run(&[
        "sample",
        "a reel",
        "--checkpoint",
        &p("merged.safetensors"),
        "--data",
        &p("folk"),
        "-n",
        "2",
        "--max-new-tokens",
        "8",
        "--out",
        &p("merged-samples"),
        "--json",
    ]))
    .unwrap();
    assert_eq!(sampled["prompt"], "a reel");
    let tunes = sampled["samples"].as_array().unwrap();
    assert_eq!(tunes.len(), 2);
    for (i, t) in tunes.iter().enumerate() {
        assert_eq!(t["sample"], i + 1);
        let files = t["files"].as_array().unwrap();
        assert!(!files.is_empty(), "{t}");
        for f in files {
            assert!(Path::new(f.as_str().unwrap()).exists(), "{f}");
        }
        assert!(t["tokens"].as_u64().unwrap() <= 8, "{t}");
        assert!(t["text"].as_str().unwrap().contains("X:"), "{t}");
    }
    let o = qd(&[
        "merge",
        &ck,
        &p("emb.safetensors"),
        "--lambda",
        "0.5",
        "--out",
        &p("x.safetensors"),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("only policies"));
    let o = qd(&["merge", &ck, &ck, "--out", &p("x.safetensors")]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("--lambda"));
    assert!(!Path::new(&p("x.safetensors")).exists());
    let o = qd(&[
        "sample",
        "a reel",
        "--checkpoint",
        &p("emb.safetensors"),
        "--data",
        &p("folk"),
    ]);
    assert!(
        !o.status.success(),
        "an embedder checkpoint is not a policy"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a Policy model"));

    let out = run(&[
        "eval",
        "--checkpoint",
        &ck,
        "--embedder",
        &p("emb.safetensors"),
        "--judge",
        &p("judge.safetensors"),
        "--data",
        &p("folk"),
        "--prompts",
        "3",
        "-k",
        "2",
        "--max-new-tokens",
        "16",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (v["prompts"].as_u64(), v["samples"].as_u64()),
        (Some(3), Some(6))
    );
    let x = |key: &str| v[key].as_f64().unwrap();
    // Quality is a mean of adherence × validity, each in [0, 1]: at most either mean.
    for key in [
        "quality",
        "adherence",
        "validity",
        "edit_diversity",
        "edit_diversity_across",
    ] {
        assert!((0.0..=1.0).contains(&x(key)), "{key} = {}: {v}", x(key));
    }
    assert!(
        x("quality") <= x("adherence") + 1e-12 && x("quality") <= x("validity") + 1e-12,
        "{v}"
    );
    for key in ["embed_diversity", "embed_diversity_across"] {
        assert!((0.0..=2.0).contains(&x(key)), "{key} = {}: {v}", x(key));
    }
    // Each mean is the mean of its per-prompt values and lies in its 95% interval.
    for key in [
        "quality",
        "adherence",
        "validity",
        "embed_diversity",
        "edit_diversity",
    ] {
        let per: Vec<f64> = v["per_prompt"][key]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(per.len(), 3, "{key}");
        assert!(
            (per.iter().sum::<f64>() / 3.0 - x(key)).abs() < 1e-9,
            "{key}"
        );
        let i = &v["intervals"][key];
        let (lo, hi) = (i["lo"].as_f64().unwrap(), i["hi"].as_f64().unwrap());
        assert!(
            lo <= x(key) && x(key) <= hi,
            "{key}: {} not in [{lo}, {hi}]",
            x(key)
        );
    }

    // Side by side: a point against itself ties everywhere; against CFG the shares add
    // up. Samples never run past the 64 trained positions, whatever the budget.
    let compare = |a: &str, b: &str| -> serde_json::Value {
        let out = run(&[
            "compare",
            a,
            b,
            "--embedder",
            &p("emb.safetensors"),
            "--judge",
            &p("judge.safetensors"),
            "--data",
            &p("folk"),
            "--prompts",
            "4",
            "--max-new-tokens",
            "200",
            "--threads",
            "1",
            "--json",
        ]);
        serde_json::from_str(out.trim()).unwrap()
    };
    let same = compare(&ck, &ck);
    for criterion in ["quality", "diversity"] {
        let w = &same[criterion];
        assert_eq!(
            (w["ties"].as_f64(), w["a_preferred"].as_f64()),
            (Some(1.0), Some(0.5)),
            "{same}"
        );
    }
    assert_eq!(same["quality_difference"]["estimate"].as_f64(), Some(0.0));
    let guided = compare(&ck, &format!("{ck}@cfg=3,scope=content"));
    assert_eq!(guided["b"]["cfg_scope"], "content");
    for criterion in ["quality", "diversity"] {
        let w = &guided[criterion];
        let sum: f64 = ["a_wins", "ties", "b_wins"]
            .iter()
            .map(|k| w[k].as_f64().unwrap())
            .sum();
        assert!((sum - 1.0).abs() < 1e-12, "{guided}");
    }
    for side in ["a_report", "b_report"] {
        let mean_length = guided[side]["mean_length"].as_f64().unwrap();
        assert!(mean_length <= 63.0, "{side}: {mean_length}");
    }
    let o = qd(&["compare", &ck, &format!("{ck}@cfg=3,gamma=2")]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("unknown setting \"gamma\""),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    let out = run(&[
        "bench",
        "generate",
        "--checkpoint",
        &ck,
        "--data",
        &p("folk"),
        "--batch",
        "2",
        "--new-tokens",
        "6",
        "--reps",
        "1",
        "--python",
        python.to_str().unwrap(),
        "--threads",
        "1",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    // The ratios are the ones of the medians it reports, measured with the threads asked.
    let x = |key: &str| v[key].as_f64().unwrap();
    assert_eq!(v["threads"].as_i64(), Some(1), "{v}");
    assert!(
        (x("cfg_over_plain") - x("qd_cfg") / x("qd_plain")).abs() < 1e-9,
        "{v}"
    );
    assert!(
        (x("qd_over_torch_plain") - x("qd_plain") / x("torch_plain")).abs() < 1e-9
            && (x("qd_over_torch_cfg") - x("qd_cfg") / x("torch_cfg")).abs() < 1e-9,
        "{v}"
    );
    // The whole log-probability vectors agree at every step through the KV cache, plain
    // and guided.
    for key in ["max_logprob_diff", "max_logprob_diff_cfg"] {
        let diff = v[key].as_f64().unwrap_or_else(|| panic!("no {key}: {v}"));
        assert!(
            diff < 1e-4,
            "{key}: qd and the PyTorch reference disagree by {diff}"
        );
    }

    // The learner's steps against their PyTorch reference (torch.optim.AdamW), with every
    // term of the loss at work — the policy gradient (β > 0) with clipped and unclipped
    // importance weights, CFG — for each divergence, scope and plausibility constraint the
    // learner offers: the first step's loss, gradient and gradient norms, and the weights
    // and AdamW's moments after five steps, tensor by tensor.
    // Clipping per term once, with the richest teacher.
    let mut cases: Vec<(&str, &str, &str, &str)> = Vec::new();
    for divergence in ["reverse_kl", "forward_kl", "jsd"] {
        for scope in ["all", "content"] {
            for plausibility in ["0", "0.1"] {
                cases.push((divergence, scope, plausibility, "total"));
            }
        }
    }
    cases.push(("jsd", "content", "0.1", "per_term"));
    for (divergence, scope, plausibility, clipping) in cases {
        let what = format!(
            "{divergence}, scope {scope}, plausibility {plausibility}, clipping {clipping}"
        );
        let sets = [
            format!("paths.base={ck}"),
            format!("paths.data={}", p("folk")),
            "learner.batch_prompts=3".into(),
            "learner.beta=2".into(),
            format!("learner.cfg_plausibility={plausibility}"),
            format!("learner.cfg_scope={scope}"),
            format!("learner.divergence={divergence}"),
            "learner.jsd_alpha=0.3".into(),
            format!("learner.grad_clip_scope={clipping}"),
        ];
        let mut args = vec!["bench", "learner", "--new-tokens", "12", "--reps", "1"];
        args.extend(["--compare-steps", "5", "--python", python.to_str().unwrap()]);
        args.extend(["--threads", "1", "--json"]);
        for s in &sets {
            args.extend(["--set", s]);
        }
        let out = run(&args);
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        let x = |key: &str| v[key].as_f64().unwrap_or_else(|| panic!("no {key}: {v}"));
        assert_eq!(v["compare_steps"], 5, "{what}: {v}");
        assert!(x("loss_diff") < 1e-4, "{what}: the losses disagree: {v}");
        assert!(
            x("grad_rel_diff") < 1e-3,
            "{what}: the gradients disagree: {v}"
        );
        assert!(
            x("param_diff_over_lr") < 1e-2,
            "{what}: the weights disagree: {v}"
        );
        assert!(
            x("moment_rel_diff") < 1e-3,
            "{what}: the moments disagree: {v}"
        );
        // The gradient norms, the step's and each term's alone, agree; both terms
        // have one.
        for part in ["grad_norm", "grad_norm_distill", "grad_norm_pg"] {
            let norm = |who: &str| {
                v[who][part]
                    .as_f64()
                    .unwrap_or_else(|| panic!("no {who}.{part}: {v}"))
            };
            let (q, t) = (norm("qd_grad_norm"), norm("torch_grad_norm"));
            assert!(q > 1e-6 && (q - t).abs() < 1e-4 * q, "{what}, {part}: {v}");
        }
        // Both terms of the loss were at work, and some importance weights were
        // clipped.
        assert!(v["qd"]["pg"].as_f64().unwrap().abs() > 1e-6, "{what}: {v}");
        assert!(v["qd"]["distill"].as_f64().unwrap() > 1e-6, "{what}: {v}");
        assert!(
            v["qd"]["clip_fraction"].as_f64().unwrap() > 0.0,
            "{what}: {v}"
        );
        assert!(
            (x("qd_gflops") - x("step_gflop") / x("qd_step_seconds")).abs() < 1e-9 * x("qd_gflops")
                && (x("share_of_peak") - x("qd_gflops") / x("gemm_peak_gflops")).abs() < 1e-9,
            "{v}"
        );
    }

    // The pre-training step (in length groups) against its one-pass PyTorch reference.
    let out = run(&[
        "bench",
        "pretrain",
        "--checkpoint",
        &ck,
        "--data",
        &p("folk"),
        "--batch-size",
        "6",
        "--reps",
        "1",
        "--python",
        python.to_str().unwrap(),
        "--threads",
        "1",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let x = |key: &str| v[key].as_f64().unwrap_or_else(|| panic!("no {key}: {v}"));
    assert!(x("loss_diff") < 1e-4, "the losses disagree: {v}");
    assert!(x("grad_rel_diff") < 1e-4, "the gradients disagree: {v}");
    assert!(
        (x("torch_grad_norm") - x("qd_grad_norm")).abs() < 1e-4 * x("qd_grad_norm"),
        "{v}"
    );
    // qd computes no more than the padded batch, and its rate is of what it computes.
    assert!(x("step_gflop") <= x("padded_gflop") + 1e-12, "{v}");
    assert!(
        (x("qd_gflops") - x("step_gflop") / x("qd_step_seconds")).abs() < 1e-9 * x("qd_gflops"),
        "{v}"
    );

    // How the cost grows: one point of each series, written as CSV and a figure.
    let out = run(&[
        "bench",
        "scaling",
        "--set",
        &format!("paths.data={}", p("folk")),
        "--prompts",
        "1,2",
        "--lengths",
        "8",
        "--presets",
        "tiny",
        "--batches",
        "2",
        "--length",
        "8",
        "--reps",
        "1",
        "--threads",
        "1",
        "--out",
        &p("scaling"),
        "--json",
    ]);
    let points: Vec<serde_json::Value> = serde_json::from_str(out.trim()).unwrap();
    let series: Vec<&str> = points
        .iter()
        .map(|p| p["series"].as_str().unwrap())
        .collect();
    assert_eq!(
        series,
        ["prompts", "prompts", "length", "preset", "generation"]
    );
    assert_eq!(points[1]["batch"], 2, "{out}");
    assert!(points[..4]
        .iter()
        .all(|p| p["step_seconds"].as_f64().unwrap() > 0.0));
    assert!(points[4]["tokens_per_s"].as_f64().unwrap() > 0.0, "{out}");
    let csv = std::fs::read_to_string(p("scaling/scaling.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + points.len(), "{csv}");
    assert!(Path::new(&p("scaling/scaling.png")).exists());

    // An exported policy loads in PyTorch with torch alone and gives qd's logits.
    let out = run(&[
        "export",
        "--checkpoint",
        &ck,
        "--data",
        &p("folk"),
        "--out",
        &p("exported"),
    ]);
    assert!(out.contains("wrote"), "{out}");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p("exported/config.json")).unwrap()).unwrap();
    let vocab: Vec<String> =
        serde_json::from_slice(&std::fs::read(p("exported/vocab.json")).unwrap()).unwrap();
    let sep = config["sep"].as_u64().unwrap() as i64;
    assert_eq!(vocab[sep as usize], "<sep>");
    assert_eq!(
        config["structure"]["name"],
        folk::metrical::NAME,
        "{config}"
    );
    // A held-out tune of the corpus after its prompt: the metrical position computed in
    // Python (folk_metrical.py) must be qd's for the logits to agree.
    let ds = folk::dataset::Dataset::load(Path::new(&p("folk"))).unwrap();
    let r = ds.split(model::task::Split::Test).next().unwrap().clone();
    let ids: Vec<i64> = r
        .prompt
        .iter()
        .map(|&x| i64::from(x))
        .chain([sep])
        .chain(r.tune.iter().map(|&x| i64::from(x)))
        .take(60)
        .collect();
    let script = format!(
        "import json, sys, torch\nsys.path.insert(0, {dir:?})\nimport qd_model, folk_metrical\n\
         m = qd_model.load({dir:?})\nconfig = json.load(open({dir:?} + '/config.json'))\n\
         vocab = json.load(open({dir:?} + '/vocab.json'))\n\
         f = folk_metrical.Metrical(vocab, config['generatable']).batch([{ids:?}], config['sep'])\n\
         ids = torch.tensor([{ids:?}])\n\
         with torch.no_grad():\n    l, _ = m(ids, torch.ones_like(ids, dtype=torch.bool), None, f)\n\
         print(json.dumps(l[0].tolist()))\n",
        dir = p("exported"),
    );
    let o = Command::new(&python)
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let theirs: Vec<Vec<f64>> = serde_json::from_slice(&o.stdout).unwrap();
    // No optimizer state travels with the weights.
    assert!(
        !String::from_utf8_lossy(&std::fs::read(p("exported/model.safetensors")).unwrap())
            .contains("optimizer.")
    );
    let task = folk::FolkTask::new(ds, PathBuf::new(), PathBuf::new());
    let (_vs, m, _) =
        model::checkpoint::load_policy(Path::new(&ck), &task, tch::Device::Cpu).unwrap();
    let t = tch::Tensor::from_slice(&ids).unsqueeze(0);
    let structure = task.vocabulary().structure.clone().unwrap();
    let f = model::structure::row_features(structure.as_ref(), r.prompt.len(), &r.tune);
    let f = tch::Tensor::from_slice(&f[..ids.len() * folk::metrical::PER_TOKEN]).view([
        1,
        ids.len() as i64,
        folk::metrical::PER_TOKEN as i64,
    ]);
    let ours = tch::no_grad(|| {
        m.forward(
            &t,
            &t.ones_like().to_kind(tch::Kind::Bool),
            Some(&f),
            None,
            false,
        )
    });
    let ours: Vec<Vec<f64>> =
        Vec::try_from(ours.squeeze_dim(0).to_kind(tch::Kind::Double)).unwrap();
    assert_eq!((ours.len(), ours[0].len()), (theirs.len(), theirs[0].len()));
    let diff = ours
        .iter()
        .flatten()
        .zip(theirs.iter().flatten())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(diff < 1e-5, "exported logits differ from qd's by {diff}");
}
