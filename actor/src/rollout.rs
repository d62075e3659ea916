//! `qd actor`: the rollout loop. Takes prompts from the task's training split in a seeded
//! shuffled order, samples two outputs per prompt from the current student (no CFG,
//! temperature 1), scores each pair's diversity with the task's frozen embedder, and
//! hands the batch to the connection, tagged with the policy version and the behaviour
//! log-probs. With `actor.synchronous`, one batch per published version.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use qd_proto::{Role, Sample, Trajectory, TrajectoryBatch};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, watch};

use common::settings::Settings;
use model::fnv::Fnv;
use model::sampling::{sample, SamplingConfig};
use model::task::{pair_rewards, Embedder, Split, Task};

use crate::broadcast::Weights;
use crate::metrics as m;
use crate::{run_client, wait_for_weights, Setup, Student};

/// Runs an actor until SIGTERM/Ctrl-C or a refusal by the learner.
pub async fn run(settings: Settings, task: Arc<dyn Task>, ready_file: Option<&Path>) -> Result<()> {
    let a = settings.actor.clone();
    let (setup, metrics) = Setup::start(
        settings,
        task,
        &a.device,
        a.threads,
        &a.metrics_listen,
        &crate::metrics::actor(),
        ready_file,
    )
    .await?;
    let embedder = setup.task.embedder(setup.device)?;
    let link = setup.link(Role::Actor, &a.name)?;
    tracing::info!(name = link.identity.name, learner = link.settings.learner, metrics = ?metrics, "actor starting");
    let seed = stream_seed(a.seed, &link.identity.name);
    let (batch_tx, batch_rx) = mpsc::channel(1);
    let credits = link.credits.clone();
    run_client(link, Some(batch_rx), move |weights, stop, rt| {
        rollouts(
            &setup,
            embedder.as_ref(),
            seed,
            weights,
            credits,
            batch_tx,
            stop,
            rt,
        )
    })
    .await?;
    tracing::info!("actor stopped");
    Ok(())
}

/// The seed of an actor's prompt order and sampling: `actor.seed` mixed with the actor's
/// name (FNV-1a), so replicas sharing one config (docker compose, a Kubernetes
/// Deployment: the names default to host and process id) roll out different data.
fn stream_seed(seed: u64, name: &str) -> u64 {
    Fnv::seeded(seed, name.as_bytes())
}

#[allow(clippy::too_many_arguments)]
fn rollouts(
    setup: &Setup,
    embedder: &dyn Embedder,
    seed: u64,
    mut weights: watch::Receiver<Option<Arc<Weights>>>,
    credits: Arc<tokio::sync::Semaphore>,
    out: mpsc::Sender<TrajectoryBatch>,
    mut stop: watch::Receiver<bool>,
    rt: tokio::runtime::Handle,
) -> Result<()> {
    let a = &setup.settings.actor;
    let mut student = Student::new(
        &setup.model_config,
        &setup.vocab_hash,
        setup.device,
        &m::ACTOR_CLIENT,
    );
    let vocabulary = setup.task.vocabulary();
    let mut prompts: Vec<Vec<u32>> = setup
        .task
        .prompts(Split::Train)
        .into_iter()
        .map(|p| p.ids)
        .collect();
    anyhow::ensure!(!prompts.is_empty(), "the task has no training prompts");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    prompts.shuffle(&mut rng);
    let mut cursor = 0;
    // The student as it is: no CFG, temperature 1, every id.
    let sampling = SamplingConfig {
        max_new_tokens: a.max_new_tokens,
        ..SamplingConfig::default()
    };
    // The version the last batch was sampled with (synchronous mode waits for a newer).
    let mut last_version = 0;
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        // Weights change only here, between rollouts.
        let latest = weights.borrow_and_update().clone();
        student.update(latest.as_ref())?;
        if student.version == 0 || (a.synchronous && student.version <= last_version) {
            if !wait_for_weights(&rt, &mut weights, &mut stop) {
                return Ok(());
            }
            continue;
        }
        // Wait for the learner to have queued the last batch (see `CREDITS`).
        let credit = rt.block_on(async {
            tokio::select! {
                p = credits.acquire() => p.ok(),
                _ = stop.wait_for(|s| *s) => None,
            }
        });
        match credit {
            Some(p) => p.forget(),
            None => return Ok(()),
        }
        // Newer weights may have arrived while waiting (not in synchronous mode: the
        // batch is the one of the version it waited for).
        if !a.synchronous {
            let latest = weights.borrow_and_update().clone();
            student.update(latest.as_ref())?;
        }
        last_version = student.version;
        let t0 = Instant::now();
        let mut rows = Vec::with_capacity(2 * a.batch_prompts);
        for _ in 0..a.batch_prompts {
            if cursor == prompts.len() {
                prompts.shuffle(&mut rng);
                cursor = 0;
            }
            rows.push(prompts[cursor].clone());
            rows.push(prompts[cursor].clone());
            cursor += 1;
        }
        let seeds: Vec<u64> = rows.iter().map(|_| rng.gen()).collect();
        let s = sample(&student.model, &rows, &seeds, vocabulary, &sampling)?;
        let pairs: Vec<(&[u32], &[u32])> = s
            .tokens
            .chunks(2)
            .map(|p| (p[0].as_slice(), p[1].as_slice()))
            .collect();
        let rewards = pair_rewards(embedder, &pairs)?;
        let tokens: usize = s.tokens.iter().map(Vec::len).sum();
        let seconds = t0.elapsed().as_secs_f64();
        let mut trajectories = Vec::with_capacity(a.batch_prompts);
        let mut samples = s.tokens.into_iter().zip(s.logprobs);
        for (i, &r) in rewards.iter().enumerate() {
            let pair: Vec<Sample> = samples
                .by_ref()
                .take(2)
                .map(|(tokens, logprobs)| Sample { tokens, logprobs })
                .collect();
            metrics::histogram!(m::REWARD).record(r);
            trajectories.push(Trajectory {
                prompt: rows[2 * i].clone(),
                reward: r as f32,
                samples: pair,
            });
        }
        metrics::counter!(m::TOKENS).increment(tokens as u64);
        metrics::gauge!(m::REWARD_MEAN)
            .set(rewards.iter().sum::<f64>() / rewards.len().max(1) as f64);
        metrics::histogram!(m::ROLLOUT_SECONDS).record(seconds);
        tracing::debug!(version = student.version, tokens, seconds, "rollout");
        let batch = TrajectoryBatch {
            version: student.version,
            sequence: 0,
            trajectories,
        };
        let sent = rt.block_on(async {
            tokio::select! {
                r = out.send(batch) => r.is_ok(),
                _ = stop.wait_for(|s| *s) => false,
            }
        });
        if !sent {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::stream_seed;

    #[test]
    fn replicas_get_their_own_stream() {
        assert_eq!(stream_seed(1, "actor-1"), stream_seed(1, "actor-1"));
        assert_ne!(stream_seed(1, "actor-1"), stream_seed(1, "actor-2"));
        assert_ne!(stream_seed(1, "actor-1"), stream_seed(2, "actor-1"));
        assert_ne!(
            stream_seed(0, "actor@a1b2c3:1"),
            stream_seed(0, "actor@d4e5f6:1")
        );
    }
}
