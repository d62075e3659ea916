//! Idle streams: thousands of weight streams that never read, and silent trajectory
//! streams.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use qd_proto::learner_client::LearnerClient;
use qd_proto::{StatusRequest, TrajectoryBatch, WatchRequest};

use super::cluster::*;
use super::*;

/// Opens the idle streams, watches the learner while they are open, closes them.
pub(super) async fn idle_streams(
    addr: SocketAddr,
    pid: u32,
    cfg: &FaultsConfig,
) -> Result<IdleReport> {
    let url = format!("http://{addr}");
    // A client connected before, as an operator's dashboard or probe would be.
    let mut probe = LearnerClient::connect(url.clone()).await?;
    let warm = rss_mib(pid);
    let mut idle = warm;
    for _ in 0..100 {
        idle = idle.max(rss_mib(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut r = IdleReport {
        watchers_tried: cfg.idle_watchers,
        pushes_tried: cfg.idle_pushes,
        rss_warm_mib: warm,
        rss_idle_mib: idle,
        ..IdleReport::default()
    };
    let s0 = probe.status(StatusRequest {}).await?.into_inner();
    // Streams spread over connections of 8, as many clients would open them; a client
    // id for every two streams (the per-client limits: a client that wants more streams
    // registers again).
    let mut held_watch = Vec::new();
    let mut held_push = Vec::new();
    let mut keep_tx = Vec::new();
    let mut clients = Vec::new();
    let total = cfg.idle_watchers + cfg.idle_pushes;
    for n in 0..total {
        if n % 8 == 0 {
            clients.push(
                LearnerClient::connect(url.clone())
                    .await
                    .ok()
                    .map(|c| (c, 0)),
            );
        }
        let Some(Some((c, id))) = clients.last_mut() else {
            continue;
        };
        if n % 2 == 0 {
            *id = register(c, &s0).await.unwrap_or(0);
        }
        if n < cfg.idle_watchers {
            if let Ok(s) = c
                .watch_weights(tagged(WatchRequest { have_version: 0 }, *id))
                .await
            {
                held_watch.push(s.into_inner());
            }
        } else {
            let (tx, rx) = mpsc::channel::<TrajectoryBatch>(1);
            if let Ok(s) = c
                .push_trajectories(tagged(ReceiverStream::new(rx), *id))
                .await
            {
                held_push.push(s.into_inner());
                keep_tx.push(tx);
            }
        }
    }
    r.watchers_held = held_watch.len();
    r.pushes_held = held_push.len();
    // Five seconds with everything open: memory, Status latency, training.
    let mut peak = r.rss_idle_mib;
    let mut slowest = 0f64;
    let start = Instant::now();
    r.new_client_served = tokio::time::timeout(Duration::from_secs(2), status(addr))
        .await
        .is_ok_and(|s| s.is_ok());
    while start.elapsed() < Duration::from_secs(5) {
        let t = Instant::now();
        let s = tokio::time::timeout(Duration::from_secs(10), probe.status(StatusRequest {}))
            .await
            .context("Status did not answer within 10 s")??
            .into_inner();
        slowest = slowest.max(t.elapsed().as_secs_f64());
        r.steps_during = s.step - s0.step;
        peak = peak.max(rss_mib(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    r.rss_peak_mib = peak;
    r.status_max_seconds = slowest;
    drop((held_watch, held_push, keep_tx, clients));
    // Closed: the learner's memory a few seconds later.
    tokio::time::sleep(Duration::from_secs(5)).await;
    r.rss_after_mib = rss_mib(pid);
    r.peak_over_idle = r.rss_peak_mib / r.rss_idle_mib;
    r.after_over_idle = r.rss_after_mib / r.rss_idle_mib;
    Ok(r)
}
