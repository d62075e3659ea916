//! The learner role: the gRPC service ([`server`]) over its transport and token check
//! ([`transport`], [`connections`]), trajectory intake (`intake`), validation
//! ([`validate`]) and the queue to the trainer ([`queue`]), the distillation and policy-gradient losses ([`loss`]),
//! the compute thread that trains, publishes and checkpoints ([`trainer`]), and the
//! weight broadcast ([`broadcast`]).

pub mod broadcast;
pub mod connections;
mod intake;
pub mod loss;
pub mod metrics;
pub mod queue;
mod seen;
pub mod server;
pub mod step;
pub mod trainer;
pub mod transport;
pub mod validate;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::watch;

use common::settings::Settings;
use common::shutdown::termination;
use model::checkpoint::{Checkpoint, ModelKind};
use model::task::{Split, Task};

use broadcast::Publisher;
use queue::Queue;
use server::{Service, Shared};
use trainer::{Outcome, Stopped, Trainer};
use transport::Auth;
use validate::Rules;

/// Runs the learner until its step budget or a signal; returns where it left the model.
/// The endpoints are written to `run_dir/endpoints.json` once the server listens.
pub async fn run(
    settings: Settings,
    task: Arc<dyn Task>,
    ready_file: Option<&std::path::Path>,
) -> Result<Outcome> {
    let cfg = settings.learner.clone();
    check_exposure(&settings)?;
    let device = model::device::use_device(model::device::parse_device(&cfg.device)?, cfg.threads)?;
    let paths = settings.paths.clone();
    let metrics_addr =
        common::telemetry::serve_metrics(&cfg.metrics_listen, metrics::ALL, &paths.run_name())
            .await?;
    ::metrics::gauge!(
        metrics::RUN_INFO,
        "beta" => cfg.beta.to_string(),
        "cfg_gamma" => cfg.cfg_gamma.to_string(),
        "cfg_scope" => cfg.cfg_scope.to_string(),
        "cfg_plausibility" => cfg.cfg_plausibility.to_string(),
        "divergence" => serde_json::to_value(cfg.divergence)?.as_str().unwrap_or_default().to_string(),
    )
    .set(1.0);
    let vocab_hash = task.vocab_hash();
    let base = Checkpoint::read_for(&paths.base, ModelKind::Policy, &vocab_hash)
        .context("loading the base model")?;
    let model_config = base.meta.config.clone();
    drop(base);
    let vocabulary = task.vocabulary();
    let mut allowed = vec![false; model_config.vocab_size as usize];
    for &id in &vocabulary.allowed {
        if let Some(a) = allowed.get_mut(id as usize) {
            *a = true;
        }
    }
    let rules = Rules {
        prompts: task
            .prompts(Split::Train)
            .into_iter()
            .map(|p| p.ids)
            .collect::<HashSet<_>>(),
        allowed,
        eos: vocabulary.eos,
        max_len: model_config.max_len as usize,
        max_trajectories: cfg.queue_capacity,
        samples_per_prompt: 2,
    };
    anyhow::ensure!(
        !rules.prompts.is_empty(),
        "the task has no training prompts"
    );
    let (queue, queue_rx) = Queue::new(cfg.queue_capacity, cfg.max_staleness);
    let publisher = Arc::new(Publisher::default());
    let shared = Arc::new(Shared::new(
        rules,
        model_config.clone(),
        vocab_hash,
        cfg.chunk_bytes,
        cfg.max_message_bytes,
        cfg.max_steps,
        settings.limits.clone(),
        queue,
        publisher.clone(),
    ));
    tokio::spawn(transport::release_memory(shared.streams_closed.clone()));
    let trainer = {
        let cfg = cfg.clone();
        let (base, run_dir) = (paths.base.clone(), paths.run_dir.clone());
        tokio::task::spawn_blocking(move || {
            Trainer::new(cfg, &base, &run_dir, task.as_ref(), publisher, device)
        })
        .await??
    };

    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("binding the gRPC server to {}", cfg.listen))?;
    let grpc_addr = listener.local_addr()?;
    let l = &settings.limits;
    let incoming = connections::incoming(
        listener,
        connections::ConnectionLimits {
            max: l.max_connections,
            per_address: l.max_connections_per_address,
            handshake: Duration::from_secs(l.handshake_timeout_s),
            keepalive: Duration::from_secs(l.keepalive_s),
        },
    );
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<qd_proto::learner_server::LearnerServer<Service>>()
        .await;
    let auth = Auth {
        token: (!settings.auth.token.is_empty()).then(|| Arc::from(settings.auth.token.as_str())),
    };
    let learner_service = Service::server(shared.clone());
    let (server_stop_tx, mut server_stop_rx) = watch::channel(false);
    let mut builder = transport::transport(&settings.limits, shared.max_request_bytes);
    let tls = &settings.auth;
    if !tls.tls_cert.is_empty() {
        let read = |key: &str, path: &str| {
            std::fs::read(path).with_context(|| format!("{key}: reading {path}"))
        };
        let identity = tonic::transport::Identity::from_pem(
            read("auth.tls_cert", &tls.tls_cert)?,
            read("auth.tls_key", &tls.tls_key)?,
        );
        let mut config = tonic::transport::ServerTlsConfig::new().identity(identity);
        if !tls.tls_client_ca.is_empty() {
            config = config.client_ca_root(tonic::transport::Certificate::from_pem(read(
                "auth.tls_client_ca",
                &tls.tls_client_ca,
            )?));
        }
        builder = builder
            .tls_config(config)
            .context("auth.tls_cert / auth.tls_key / auth.tls_client_ca")?;
    }
    let server = tokio::spawn(
        builder
            .add_service(health_service)
            .add_service(tonic::service::interceptor::InterceptedService::new(
                learner_service,
                auth,
            ))
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = server_stop_rx.wait_for(|s| *s).await;
            }),
    );
    let endpoints = common::telemetry::Endpoints {
        pid: std::process::id(),
        grpc: Some(grpc_addr),
        metrics: metrics_addr,
    };
    endpoints.write(&paths.run_dir.join("endpoints.json"))?;
    if let Some(p) = ready_file {
        endpoints.write(p)?;
    }
    tracing::info!(
        grpc = %grpc_addr,
        tls = !tls.tls_cert.is_empty(),
        mutual_tls = !tls.tls_client_ca.is_empty(),
        auth = !settings.auth.token.is_empty(),
        metrics = ?metrics_addr,
        beta = cfg.beta,
        cfg_gamma = cfg.cfg_gamma,
        cfg_scope = %cfg.cfg_scope,
        max_steps = cfg.max_steps,
        "learner listening"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let rt = tokio::runtime::Handle::current();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("trainer".into())
        .spawn(move || {
            let _ = done_tx.send(trainer.run(queue_rx, stop_rx, rt));
        })
        .context("starting the trainer thread")?;
    let mut done_rx = done_rx;
    let outcome = tokio::select! {
        r = &mut done_rx => r,
        _ = termination() => {
            tracing::info!("stopping: finishing the step and writing a checkpoint");
            let _ = stop_tx.send(true);
            done_rx.await
        }
    };
    let outcome = outcome.context("the trainer thread died")?;
    if let Ok(o) = &outcome {
        if o.stopped == Stopped::Budget {
            announce_finished(&shared, o, Duration::from_secs(cfg.finish_grace_s)).await;
        }
    }
    // Open streams end with the server; give them a moment, then go.
    health
        .set_not_serving::<qd_proto::learner_server::LearnerServer<Service>>()
        .await;
    shared.publisher.close();
    let _ = server_stop_tx.send(true);
    if tokio::time::timeout(Duration::from_secs(3), server)
        .await
        .is_err()
    {
        tracing::warn!("the gRPC server did not stop in 3 s; leaving anyway");
    }
    let q = shared.queue.counts();
    tracing::info!(
        accepted = q.accepted,
        taken = q.taken,
        expired = q.expired,
        waiting = q.depth,
        stale = q.stale,
        rejected = q.rejected,
        "trajectories: accepted = taken + expired + waiting (lost with the process)"
    );
    let outcome = outcome?;
    tracing::info!(
        step = outcome.step,
        version = outcome.version,
        checkpoint = %outcome.checkpoint.display(),
        student = %outcome.student.display(),
        "learner stopped ({:?})",
        outcome.stopped
    );
    Ok(outcome)
}

