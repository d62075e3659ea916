//! Every trajectory batch is checked before anything of it reaches the queue: a bad
//! batch is refused whole with a reason (the `reason` label of
//! `qd_learner_trajectories_dropped_total`) and a message for the sender.

use std::collections::HashSet;

use prost::Message;
use qd_proto::{Sample, Trajectory, TrajectoryBatch};

/// The lowest log-probability a sampled id can have: a float32 softmax gives an id
/// below e^-104 (the smallest subnormal) probability 0, and an id of probability 0 is
/// never drawn. A lower value was not recorded by a sampler.
pub const MIN_LOGPROB: f32 = -104.0;

/// The highest: 0, and the float32 rounding of a log-softmax above it (the difference of
/// a logit and the log-sum-exp, each rounded at their magnitude: about 2e-6 for logits of
/// 20, 1e-4 for logits of several hundred).
pub const MAX_LOGPROB: f32 = 1e-4;

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

impl Rules {
    /// The most bytes an honest `TrajectoryBatch` takes on the wire: `max_trajectories`
    /// trajectories of the longest training prompt, each with samples that fill the
    /// context, every id at the vocabulary's widest and every field present. The
    /// learner's limit on what a client may send (`Register` is smaller).
    pub fn max_batch_bytes(&self) -> usize {
        let prompt_ids = self
            .prompts
            .iter()
            .max_by_key(|p| {
                p.iter()
                    .map(|&w| prost::encoding::encoded_len_varint(u64::from(w)))
                    .sum::<usize>()
            })
            .cloned()
            .unwrap_or_default();
        let widest = u32::try_from(self.allowed.len().saturating_sub(1)).unwrap_or(u32::MAX);
        let sample = Sample {
            tokens: vec![widest; self.max_len],
            logprobs: vec![MIN_LOGPROB; self.max_len],
        };
        let one = Trajectory {
            prompt: prompt_ids,
            reward: 2.0,
            samples: vec![sample; self.samples_per_prompt],
        }
        .encoded_len();
        let header = TrajectoryBatch {
            version: u64::MAX,
            sequence: u64::MAX,
            trajectories: Vec::new(),
        }
        .encoded_len();
        header + self.max_trajectories * (1 + prost::length_delimiter_len(one) + one)
    }
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

/// Checks `batch` against `rules` at learner version `current_version`; `last_sequence`
/// is the sequence number of the last batch accepted on the same stream (a stream's
/// sequence numbers must rise, so that no batch is trained on twice).
pub fn validate(
    batch: &TrajectoryBatch,
    rules: &Rules,
    current_version: u64,
    last_sequence: Option<u64>,
) -> Result<(), Rejection> {
    if let Some(last) = last_sequence.filter(|&l| batch.sequence <= l) {
        return Err(reject(
            "duplicate",
            format!(
                "batch sequence {} is not above the last accepted on this stream ({last}): a batch is trained on once",
                batch.sequence
            ),
        ));
    }
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
                .find(|lp| !(MIN_LOGPROB..=MAX_LOGPROB).contains(*lp))
            {
                return Err(reject(
                    "logprob",
                    format!("{at}: log-probability {lp} is not in [{MIN_LOGPROB}, {MAX_LOGPROB}] (0 and float rounding): no sampler draws that"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use qd_proto::{Sample, Trajectory, TrajectoryBatch};

    use super::{validate, Rules, MAX_LOGPROB, MIN_LOGPROB};

    /// Prompts `[4]` and `[5, 6]`; ids 10..20 and `<eos>` (2) allowed; context 8.
    fn rules() -> Rules {
        let mut allowed = vec![false; 20];
        allowed[2] = true;
        allowed[10..20].iter_mut().for_each(|a| *a = true);
        Rules {
            prompts: [vec![4], vec![5, 6]].into_iter().collect(),
            allowed,
            eos: 2,
            max_len: 8,
            max_trajectories: 2,
            samples_per_prompt: 2,
        }
    }

    fn sample(tokens: &[u32]) -> Sample {
        Sample {
            tokens: tokens.to_vec(),
            logprobs: vec![-0.5; tokens.len()],
        }
    }

    /// A valid batch of version 3: prompt `[4]`, two samples, reward 0.5.
    fn batch() -> TrajectoryBatch {
        TrajectoryBatch {
            version: 3,
            sequence: 0,
            trajectories: vec![Trajectory {
                prompt: vec![4],
                reward: 0.5,
                samples: vec![sample(&[10, 11, 2]), sample(&[12])],
            }],
        }
    }

    /// The reason `change` makes `validate` give at learner version 3, or `None`.
    fn reason(change: impl FnOnce(&mut TrajectoryBatch)) -> Option<&'static str> {
        let mut b = batch();
        change(&mut b);
        validate(&b, &rules(), 3, None).err().map(|r| r.reason)
    }

    #[test]
    fn the_largest_honest_batch_fits_the_bound_exactly() {
        let r = rules();
        // Two trajectories of the longest prompt, samples that fill the context with the
        // widest id: what the bound says, to the byte.
        let full = TrajectoryBatch {
            version: u64::MAX,
            sequence: u64::MAX,
            trajectories: vec![
                Trajectory {
                    prompt: vec![5, 6],
                    reward: 2.0,
                    samples: vec![
                        Sample {
                            tokens: vec![19; 8],
                            logprobs: vec![-1.0; 8],
                        };
                        2
                    ],
                };
                2
            ],
        };
        assert_eq!(r.max_batch_bytes(), full.encoded_len());
    }

    #[test]
    fn a_valid_batch_passes_and_each_rule_refuses_with_its_reason() {
        assert_eq!(reason(|_| {}), None);
        assert_eq!(reason(|b| b.trajectories.clear()), Some("empty"));
        let t = batch().trajectories[0].clone();
        assert_eq!(reason(|b| b.trajectories.push(t.clone())), None);
        assert_eq!(
            reason(|b| b.trajectories.extend([t.clone(), t.clone()])),
            Some("oversize")
        );
        assert_eq!(reason(|b| b.trajectories[0].prompt = vec![5, 6]), None);
        assert_eq!(
            reason(|b| b.trajectories[0].prompt = vec![5]),
            Some("unknown_prompt")
        );
        assert_eq!(
            reason(|b| {
                b.trajectories[0].samples.pop();
            }),
            Some("samples")
        );
        assert_eq!(
            reason(|b| b.trajectories[0].samples.push(sample(&[10]))),
            Some("samples")
        );
    }

    #[test]
    fn sequence_numbers_rise_on_a_stream() {
        let at = |sequence: u64, last: Option<u64>| {
            let b = TrajectoryBatch {
                sequence,
                ..batch()
            };
            validate(&b, &rules(), 3, last).err().map(|r| r.reason)
        };
        assert_eq!(at(0, None), None);
        assert_eq!(at(5, Some(4)), None);
        assert_eq!(at(9, Some(4)), None);
        assert_eq!(at(4, Some(4)), Some("duplicate"));
        assert_eq!(at(3, Some(4)), Some("duplicate"));
        assert_eq!(at(0, Some(0)), Some("duplicate"));
    }

    #[test]
    fn versions_must_have_been_published() {
        assert_eq!(reason(|b| b.version = 1), None);
        assert_eq!(reason(|b| b.version = 3), None);
        assert_eq!(reason(|b| b.version = 4), Some("version"));
        assert_eq!(reason(|b| b.version = 0), Some("version"));
    }

    #[test]
    fn rewards_are_finite_and_in_zero_to_two() {
        for ok in [0.0, 2.0, 1.25] {
            assert_eq!(reason(|b| b.trajectories[0].reward = ok), None, "{ok}");
        }
        for bad in [-1e-3, 2.001, f32::NAN, f32::INFINITY] {
            assert_eq!(
                reason(|b| b.trajectories[0].reward = bad),
                Some("reward"),
                "{bad}"
            );
        }
    }

    #[test]
    fn samples_fit_the_context_after_the_prompt() {
        // Context 8: prompt [4] + <sep> leave 6; prompt [5, 6] + <sep> leave 5.
        let six = [10, 11, 12, 13, 14, 15];
        assert_eq!(
            reason(|b| b.trajectories[0].samples[0] = sample(&six)),
            None
        );
        assert_eq!(
            reason(|b| b.trajectories[0].samples[0] = sample(&[six.as_slice(), &[2]].concat())),
            Some("oversize")
        );
        assert_eq!(
            reason(|b| {
                b.trajectories[0].prompt = vec![5, 6];
                b.trajectories[0].samples[1] = sample(&six);
            }),
            Some("oversize")
        );
        assert_eq!(
            reason(|b| b.trajectories[0].samples[1] = sample(&[])),
            Some("length")
        );
        assert_eq!(
            reason(|b| b.trajectories[0].samples[1].logprobs.push(-1.0)),
            Some("length")
        );
    }

    #[test]
    fn ids_are_output_tokens_with_eos_last_only() {
        assert_eq!(
            reason(|b| b.trajectories[0].samples[0] = sample(&[19, 2])),
            None
        );
        assert_eq!(
            reason(|b| b.trajectories[0].samples[0] = sample(&[20])),
            Some("token")
        );
        assert_eq!(
            reason(|b| b.trajectories[0].samples[0] = sample(&[9, 10])),
            Some("token")
        );
        assert_eq!(
            reason(|b| b.trajectories[0].samples[0] = sample(&[4])),
            Some("token")
        );
        assert_eq!(
            reason(|b| b.trajectories[0].samples[0] = sample(&[10, 2, 11])),
            Some("token")
        );
        assert_eq!(
            reason(|b| b.trajectories[0].samples[0] = sample(&[2])),
            None
        );
    }

    #[test]
    fn log_probabilities_are_what_a_sampler_can_record() {
        let set =
            |lp: f32| move |b: &mut TrajectoryBatch| b.trajectories[0].samples[1].logprobs[0] = lp;
        assert_eq!(reason(set(0.0)), None);
        assert_eq!(reason(set(-80.0)), None);
        assert_eq!(reason(set(MIN_LOGPROB)), None);
        // Rounding above 0 is what a float32 log-softmax records; beyond it, nothing.
        assert_eq!(reason(set(MAX_LOGPROB)), None);
        for bad in [
            2.0 * MAX_LOGPROB,
            0.01,
            f32::NAN,
            f32::NEG_INFINITY,
            -104.5,
            -3.4e38,
        ] {
            assert_eq!(reason(set(bad)), Some("logprob"), "{bad}");
        }
    }

    #[test]
    fn a_refusal_names_what_is_wrong() {
        let mut b = batch();
        b.trajectories[0].samples[1].tokens = vec![10, 99];
        b.trajectories[0].samples[1].logprobs = vec![-1.0, -1.0];
        let r = validate(&b, &rules(), 3, None).unwrap_err();
        assert_eq!(r.reason, "token");
        assert!(
            r.message.contains("trajectory 0 sample 1") && r.message.contains("99"),
            "{}",
            r.message
        );
    }
}
