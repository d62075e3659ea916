//! Heavy messages: what a token holder's largest messages make the learner hold. Many
//! trajectory streams at once, each sending the largest batch the learner's limits let
//! through to decoding (trajectories of one-token samples, the most a message may
//! decode to per byte) or one as long made of empty trajectories (refused before
//! decoding); then a few 63 MiB messages (refused at their length). The learner's
//! resident memory is sampled throughout.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tonic_prost::prost::{self, Message};

use qd_proto::learner_client::LearnerClient;
use qd_proto::{RegisterRequest, Role, Sample, Trajectory, TrajectoryBatch};

use super::cluster::*;
use super::malformed::push_raw;
use super::*;

/// What was sent and what the learner's memory did.
#[derive(Debug, Default, Serialize)]
pub struct HeavyReport {
    /// The largest message the learner accepts (its `RegisterResponse`).
    pub request_limit_bytes: u64,
    /// Streams sending at once, half of them dense and half hollow batches.
    pub streams: usize,
    pub dense_trajectories: usize,
    pub hollow_trajectories: usize,
    pub rss_before_mib: f64,
    /// The learner's largest resident memory while the streams sent.
    pub rss_peak_mib: f64,
    /// `oversize_messages` of 63 MiB each, at once.
    pub oversize_messages: usize,
    pub rss_peak_oversize_mib: f64,
    /// Answers by status code (every message must be refused: `OK` is a defect).
    pub codes: BTreeMap<String, usize>,
}

/// The learner's largest resident memory while `work` runs, sampled every 5 ms.
async fn peak_during<F: std::future::Future>(pid: u32, work: F) -> (F::Output, f64) {
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut peak = rss_mib(pid);
            while !done.load(Ordering::Relaxed) {
                peak = peak.max(rss_mib(pid));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            peak
        })
    };
    let out = work.await;
    done.store(true, Ordering::Relaxed);
    let peak = sampler.await.unwrap_or(f64::NAN);
    (out, peak)
}

/// Sends `bytes` as one message on a new trajectory stream of client `id`; the code
/// it is answered with.
async fn send(channel: tonic::transport::Channel, id: u64, bytes: Vec<u8>) -> tonic::Code {
    match push_raw(channel, id, bytes).await {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    }
}

/// Runs every send at once; their codes.
async fn all<F>(sends: impl Iterator<Item = F>) -> Vec<tonic::Code>
where
    F: std::future::Future<Output = tonic::Code> + Send + 'static,
{
    let handles: Vec<_> = sends.map(tokio::spawn).collect();
    let mut codes = Vec::new();
    for h in handles {
        codes.push(h.await.unwrap_or(tonic::Code::Unknown));
    }
    codes
}

/// A registered client on its own connection: (channel, id, the learner's request
/// limit).
async fn client(
    addr: SocketAddr,
    s: &qd_proto::StatusResponse,
) -> Result<(tonic::transport::Channel, u64, u64)> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let r = LearnerClient::new(channel.clone())
        .register(RegisterRequest {
            protocol_version: qd_proto::PROTOCOL_VERSION,
            model_config_hash: s.model_config_hash.clone(),
            model_config_json: String::new(),
            vocab_hash: s.vocab_hash.clone(),
            role: Role::Actor as i32,
            name: "faults-heavy".into(),
        })
        .await?
        .into_inner();
    Ok((channel, r.actor_id, r.max_message_bytes))
}

/// `n` copies of `t` in one batch.
fn batch_of(t: Trajectory, n: usize) -> Vec<u8> {
    TrajectoryBatch {
        version: 1,
        sequence: 1,
        trajectories: vec![t; n],
    }
    .encode_to_vec()
}

pub(super) async fn heavy_messages(
    addr: SocketAddr,
    pid: u32,
    streams: usize,
    oversize: usize,
) -> Result<HeavyReport> {
    let s0 = status(addr).await?;
    // Two trajectory streams per client id, as the per-client limit allows.
    let mut clients = Vec::new();
    for _ in 0..streams.div_ceil(2) {
        clients.push(client(addr, &s0).await?);
    }
    let limit = clients.first().map_or(0, |c| c.2) as usize;
    let dense = Trajectory {
        prompt: vec![1],
        reward: 0.5,
        samples: vec![
            Sample {
                tokens: vec![3],
                logprobs: vec![-1.0],
            };
            2
        ],
    };
    let fit = |t: &Trajectory| {
        let one = t.encoded_len() + 1 + prost::length_delimiter_len(t.encoded_len());
        limit.saturating_sub(32) / one
    };
    let mut r = HeavyReport {
        request_limit_bytes: limit as u64,
        streams,
        dense_trajectories: fit(&dense),
        hollow_trajectories: fit(&Trajectory::default()),
        rss_before_mib: rss_mib(pid),
        oversize_messages: oversize,
        ..HeavyReport::default()
    };
    let dense_bytes = batch_of(dense, r.dense_trajectories);
    let hollow_bytes = batch_of(Trajectory::default(), r.hollow_trajectories);
    let sends = (0..streams).map(|k| {
        let (channel, id, _) = clients[k / 2].clone();
        let bytes = if k % 2 == 0 {
            dense_bytes.clone()
        } else {
            hollow_bytes.clone()
        };
        send(channel, id, bytes)
    });
    let (codes, peak) = peak_during(pid, all(sends)).await;
    r.rss_peak_mib = peak;
    let over = (0..oversize).map(|k| {
        let (channel, id, _) = clients[k % clients.len()].clone();
        send(channel, id, vec![0u8; 63 << 20])
    });
    let (over_codes, peak) = peak_during(pid, all(over)).await;
    r.rss_peak_oversize_mib = peak;
    for c in codes.into_iter().chain(over_codes) {
        *r.codes.entry(format!("{c:?}")).or_default() += 1;
    }
    Ok(r)
}