/// How long no weight stream must be open before a finished learner leaves: a client
/// that was reconnecting (back-off up to `client.backoff_max_ms`, 2 s by default) comes
/// back within it and hears that the run has finished.
const FINISHED_QUIET: Duration = Duration::from_secs(5);

/// The run has reached its step budget: tells every client (weight streams end after the
/// final version; `Register` and `Status` answer `finished`) and waits until no weight
/// stream has been open for [`FINISHED_QUIET`], at most `grace` (or until SIGTERM/Ctrl-C).
async fn announce_finished(shared: &Shared, o: &Outcome, grace: Duration) {
    ::metrics::gauge!(metrics::FINISHED).set(1.0);
    shared.publisher.finish();
    let (actors, evaluators) = shared.connected();
    tracing::info!(
        step = o.step,
        version = o.version,
        actors,
        evaluators,
        grace_s = grace.as_secs(),
        "run finished: telling the clients"
    );
    let deadline = tokio::time::Instant::now() + grace;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut quiet_since = None;
    loop {
        let (actors, evaluators) = shared.connected();
        if actors + evaluators > 0 {
            quiet_since = None;
        } else if quiet_since
            .get_or_insert_with(tokio::time::Instant::now)
            .elapsed()
            >= FINISHED_QUIET
        {
            tracing::info!(
                "no client connected for {FINISHED_QUIET:?}: every client has been told"
            );
            return;
        }
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::time::sleep_until(deadline) => {
                tracing::warn!(actors, evaluators, "clients still connected after learner.finish_grace_s; leaving anyway");
                return;
            }
            _ = termination() => return,
        }
    }
}

/// Refuses to serve a reachable port without a token unless told to (`auth.insecure`).
fn check_exposure(settings: &Settings) -> Result<()> {
    let listen = &settings.learner.listen;
    let loopback = listen
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback());
    if settings.auth.token.is_empty() && !loopback {
        anyhow::ensure!(
            settings.auth.insecure,
            "refusing to serve {listen} without a token: set auth.token_file or \
             QD__AUTH__TOKEN (openssl rand -hex 32), listen on 127.0.0.1, or set \
             auth.insecure = true to let any client that reaches the port train and read \
             the weights"
        );
        tracing::warn!(
            listen,
            "auth.insecure: serving without a token; any client that reaches the port can \
             register, push trajectories and read the weights"
        );
    }
    Ok(())
}
