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
/// `beta: Some(b)` records β in the student's metadata, as the learner does; `None`
/// leaves it to `run-config.toml`, as `qd run` writes it.
fn run_dir(dir: &Path, base: &Path, seed: i64, beta: Option<f64>, config_beta: f64) -> PathBuf {
    let ck = Checkpoint::read(base).unwrap();
    tch::manual_seed(seed);
    let tensors = ck
        .tensors()
        .map(|(n, t)| (n.to_string(), t + t.randn_like() * 0.05))
        .collect();
    std::fs::create_dir_all(dir).unwrap();
    let extra = match beta {
        Some(b) => serde_json::json!({ "beta": b }),
        None => serde_json::Value::Null,
    };
    merge::write(&dir.join("student.safetensors"), &ck, tensors, extra).unwrap();
    std::fs::write(
        dir.join("run-config.toml"),
        format!("[learner]\nbeta = {config_beta:?}\n"),
    )
    .unwrap();
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

/// `sweep.csv` as (family, param) → the remaining fields, and the header.
fn read_csv(path: &Path) -> (Vec<String>, Rows, usize) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap()
        .split(',')
        .map(str::to_string)
        .collect();
    let mut rows = HashMap::new();
    let mut n = 0;
    for l in lines {
        let f: Vec<String> = l.split(',').map(str::to_string).collect();
        assert_eq!(f.len(), header.len(), "{l}");
        rows.insert((f[0].clone(), f[1].clone()), f[2..].to_vec());
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
    // 15 points; 9 distinct (weights, sampling) pairs: β = 0 is also LERP λ = 0, LERP-base
    // λ = 0 and the β = 0 student at T = 1; β = 50 is LERP λ = 1; CFG γ = 1 is the base at
    // T = 1 and LERP-base λ = 1.
    assert_eq!(
        counts(&first),
        "15 points: 9 evaluated, 6 cached",
        "{first}"
    );
    assert!(first.contains("| family | parameter | quality"), "{first}");
    assert!(first.contains("Best CFG point"), "{first}");
    let csv = Path::new(&out).join("sweep.csv");
    let (header, rows, n) = read_csv(&csv);
    assert_eq!(&header[..4], ["family", "param", "quality", "adherence"]);
    assert_eq!(n, 15);
    let expected = [
        ("beta", "0"),
        ("beta", "50"),
        ("cfg", "1"),
        ("cfg", "3"),
        ("temperature-base", "0.8"),
        ("temperature-base", "1"),
        ("temperature-beta0", "0.8"),
        ("temperature-beta0", "1"),
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
        ("lerp-0.json", "beta-0.json"),
        ("lerp-1.json", "beta-50.json"),
        ("lerp-base-0.json", "beta-0.json"),
        ("lerp-base-1.json", "cfg-1.json"),
    ] {
        let (a, b) = (point(end), point(model));
        assert_eq!(a["key"], b["key"], "{end} vs {model}");
        assert_ne!(a["model"], b["model"], "{end} vs {model}");
    }
    assert_ne!(point("lerp-0.25.json")["key"], point("beta-0.json")["key"]);
    assert_eq!(row("lerp", "0"), row("beta", "0"));
    assert_eq!(row("lerp", "1"), row("beta", "50"));
    assert_eq!(row("lerp-base", "0"), row("beta", "0"));
    assert_eq!(row("lerp-base", "1"), row("cfg", "1"));
    assert_eq!(row("temperature-beta0", "1"), row("beta", "0"));
    assert_ne!(row("lerp", "0.25"), row("beta", "0"));
    for r in rows.values() {
        let quality: f64 = r[0].parse().unwrap();
        assert!((0.0..=1.0).contains(&quality), "{r:?}");
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
    assert_eq!(summary["fronts"].as_array().unwrap().len(), 7);
    assert_eq!(summary["most_diverse"]["beta"], 50.0);
    assert_eq!(summary["best_cfg"]["family"], "cfg");
    // Each family's hypervolume is the one of its rows in sweep.csv (the first two
    // columns are the key of `rows`), computed here again.
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let (q, d) = (col("quality") - 2, col("embed_diversity") - 2);
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

    // Nothing changed: nothing is evaluated, and the table is the same.
    let before = std::fs::read(&csv).unwrap();
    let again = ok(sweep(&[&zero, &fifty], &["--no-progress"]));
    assert_eq!(
        counts(&again),
        "15 points: 0 evaluated, 15 cached",
        "{again}"
    );
    assert_eq!(std::fs::read(&csv).unwrap(), before);

    // A retrained β = 50 run: its student, LERP λ = 0.25 and λ = 1 (the same weights) and
    // the average change; nothing else.
    run_dir(&fifty, &base, 3, None, 50.0);
    let changed = ok(sweep(&[&zero, &fifty], &["--no-progress"]));
    assert_eq!(
        counts(&changed),
        "15 points: 3 evaluated, 12 cached",
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
        "--lambdas",
        "0,1",
        "--max-new-tokens",
        "8",
        "--threads",
        "1",
        "--out",
        &p("sweep"),
    ]);
    assert_eq!(counts(&out), "6 points: 2 evaluated, 4 cached", "{out}");
    let (_, rows, _) = read_csv(&dir.join("sweep/sweep.csv"));
    assert!(rows.keys().all(|k| k.0 != "lerp" && k.0 != "average"));
    assert!(dir.join("sweep/front.png").exists() && dir.join("sweep/lerp.png").exists());
}
