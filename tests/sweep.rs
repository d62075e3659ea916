//! `qd sweep` end to end on tiny models and a tiny grid: every family and row, LERP end
//! points equal to the end models' evaluations, valid PNG and SVG figures, a fully cached
//! re-run, and a changed input re-evaluating only the points it affects.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use model::checkpoint::Checkpoint;
use model::merge;

fn qd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qd"))
        .args(args)
        .output()
        .expect("qd runs")
}

fn qd_ok(args: &[&str]) -> String {
    let o = qd(args);
    assert!(
        o.status.success(),
        "qd {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A "run folder" whose student is the base model plus seeded noise, with training logs.
/// `beta: Some(b)` records β, training seed 0 and the default teacher (CFG γ = 3 on the
/// content, no plausibility constraint) in the student's metadata, as the learner does; `None`
/// leaves them to `run-config.toml`, as `qd run` writes it (the teacher: the defaults).
fn run_dir(dir: &Path, base: &Path, seed: i64, beta: Option<f64>, config_beta: f64) -> PathBuf {
    stamped_run(
        dir,
        base,
        seed,
        beta.map(|b| serde_json::json!({ "beta": b, "seed": 0, "cfg_gamma": 3.0, "cfg_scope": "content", "cfg_plausibility": 0.0 })),
        &format!("[learner]\nbeta = {config_beta:?}\n"),
    )
}

/// A run folder whose student carries `extra` as its metadata (none: `Null`) and whose
/// `run-config.toml` is `config`.
fn stamped_run(
    dir: &Path,
    base: &Path,
    seed: i64,
    extra: Option<serde_json::Value>,
    config: &str,
) -> PathBuf {
    let ck = Checkpoint::read(base).unwrap();
    tch::manual_seed(seed);
    let tensors = ck
        .tensors()
        .map(|(n, t)| (n.to_string(), t + t.randn_like() * 0.05))
        .collect();
    std::fs::create_dir_all(dir).unwrap();
    let extra = extra.unwrap_or(serde_json::Value::Null);
    merge::write(&dir.join("student.safetensors"), &ck, tensors, extra).unwrap();
    std::fs::write(dir.join("run-config.toml"), config).unwrap();
    let train: String = (1..=12)
        .map(|s| format!("{{\"step\":{s},\"kl\":{}}}\n", 0.3 - 0.01 * s as f64))
        .collect();
    std::fs::write(dir.join("train.jsonl"), train).unwrap();
    let eval: String = (0..3)
        .map(|i| {
            format!(
                "{{\"version\":{},\"step\":{},\"report\":{{\"quality\":{},\"embed_diversity\":{}}}}}\n",
                5 * i + 1,
                5 * i,
                0.1 + 0.01 * i as f64,
                0.5 + 0.02 * i as f64
            )
        })
        .collect();
    std::fs::write(dir.join("eval.jsonl"), eval).unwrap();
    dir.to_path_buf()
}

type Rows = HashMap<(String, String), Vec<String>>;

/// `sweep.csv` as (family, param) → the remaining fields but the last (the run's seed,
/// empty outside the families made of runs), and the header. Params are keyed as Rust prints the
/// number (`1`, `0.25`).
fn read_csv(path: &Path) -> (Vec<String>, Rows, usize) {
    let mut r = csv::Reader::from_path(path).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(str::to_string).collect();
    assert_eq!(header.last().map(String::as_str), Some("seed"));
    let mut rows = HashMap::new();
    let mut n = 0;
    for record in r.records() {
        let f: Vec<String> = record.unwrap().iter().map(str::to_string).collect();
        assert_eq!(f.len(), header.len(), "{f:?}");
        let of_runs = ["beta", "distil-less", "lerp", "lerp-base"].contains(&f[0].as_str());
        assert_eq!(f.last().unwrap().is_empty(), !of_runs, "{f:?}");
        let param = f[1].parse::<f64>().unwrap().to_string();
        rows.insert((f[0].clone(), param), f[2..f.len() - 1].to_vec());
        n += 1;
    }
    (header, rows, n)
}

/// The fixture dataset and a tiny base policy, embedder and judge trained for `steps`
/// steps in `dir`; the dataset's folder and the base checkpoint.
fn tiny_models(dir: &Path, steps: u32) -> (PathBuf, PathBuf) {
    let data = testkit::fixture_dataset(dir);
    let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
    let steps = steps.to_string();
    let common = [
        "--data",
        data.to_str().unwrap(),
        "--batch-size",
        "8",
        "--no-progress",
        "--threads",
        "1",
        "--steps",
        &steps,
    ];
    let commands: [&[&str]; 3] = [
        &[
            "pretrain",
            "--preset",
            "tiny",
            "--context",
            "64",
            "--out",
            &p("pt"),
        ],
        &["embedder", "train", "--out", &p("emb.safetensors")],
        &["judge", "train", "--out", &p("judge.safetensors")],
    ];
    for command in commands {
        qd_ok(&[command, &common[..]].concat());
    }
    (data, dir.join("pt/last.safetensors"))
}

fn counts(stdout: &str) -> String {
    stdout
        .lines()
        .find(|l| l.contains(" points: "))
        .unwrap_or_else(|| panic!("no count line in:\n{stdout}"))
        .to_string()
}

#[test]
fn sweep_families_cache_and_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (data, base) = tiny_models(dir, 3);
    let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
    let zero = run_dir(&dir.join("rl/beta-0"), &base, 1, Some(0.0), 0.0);
    // A checkpoint the β = 0 run kept from earlier in its training: the distil-less
    // control.
    stamped_run(&dir.join("earlier"), &base, 4, None, "");
    std::fs::create_dir_all(zero.join("checkpoints")).unwrap();
    std::fs::copy(
        dir.join("earlier/student.safetensors"),
        zero.join("checkpoints/step-00000005.safetensors"),
    )
    .unwrap();
    // β from run-config.toml when the student does not record it.
    let fifty = run_dir(&dir.join("rl/beta-50"), &base, 2, None, 50.0);

    let out = p("sweep");
    let sweep = |runs: &[&Path], extra: &[&str]| -> Output {
        let mut args: Vec<String> = vec!["sweep".into(), "--runs".into()];
        args.extend(runs.iter().map(|r| r.to_str().unwrap().to_string()));
        for a in [
            "--base",
            base.to_str().unwrap(),
            "--embedder",
            &p("emb.safetensors"),
            "--judge",
            &p("judge.safetensors"),
            "--data",
            data.to_str().unwrap(),
            "--prompts",
            "2",
            "--samples",
            "2",
            "--cfg",
            "1,3",
            "--temperatures",
            "0.8,1",
            "--plausibility",
            "0.1",
            "--lambdas",
            "0,0.25,1",
            "--max-new-tokens",
            "12",
            "--threads",
            "1",
            "--out",
            &out,
        ] {
            args.push(a.to_string());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        qd(&args)
    };
    let ok = |o: Output| {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };

    let first = ok(sweep(&[&zero, &fifty], &[]));
    // 17 points; 11 distinct (weights, sampling) pairs: β = 0 is also LERP λ = 0,
    // LERP-base λ = 0 and the β = 0 student at T = 1; β = 50 is LERP λ = 1; CFG γ = 1 is
    // the base at T = 1 and LERP-base λ = 1.
    assert_eq!(
        counts(&first),
        "17 points: 11 evaluated, 6 cached",
        "{first}"
    );
    assert!(
        first.contains("| family | parameter | seed | quality"),
        "{first}"
    );
    assert!(first.contains("Best CFG point"), "{first}");
    let csv = Path::new(&out).join("sweep.csv");
    let (header, rows, n) = read_csv(&csv);
    assert_eq!(
        &header[..5],
        ["family", "param", "quality", "quality_lo", "quality_hi"]
    );
    assert_eq!(n, 17);
    let expected = [
        ("beta", "0"),
        ("beta", "50"),
        ("cfg", "1"),
        ("cfg", "3"),
        ("temperature-base", "0.8"),
        ("temperature-base", "1"),
        ("temperature-beta0", "0.8"),
        ("temperature-beta0", "1"),
        ("plausibility", "0.1"),
        ("distil-less", "5"),
        ("lerp", "0"),
        ("lerp", "0.25"),
        ("lerp", "1"),
        ("lerp-base", "0"),
        ("lerp-base", "0.25"),
        ("lerp-base", "1"),
        ("average", "2"),
    ];
    for (f, param) in expected {
        assert!(
            rows.contains_key(&(f.to_string(), param.to_string())),
            "no row {f} {param}"
        );
    }
    let row = |f: &str, param: &str| rows[&(f.to_string(), param.to_string())].clone();
    // LERP's ends are its end models, bit for bit: their points share one cache key (the
    // weights' fingerprint, not the model's name) and so one evaluation.
    let point = |name: &str| -> serde_json::Value {
        serde_json::from_str(
            &std::fs::read_to_string(Path::new(&out).join("points").join(name)).unwrap(),
        )
        .unwrap()
    };
    for (end, model) in [
        ("lerp-0-seed-0.json", "beta-0-seed-0.json"),
        ("lerp-1-seed-0.json", "beta-50-seed-0.json"),
        ("lerp-base-0-seed-0.json", "beta-0-seed-0.json"),
        ("lerp-base-1-seed-0.json", "cfg-1.json"),
    ] {
        let (a, b) = (point(end), point(model));
        assert_eq!(a["key"], b["key"], "{end} vs {model}");
        assert_ne!(a["model"], b["model"], "{end} vs {model}");
    }
    assert_ne!(
        point("lerp-0.25-seed-0.json")["key"],
        point("beta-0-seed-0.json")["key"]
    );
    // The plausibility constraint alone: no guidance.
    let alone = point("plausibility-0.1.json");
    assert_eq!(alone["sampling"]["cfg_plausibility"], 0.1);
    assert!(alone["sampling"]["cfg_gamma"].is_null());
    // Distilling less: the β = 0 run's kept checkpoint.
    let earlier = point("distil-less-5-seed-0.json");
    assert!(
        earlier["model"]
            .as_str()
            .unwrap()
            .ends_with("checkpoints/step-00000005.safetensors"),
        "{earlier}"
    );
    // The CFG family is sampled as the runs' teacher was.
    assert_eq!(point("cfg-3.json")["sampling"]["cfg_scope"], "content");
    // No plausibility constraint: none recorded.
    assert!(point("cfg-3.json")["sampling"]["cfg_plausibility"].is_null());
    assert_eq!(point("cfg-3.json")["sampling"]["cfg_gamma"], 3.0);
    assert_eq!(row("lerp", "0"), row("beta", "0"));
    assert_eq!(row("lerp", "1"), row("beta", "50"));
    assert_eq!(row("lerp-base", "0"), row("beta", "0"));
    assert_eq!(row("lerp-base", "1"), row("cfg", "1"));
    assert_eq!(row("temperature-beta0", "1"), row("beta", "0"));
    assert_ne!(row("lerp", "0.25"), row("beta", "0"));
    // Every row's mean lies within its 95% interval.
    let col = |name: &str| header.iter().position(|h| h == name).unwrap() - 2;
    for r in rows.values() {
        let quality: f64 = r[0].parse().unwrap();
        assert!((0.0..=1.0).contains(&quality), "{r:?}");
        for m in ["quality", "embed_diversity", "edit_diversity"] {
            let [v, lo, hi] = [m, &format!("{m}_lo"), &format!("{m}_hi")]
                .map(|c| r[col(c)].parse::<f64>().unwrap());
            assert!(lo <= v && v <= hi, "{m}: {v} not in [{lo}, {hi}]");
        }
    }

    for name in ["front", "lerp", "training"] {
        let png = std::fs::read(Path::new(&out).join(format!("{name}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{name}.png");
        let svg = std::fs::read_to_string(Path::new(&out).join(format!("{name}.svg"))).unwrap();
        let doc = roxmltree::Document::parse(&svg).unwrap();
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        assert!(
            doc.descendants().any(|n| n
                .text()
                .is_some_and(|t| t.contains("quality") || t.contains("KL"))),
            "{name}.svg has no axis text"
        );
    }
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(&out).join("summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["fronts"].as_array().unwrap().len(), 9);
    assert_eq!(summary["most_diverse"]["beta"], 50.0);
    assert_eq!(summary["best_cfg"]["family"], "cfg");
    // Each family's hypervolume is the one of its rows in sweep.csv (the first two
    // columns are the key of `rows`), computed here again.
    let (q, d) = (col("quality"), col("embed_diversity"));
    for front in summary["fronts"].as_array().unwrap() {
        let family = front["family"].as_str().unwrap();
        let points: Vec<eval::front::Point> = rows
            .iter()
            .filter(|((f, _), _)| f == family)
            .map(|(_, r)| eval::front::Point {
                quality: r[q].parse().unwrap(),
                diversity: r[d].parse().unwrap(),
            })
            .collect();
        assert_eq!(
            front["points"].as_u64(),
            Some(points.len() as u64),
            "{front}"
        );
        let hv = eval::front::hypervolume(&points, eval::sweep::REFERENCE);
        let reported = front["hypervolume"].as_f64().unwrap();
        assert!(
            (hv - reported).abs() < 1e-12,
            "{family}: {reported} vs {hv}"
        );
        let positive = points.iter().any(|p| p.quality > 0.0 && p.diversity > 0.0);
        assert_eq!(hv > 0.0, positive, "{family}: {points:?}");
    }
    assert_eq!(summary["chords"].as_array().unwrap().len(), 2);
    // The reward's arms (β = 50, LERP λ = 0.25) against each baseline at their own
    // diversity: the gain is the arm's quality minus the baseline's front at that
    // diversity, computed here again from sweep.csv.
    let gains = summary["baseline_gains"].as_array().unwrap();
    assert_eq!(gains.len(), 2 * 5, "{gains:?}");
    let mut compared = 0;
    for g in gains {
        let against = g["against"].as_str().unwrap();
        let pts: Vec<eval::front::Point> = rows
            .iter()
            .filter(|((f, _), _)| f == against)
            .map(|(_, r)| eval::front::Point {
                quality: r[q].parse().unwrap(),
                diversity: r[d].parse().unwrap(),
            })
            .collect();
        let (quality, diversity) = (
            g["quality"].as_f64().unwrap(),
            g["embed_diversity"].as_f64().unwrap(),
        );
        match eval::front::quality_at(&pts, diversity) {
            None => assert!(g["gain"].is_null(), "{g}"),
            Some(reach) => {
                let gain = &g["gain"];
                let estimate = gain["estimate"].as_f64().unwrap();
                assert!((estimate - (quality - reach)).abs() < 1e-12, "{g}");
                let (lo, hi) = (&gain["interval"]["lo"], &gain["interval"]["hi"]);
                assert!(lo.as_f64().unwrap() <= hi.as_f64().unwrap(), "{g}");
                compared += 1;
            }
        }
    }
    assert!(
        compared > 0,
        "no arm within any baseline's reach: {gains:?}"
    );
    assert!(
        first.contains("The diversity reward against its baselines"),
        "{first}"
    );
    // Its table has one column per baseline and one row per arm.
    let md = std::fs::read_to_string(Path::new(&out).join("summary.md")).unwrap();
    let header = md
        .lines()
        .find(|l| l.starts_with("| arm | quality | diversity |"))
        .unwrap();
    assert_eq!(header.matches('|').count() - 1, 3 + 5, "{header}");
    let arms = md
        .lines()
        .filter(|l| {
            l.starts_with("| β = 50 |") || l.starts_with("| LERP β = 0 → diverse, λ = 0.25 |")
        })
        .filter(|l| l.matches('|').count() - 1 == 3 + 5)
        .count();
    assert_eq!(arms, 2, "{md}");

    // Nothing changed: nothing is evaluated, and the table is the same. With --json the
    // report is summary.json's object plus the tables written.
    let before = std::fs::read(&csv).unwrap();
    let again: serde_json::Value =
        serde_json::from_str(&ok(sweep(&[&zero, &fifty], &["--no-progress", "--json"]))).unwrap();
    assert_eq!(
        (&again["points"], &again["evaluated"], &again["cached"]),
        (
            &serde_json::json!(17),
            &serde_json::json!(0),
            &serde_json::json!(17)
        ),
        "{again}"
    );
    assert_eq!(again["chords"], summary["chords"]);
    let files: Vec<&str> = again["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(files.len(), 3, "{files:?}");
    assert!(files.iter().all(|f| Path::new(f).exists()), "{files:?}");
    assert_eq!(std::fs::read(&csv).unwrap(), before);

    // A retrained β = 50 run: its student, LERP λ = 0.25 and λ = 1 (the same weights) and
    // the average change; nothing else.
    run_dir(&fifty, &base, 3, None, 50.0);
    let changed = ok(sweep(&[&zero, &fifty], &["--no-progress"]));
    assert_eq!(
        counts(&changed),
        "17 points: 3 evaluated, 14 cached",
        "{changed}"
    );
    let (_, after, _) = read_csv(&csv);
    for (key, fields) in &rows {
        let moved = [
            ("beta", "50"),
            ("lerp", "0.25"),
            ("lerp", "1"),
            ("average", "2"),
        ]
        .iter()
        .any(|(f, p)| key.0 == *f && key.1 == *p);
        if !moved {
            assert_eq!(&after[key], fields, "{key:?} changed");
        }
    }

    // Bad input is refused with a clear message.
    let err = |o: Output| {
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let e = err(sweep(&[&zero, &dir.join("rl/missing")], &[]));
    assert!(
        e.contains("rl/missing") && e.contains("does not exist"),
        "{e}"
    );
    let e = err(sweep(&[&fifty], &[]));
    assert!(e.contains("no run with β = 0"), "{e}");
    let e = err(sweep(&[&zero], &["--lambdas", "0,1.5"]));
    assert!(e.contains("--lambdas") && e.contains("1.5"), "{e}");
    let e = err(sweep(&[&zero, &zero], &[]));
    assert!(e.contains("both have β = 0"), "{e}");
    let e = err(qd(&[
        "sweep",
        "--runs",
        zero.to_str().unwrap(),
        "--prompts",
        "1",
    ]));
    assert!(e.contains("--prompts"), "{e}");
    // The embedder is not a policy.
    let o = Command::new(env!("CARGO_BIN_EXE_qd"))
        .args([
            "sweep",
            "--runs",
            zero.to_str().unwrap(),
            "--base",
            &p("emb.safetensors"),
        ])
        .args([
            "--embedder",
            &p("emb.safetensors"),
            "--judge",
            &p("judge.safetensors"),
        ])
        .args(["--data", data.to_str().unwrap(), "--out", &out])
        .output()
        .unwrap();
    let e = err(o);
    assert!(e.contains("not a Policy model"), "{e}");
}

/// With only the β = 0 run there is no diverse end and nothing to average: the other
/// families are still evaluated.
#[test]
fn sweep_with_only_the_beta_zero_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (data, base) = tiny_models(dir, 2);
    let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
    let zero = run_dir(&dir.join("rl/beta-0"), &base, 1, Some(0.0), 0.0);
    let out = qd_ok(&[
        "sweep",
        "--runs",
        zero.to_str().unwrap(),
        "--base",
        base.to_str().unwrap(),
        "--embedder",
        &p("emb.safetensors"),
        "--judge",
        &p("judge.safetensors"),
        "--data",
        data.to_str().unwrap(),
        "--prompts",
        "2",
        "--samples",
        "2",
        "--cfg",
        "1",
        "--temperatures",
        "1",
        "--plausibility",
        "none",
        "--lambdas",
        "0,1",
        "--max-new-tokens",
        "8",
        "--threads",
        "1",
        "--out",
        &p("sweep"),
    ]);
    // --cfg 1 and the teacher's γ = 3, which the CFG family always holds.
    assert_eq!(counts(&out), "7 points: 3 evaluated, 4 cached", "{out}");
    let (_, rows, _) = read_csv(&dir.join("sweep/sweep.csv"));
    assert!(rows.keys().all(|k| k.0 != "lerp" && k.0 != "average"));
    assert!(dir.join("sweep/front.png").exists() && dir.join("sweep/lerp.png").exists());
}

/// Several seeds per β: one row per run, each β's mean and interval over its runs, the
/// CFG family drawn as the runs' teacher (here content-scoped, γ = 2, with the
/// plausibility constraint) with the teacher's γ added to the grid, and the paired
/// comparisons; runs distilled from different teachers are refused.
#[test]
fn sweep_of_repeated_runs_follows_their_teacher() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (data, base) = tiny_models(dir, 2);
    let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
    let teacher = |beta: f64, seed: u64, scope: &str| {
        Some(serde_json::json!({
            "beta": beta, "seed": seed, "cfg_gamma": 2.0, "cfg_scope": scope, "cfg_plausibility": 0.1
        }))
    };
    let mut runs = Vec::new();
    for (i, (beta, seed)) in [(0.0, 0), (0.0, 1), (50.0, 0), (50.0, 1)]
        .into_iter()
        .enumerate()
    {
        runs.push(stamped_run(
            &dir.join(format!("rl/beta-{beta}-seed-{seed}")),
            &base,
            10 + i as i64,
            teacher(beta, seed, "content"),
            "",
        ));
    }
    let sweep = |runs: &[PathBuf]| {
        let mut args: Vec<String> = vec!["sweep".into(), "--runs".into()];
        args.extend(runs.iter().map(|r| r.to_str().unwrap().to_string()));
        for a in [
            "--base",
            base.to_str().unwrap(),
            "--embedder",
            &p("emb.safetensors"),
            "--judge",
            &p("judge.safetensors"),
            "--data",
            data.to_str().unwrap(),
            "--prompts",
            "3",
            "--samples",
            "2",
            "--cfg",
            "1",
            "--temperatures",
            "1",
            "--plausibility",
            "none",
            "--lambdas",
            "0,1",
            "--max-new-tokens",
            "10",
            "--threads",
            "1",
            "--no-progress",
            "--out",
            &p("sweep"),
        ] {
            args.push(a.to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        qd(&args)
    };
    let o = sweep(&runs);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("3 held-out"), "{out}");
    assert!(
        out.contains("CFG γ = 2, scope content, plausibility 0.1"),
        "{out}"
    );
    assert!(out.contains("The β runs, over their seeds"), "{out}");
    let (_, _, n) = read_csv(&dir.join("sweep/sweep.csv"));
    // 4 runs, CFG γ ∈ {1, 2} (the teacher's γ added), 2 temperatures, LERP and LERP-base
    // at λ ∈ {0, 1} for each of the two β = 0 runs, the average.
    assert_eq!(n, 17, "{out}");
    let point = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join("sweep/points").join(name)).unwrap())
            .unwrap()
    };
    let cfg2 = point("cfg-2.json");
    assert_eq!(cfg2["sampling"]["cfg_scope"], "content");
    assert_eq!(cfg2["sampling"]["cfg_plausibility"], 0.1);
    assert_eq!(
        point("cfg-1.json")["sampling"]["cfg_gamma"],
        serde_json::Value::Null
    );
    assert_eq!(point("beta-0-seed-1.json")["seed"], 1);
    // Each β = 0 run is merged with the diverse β's run of its own seed.
    let lerp1 = point("lerp-1-seed-1.json");
    assert!(
        lerp1["model"].as_str().unwrap().contains("beta-0-seed-1")
            && lerp1["model"].as_str().unwrap().contains("beta-50-seed-1"),
        "{lerp1}"
    );
    assert_eq!(lerp1["key"], point("beta-50-seed-1.json")["key"]);

    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("sweep/summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["teacher"]["scope"], "content");
    let betas = summary["betas"].as_array().unwrap();
    assert_eq!(betas.len(), 2);
    for b in betas {
        assert_eq!(b["runs"], 2, "{b}");
        let (m, lo, hi) = (
            b["embed_diversity"].as_f64().unwrap(),
            b["embed_diversity_runs"]["lo"].as_f64().unwrap(),
            b["embed_diversity_runs"]["hi"].as_f64().unwrap(),
        );
        assert!(lo <= m && m <= hi, "{b}");
    }
    let effects: Vec<&str> = summary["effects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["what"].as_str().unwrap())
        .collect();
    assert_eq!(
        effects,
        [
            "teacher (γ = 2) − unguided base",
            "β = 0 student − teacher",
            "β = 50 − β = 0"
        ]
    );
    // β's effect is the mean over its runs minus β = 0's, each run's mean over the
    // prompts, and its interval resamples the runs as well as the prompts: it is at
    // least as wide as the runs' own spread of the difference allows.
    let mean_of = |beta: &str, what: &str| -> f64 {
        let ds: Vec<f64> = (0..2)
            .map(|s| {
                point(&format!("beta-{beta}-seed-{s}.json"))["report"][what]
                    .as_f64()
                    .unwrap()
            })
            .collect();
        (ds[0] + ds[1]) / 2.0
    };
    let effect = &summary["effects"][2];
    for (key, what) in [
        ("quality", "quality"),
        ("embed_diversity", "embed_diversity"),
    ] {
        let e = &effect[key];
        let estimate = e["estimate"].as_f64().unwrap();
        let expected = mean_of("50", what) - mean_of("0", what);
        assert!(
            (estimate - expected).abs() < 1e-9,
            "{key}: {estimate} vs {expected}"
        );
        let (lo, hi) = (
            e["interval"]["lo"].as_f64().unwrap(),
            e["interval"]["hi"].as_f64().unwrap(),
        );
        assert!(lo <= hi, "{effect}");
    }
    let diffs = summary["front_differences"].as_array().unwrap();
    assert_eq!(diffs.len(), 4, "{diffs:?}");
    for d in diffs {
        let e = &d["difference"];
        let (lo, hi) = (
            e["interval"]["lo"].as_f64().unwrap(),
            e["interval"]["hi"].as_f64().unwrap(),
        );
        assert!(
            e["estimate"].as_f64().unwrap().is_finite() && lo <= hi,
            "{d}"
        );
    }

    // A run distilled from another teacher is not compared with these.
    let other = stamped_run(
        &dir.join("rl/beta-100"),
        &base,
        20,
        teacher(100.0, 0, "all"),
        "",
    );
    let o = sweep(&[runs[0].clone(), other]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        e.contains("a sweep compares runs of one teacher") && e.contains("scope all"),
        "{e}"
    );
}
