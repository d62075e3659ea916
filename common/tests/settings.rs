//! The layered configuration: defaults ← file ← QD__ environment ← --set overrides;
//! unknown keys and invalid values are refused naming the key; the shipped configs load.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use common::settings::{Divergence, Settings};

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn write(dir: &Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("c.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn layers_override_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "[learner]\nbeta = 5.0\nlr = 0.001\nmax_steps = 7\n",
    );
    let s = Settings::load_from(Some(&f), &[], &[]).unwrap();
    assert_eq!(
        (s.learner.beta, s.learner.lr, s.learner.max_steps),
        (5.0, 0.001, 7)
    );
    assert_eq!(
        s.learner.cfg_gamma, 3.0,
        "untouched keys keep their defaults"
    );

    let e = env(&[
        ("QD__LEARNER__BETA", "10"),
        ("QD__LEARNER__DIVERGENCE", "jsd"),
        ("QD_CUDA", "1"),
    ]);
    let s = Settings::load_from(Some(&f), &e, &[]).unwrap();
    assert_eq!(s.learner.beta, 10.0, "the environment wins over the file");
    assert_eq!(s.learner.divergence, Divergence::Jsd);
    assert_eq!(s.learner.lr, 0.001);

    let s = Settings::load_from(
        Some(&f),
        &e,
        &["learner.beta=15".into(), "actor.name=a7".into()],
    )
    .unwrap();
    assert_eq!(s.learner.beta, 15.0, "--set wins over the environment");
    assert_eq!(s.actor.name, "a7");
    assert_eq!(
        Settings::load_from(None, &[], &[]).unwrap(),
        Settings::default()
    );
}

#[test]
fn bad_settings_name_their_key() {
    let dir = tempfile::tempdir().unwrap();
    // (file, environment, --set overrides, what the error must name)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a str], &'a str);
    let cases: &[Case] = &[
        ("[learner]\nbogus = 1\n", &[], &[], "bogus"),
        ("[lerner]\nbeta = 1\n", &[], &[], "lerner"),
        ("[learner]\nbeta = \"lots\"\n", &[], &[], "learner.beta"),
        ("", &[("QD__LEARNER__LR", "fast")], &[], "learner.lr"),
        ("", &[], &["learner.lr=-1"], "learner.lr"),
        ("", &[], &["learner.divergence=kl"], "learner.divergence"),
        ("", &[], &["learner.listen=nowhere"], "learner.listen"),
        (
            "",
            &[],
            &["client.learner=127.0.0.1:50051"],
            "client.learner",
        ),
        ("", &[], &["actor.device=tpu"], "actor.device"),
        (
            "",
            &[],
            &["evaluator.samples_per_prompt=1"],
            "evaluator.samples_per_prompt",
        ),
        (
            "",
            &[],
            &["learner.queue_capacity=2"],
            "learner.queue_capacity",
        ),
        ("[learner\nbeta = 1\n", &[], &[], "c.toml"),
        ("", &[], &["auth.tls_cert=cert.pem"], "auth.tls_key"),
        (
            "",
            &[],
            &["client.learner=https://learner:50051"],
            "auth.tls_ca",
        ),
        // A CA over http:// would verify nothing: refused, not silently plaintext.
        ("", &[], &["auth.tls_ca=ca.pem"], "must be https://"),
    ];
    for (file, e, sets, key) in cases {
        let f = write(dir.path(), file);
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let err = Settings::load_from(Some(&f), &env(e), &sets).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains(key), "{file:?} {e:?} {sets:?}: {msg}");
    }
    // Every key at fault is named at once, each section's and the checks across them.
    let sets: Vec<String> = [
        "learner.keep_checkpoints=0",
        "client.keepalive_s=0",
        "actor.max_new_tokens=0",
        "evaluator.metrics_listen=somewhere",
        "limits.max_streams_per_connection=2",
        "run.actors=0",
        "client.max_message_bytes=1024",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let msg = Settings::load_from(None, &[], &sets)
        .unwrap_err()
        .to_string();
    for key in [
        "learner.keep_checkpoints must be at least 1 (got 0)",
        "client.keepalive_s must be at least 1 (got 0)",
        "actor.max_new_tokens",
        "evaluator.metrics_listen",
        "limits.max_streams_per_connection must allow",
        "run.actors",
        "client.max_message_bytes must hold one weight chunk",
    ] {
        assert!(msg.contains(key), "{key}: {msg}");
    }
    let err = Settings::load_from(Some(Path::new("/nonexistent/qd.toml")), &[], &[]).unwrap_err();
    assert!(err.to_string().contains("does not exist"));
    let err = Settings::load_from(None, &[], &["learner.beta".into()]).unwrap_err();
    assert!(err.to_string().contains("section.key=value"));
}

#[test]
fn shipped_configs_validate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "toml") {
            Settings::load_from(Some(&p), &[], &[])
                .unwrap_or_else(|e| panic!("{}: {e:#}", p.display()));
            n += 1;
        }
    }
    assert!(
        n >= 6,
        "configs/ holds the default, GPU and β-sweep configs"
    );
    let b = Settings::load_from(Some(&dir.join("beta-2.toml")), &[], &[]).unwrap();
    assert_eq!(b.learner.beta, 2.0);
}
