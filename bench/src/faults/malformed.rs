//! Malformed messages: every field of a valid batch broken in turn, undecodable bytes
//! and unregistered ids, each on its own stream.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::Rng;

use folk::dataset::{Dataset, Split};
use qd_proto::learner_client::LearnerClient;
use qd_proto::{Sample, Trajectory, TrajectoryBatch};

use super::cluster::*;
use super::*;

/// One broken variant of a valid batch, by kind; what it breaks.
pub(super) fn broken(
    good: &TrajectoryBatch,
    kind: usize,
    rng: &mut rand::rngs::StdRng,
) -> (&'static str, TrajectoryBatch) {
    let mut b = good.clone();
    let t = &mut b.trajectories[0];
    let j = rng.gen_range(0..2);
    let what = match kind % 16 {
        0 => {
            t.samples[j].tokens[0] = rng.gen_range(1_000..u32::MAX);
            "token id out of range"
        }
        1 => {
            t.samples[j].logprobs[0] =
                [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][rng.gen_range(0..3)];
            "non-finite log-probability"
        }
        2 => {
            t.samples[j].logprobs[0] = rng.gen_range(1e-3..1e6);
            "positive log-probability"
        }
        3 => {
            t.samples[j].logprobs[0] = -rng.gen_range(105.0..3.4e38);
            "log-probability no sampler records"
        }
        4 => {
            t.reward = [f32::NAN, f32::INFINITY, -1.0, 2.5, 1e30][rng.gen_range(0..5)];
            "reward"
        }
        5 => {
            t.samples[j].logprobs.pop();
            "fewer log-probs than tokens"
        }
        6 => {
            t.samples[j].tokens.clear();
            t.samples[j].logprobs.clear();
            "empty sample"
        }
        7 => {
            t.samples.truncate(1);
            "one sample"
        }
        8 => {
            let extra = t.samples[0].clone();
            t.samples.push(extra);
            "three samples"
        }
        9 => {
            t.prompt = (0..rng.gen_range(1..20))
                .map(|_| rng.gen_range(0..40))
                .collect();
            "unknown prompt"
        }
        10 => {
            b.version = rng.gen_range(1_000_000..u64::MAX);
            "version from the future"
        }
        11 => {
            b.version = 0;
            "version 0"
        }
        12 => {
            b.trajectories.clear();
            "empty batch"
        }
        13 => {
            let n = rng.gen_range(10_000..100_000);
            t.samples[j].tokens = vec![t.samples[j].tokens[0]; n];
            t.samples[j].logprobs = vec![-1.0; n];
            "sample longer than the context"
        }
        14 => {
            let eos = *t.samples[j].tokens.last().unwrap_or(&0);
            t.samples[j].tokens.insert(0, eos);
            t.samples[j].logprobs.insert(0, -1.0);
            "<eos> before the end"
        }
        _ => {
            let copies = rng.gen_range(1_000..5_000);
            b.trajectories = vec![b.trajectories[0].clone(); copies];
            "more trajectories than the queue holds"
        }
    };
    (what, b)
}

