//! The diversity embedder and the quality judge on the fixture corpus.

#![allow(clippy::unwrap_used)]

use folk::caption::Attributes;
use folk::dataset::{Dataset, Split};
use folk::embedder::{load_embedder, retrieval_accuracy, train_embedder, EmbedderConfig};
use folk::judge::{load_judge, named, train_judge, JudgeConfig, JUDGED};
use model::task::pair_diversity;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tch::Device;

#[test]
fn embedder_learns_to_retrieve_crops() {
    let dir = tempfile::tempdir().unwrap();
    let data = testkit::fixture_dataset(dir.path());
    let cfg = EmbedderConfig {
        data: data.clone(),
        out: dir.path().join("embedder.safetensors"),
        steps: 150,
        batch_size: 16,
        lr: 3e-3,
        dim: 32,
        // The fixture tunes differ in two notes only: crops must be long enough to hold them.
        crop_min: 14,
        crop_max: 24,
        tau: 0.1,
        seed: 3,
        device: Device::Cpu,
        progress: false,
    };
    train_embedder(&cfg).unwrap();
    let ds = Dataset::load(&data).unwrap();
    let (_vs, e) = load_embedder(&cfg.out, &ds.vocab, Device::Cpu).unwrap();
    let acc = retrieval_accuracy(&e, &ds, Split::Train, &cfg);
    assert!(
        acc > 3.0 / 16.0,
        "retrieval accuracy {acc} is not clearly above chance (1/16)"
    );

    let tunes: Vec<&[u32]> = ds
        .records
        .iter()
        .take(4)
        .map(|r| ds.vocab.body(&r.tune))
        .collect();
    let z = tch::no_grad(|| e.embed(&tunes, false));
    assert_eq!(z.size(), vec![4, 32]);
    let norms = Vec::<f64>::try_from(
        &z.norm_scalaropt_dim(2, [1], false)
            .to_kind(tch::Kind::Double),
    )
    .unwrap();
    assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-4), "{norms:?}");
    let same = pair_diversity(&z, &z).unwrap();
    assert!(same.iter().all(|d| d.abs() < 1e-5));
    // 1 − cos of each row and the one before it, computed here from the raw numbers.
    let other = pair_diversity(&z, &z.roll([1], [0])).unwrap();
    let rows = Vec::<Vec<f64>>::try_from(&z.to_kind(tch::Kind::Double)).unwrap();
    for (i, d) in other.iter().enumerate() {
        let prev = &rows[(i + rows.len() - 1) % rows.len()];
        let cos: f64 = rows[i].iter().zip(prev).map(|(a, b)| a * b).sum();
        assert!(
            (d - (1.0 - cos)).abs() < 1e-5,
            "row {i}: {d} vs {}",
            1.0 - cos
        );
    }
}

#[test]
fn judge_scores_real_tunes_above_shuffled_and_random() {
    let dir = tempfile::tempdir().unwrap();
    let data = testkit::fixture_dataset(dir.path());
    let cfg = JudgeConfig {
        data: data.clone(),
        out: dir.path().join("judge.safetensors"),
        steps: 60,
        batch_size: 16,
        lr: 3e-3,
        seed: 4,
        device: Device::Cpu,
        progress: false,
    };
    let report = train_judge(&cfg).unwrap();
    assert_eq!(report.val_accuracy.len(), JUDGED.len());
    let ds = Dataset::load(&data).unwrap();
    let (_vs, judge) = load_judge(&cfg.out, &ds.vocab, Device::Cpu).unwrap();

    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let records: Vec<_> = ds.records.iter().take(30).collect();
    let real: Vec<Vec<u32>> = records.iter().map(|r| r.tune.clone()).collect();
    let shuffled: Vec<Vec<u32>> = real
        .iter()
        .map(|t| {
            let mut t = t.clone();
            t[2..].shuffle(&mut rng);
            t
        })
        .collect();
    let tune_ids: Vec<u32> = ds.vocab.tune_ids().collect();
    let random: Vec<Vec<u32>> = real
        .iter()
        .map(|t| {
            (0..t.len())
                .map(|_| tune_ids[rng.gen_range(0..tune_ids.len())])
                .collect()
        })
        .collect();
    let wanted: Vec<_> = records
        .iter()
        .map(|r| named(&r.caption, &r.attributes))
        .collect();
    let mean = |tunes: &[Vec<u32>]| {
        let refs: Vec<&[u32]> = tunes.iter().map(Vec::as_slice).collect();
        let q = judge.quality(&ds.vocab, &refs, &wanted).unwrap();
        assert!(q.iter().all(|x| (0.0..=1.0).contains(x)), "{q:?}");
        q.iter().sum::<f64>() / q.len() as f64
    };
    let (q_real, q_shuffled, q_random) = (mean(&real), mean(&shuffled), mean(&random));
    assert!(
        q_real > q_shuffled + 0.2,
        "real {q_real} vs shuffled {q_shuffled}"
    );
    assert!(
        q_real > q_random + 0.2,
        "real {q_real} vs random {q_random}"
    );
}

#[test]
fn named_attributes_are_read_from_the_caption() {
    let a = Attributes {
        genre: Some("reel".into()),
        origin: Some("irish".into()),
        tempo: Some("lively".into()),
        key: "d major".into(),
        mode: "major".into(),
        meter: "6/8".into(),
    };
    let n = named("A lively Irish reel in D major", &a);
    assert_eq!(
        n,
        vec![
            (0, "reel".to_string()),
            (1, "irish".to_string()),
            (2, "d major".to_string())
        ]
    );
    assert_eq!(named("a tune in 6/8", &a), vec![(3, "6/8".to_string())]);
}
