//! Every trajectory batch is checked before anything of it reaches the queue: a bad
//! batch is refused whole with a reason (the `reason` label of
//! `qd_learner_trajectories_rejected_total`) and a message for the sender.

use std::collections::HashSet;

use qd_proto::TrajectoryBatch;

/// What the learner knows to check a batch against.
#[derive(Debug)]
pub struct Rules {
    /// Prompts of the training split (word ids, without `<sep>`).
    pub prompts: HashSet<Vec<u32>>,
    /// Ids a sample may hold (tune tokens and `<eos>`).
    pub allowed: Vec<bool>,
    pub eos: u32,
    /// The model's context: prompt + `<sep>` + sample must fit.
    pub max_len: usize,
    /// Most trajectories in one batch.
    pub max_trajectories: usize,
    pub samples_per_prompt: usize,
}

/// A refused batch: the metric label and the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reason: &'static str,
    pub message: String,
}

fn reject(reason: &'static str, message: String) -> Rejection {
    debug_assert!(
        crate::metrics::DROP_REASONS.contains(&reason),
        "{reason} missing from metrics::DROP_REASONS"
    );
    Rejection { reason, message }
}

/// Checks a batch sent by a client holding weights up to `current_version`.
pub fn validate(
    batch: &TrajectoryBatch,
    rules: &Rules,
    current_version: u64,
) -> Result<(), Rejection> {
    if batch.trajectories.is_empty() {
        return Err(reject("empty", "the batch holds no trajectories".into()));
    }
    if batch.trajectories.len() > rules.max_trajectories {
        return Err(reject(
            "oversize",
            format!(
                "the batch holds {} trajectories, at most {} are accepted",
                batch.trajectories.len(),
                rules.max_trajectories
            ),
        ));
    }
    if batch.version == 0 || batch.version > current_version {
        return Err(reject(
            "version",
            format!(
                "policy version {} was never published (the learner is at {current_version})",
                batch.version
            ),
        ));
    }
    for (i, t) in batch.trajectories.iter().enumerate() {
        if !rules.prompts.contains(&t.prompt) {
            return Err(reject(
                "unknown_prompt",
                format!("trajectory {i}: the prompt is not a training prompt"),
            ));
        }
        if !(t.reward.is_finite() && (0.0..=2.0).contains(&t.reward)) {
            return Err(reject(
                "reward",
                format!(
                    "trajectory {i}: reward {} is not a finite number in [0, 2]",
                    t.reward
                ),
            ));
        }
        if t.samples.len() != rules.samples_per_prompt {
            return Err(reject(
                "samples",
                format!(
                    "trajectory {i}: {} samples, expected {}",
                    t.samples.len(),
                    rules.samples_per_prompt
                ),
            ));
        }
        let room = rules.max_len.saturating_sub(t.prompt.len() + 1);
        for (j, s) in t.samples.iter().enumerate() {
            let at = format!("trajectory {i} sample {j}");
            if s.tokens.is_empty() {
                return Err(reject("length", format!("{at}: no tokens")));
            }
            if s.tokens.len() != s.logprobs.len() {
                return Err(reject(
                    "length",
                    format!(
                        "{at}: {} tokens but {} log-probabilities",
                        s.tokens.len(),
                        s.logprobs.len()
                    ),
                ));
            }
            if s.tokens.len() > room {
                return Err(reject(
                    "oversize",
                    format!(
                        "{at}: {} tokens do not fit the model's context ({room} after the prompt)",
                        s.tokens.len()
                    ),
                ));
            }
            if let Some(&id) = s
                .tokens
                .iter()
                .find(|&&id| !rules.allowed.get(id as usize).copied().unwrap_or(false))
            {
                return Err(reject(
                    "token",
                    format!("{at}: token id {id} is not a tune token or <eos>"),
                ));
            }
            if s.tokens[..s.tokens.len() - 1].contains(&rules.eos) {
                return Err(reject(
                    "token",
                    format!("{at}: <eos> before the last token"),
                ));
            }
            if let Some(lp) = s
                .logprobs
                .iter()
                .find(|lp| !(lp.is_finite() && **lp <= 1e-4))
            {
                return Err(reject(
                    "logprob",
                    format!("{at}: log-probability {lp} is not a finite number ≤ 0"),
                ));
            }
        }
    }
    Ok(())
}