/// Sends `n` broken batches (and, every tenth, a duplicate, an unregistered id or bytes
/// that do not decode), each on its own stream; counts the answers.
pub(super) async fn malformed(
    addr: SocketAddr,
    ds: &Dataset,
    n: usize,
    rng: &mut rand::rngs::StdRng,
) -> Result<MalformedReport> {
    let mut r = MalformedReport {
        sent: n,
        ..MalformedReport::default()
    };
    let s0 = status(addr).await?;
    let mut c = LearnerClient::connect(format!("http://{addr}")).await?;
    let id = register(&mut c, &s0).await?;
    let prompt = ds
        .split(Split::Train)
        .next()
        .context("no training prompt")?
        .prompt
        .clone();
    let tune = ds.vocab.tune_ids().next().context("no tune token")?;
    let eos = folk::vocab::EOS;
    let sample = |len: usize| Sample {
        tokens: std::iter::repeat_n(tune, len).chain([eos]).collect(),
        logprobs: vec![-1.0; len + 1],
    };
    let good = TrajectoryBatch {
        version: s0.version,
        sequence: 1,
        trajectories: vec![Trajectory {
            prompt,
            reward: 0.5,
            samples: vec![sample(3), sample(5)],
        }],
    };
    let before = Instant::now();
    let steps_before = status(addr).await?.step;
    tokio::time::sleep(Duration::from_secs(3)).await;
    r.steps_per_s_before =
        (status(addr).await?.step - steps_before) as f64 / before.elapsed().as_secs_f64();
    let start = Instant::now();
    let steps_start = status(addr).await?.step;
    let mut kinds = HashSet::new();
    for k in 0..n {
        let outcome = match k % 10 {
            // The same (valid) batch twice on one stream: the second is the bad one.
            0 => {
                let mut b = good.clone();
                b.version = status(addr).await?.version;
                let mut acks = c
                    .push_trajectories(tagged(tokio_stream::iter(vec![b.clone(), b]), id))
                    .await?
                    .into_inner();
                let _ = acks.message().await;
                acks.message().await.map(|a| a.is_some())
            }
            // A stream under an id Register never issued.
            1 => {
                let bad = id + 1_000_000 + k as u64;
                match c
                    .push_trajectories(tagged(tokio_stream::iter(vec![good.clone()]), bad))
                    .await
                {
                    Ok(s) => s.into_inner().message().await.map(|a| a.is_some()),
                    Err(e) => Err(e),
                }
            }
            // Random bytes on the wire.
            2 => push_bytes(addr, id, rng).await,
            _ => {
                let (what, b) = broken(&good, rng.gen_range(0..16), rng);
                kinds.insert(what);
                match c
                    .push_trajectories(tagged(tokio_stream::iter(vec![b]), id))
                    .await
                {
                    Ok(s) => s.into_inner().message().await.map(|a| a.is_some()),
                    Err(e) => Err(e),
                }
            }
        };
        match outcome {
            Err(e) => {
                r.refused += 1;
                *r.codes.entry(format!("{:?}", e.code())).or_default() += 1;
            }
            Ok(_) => r.accepted += 1,
        }
    }
    r.kinds_of_broken_batch = kinds.len();
    r.steps_per_s_during =
        (status(addr).await?.step - steps_start) as f64 / start.elapsed().as_secs_f64();
    Ok(r)
}

/// Random bytes as one message on a `PushTrajectories` stream of a new connection.
pub(super) async fn push_bytes(
    addr: SocketAddr,
    id: u64,
    rng: &mut rand::rngs::StdRng,
) -> Result<bool, tonic::Status> {
    let bytes: Vec<u8> = (0..rng.gen_range(1..512)).map(|_| rng.gen()).collect();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| tonic::Status::internal(e.to_string()))?
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    push_raw(channel, id, bytes).await
}

/// `bytes` as one message on a new `PushTrajectories` stream of client `id`: whether
/// it was acknowledged, or the status it was answered with.
pub(super) async fn push_raw(
    channel: tonic::transport::Channel,
    id: u64,
    bytes: Vec<u8>,
) -> Result<bool, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static("/qd.v1.Learner/PushTrajectories");
    let mut acks = grpc
        .streaming(tagged(tokio_stream::iter(vec![bytes]), id), path, RawCodec)
        .await?
        .into_inner();
    acks.message().await.map(|a| a.is_some())
}

/// Sends each `Vec<u8>` as a message's bytes, as they are; reads `PushAck`s.
pub(super) struct RawCodec;

pub(super) struct RawEncoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use tonic_prost::prost::bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = qd_proto::PushAck;
    type Encoder = RawEncoder;
    type Decoder = tonic_prost::ProstDecoder<qd_proto::PushAck>;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}
