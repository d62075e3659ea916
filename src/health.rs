//! `qd health`: the probe container healthchecks run. A gRPC target is asked over the
//! standard `grpc.health.v1` protocol (the learner serves it); an `http://…` URL must
//! answer 200 (the `/metrics` endpoint of every qd process). Exit 0 when healthy.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// What to probe, parsed from the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `host:port` or `grpc://host:port`: the gRPC health service.
    Grpc(String),
    /// `http://host:port/path`: an HTTP GET that must return 200.
    Http { authority: String, path: String },
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Target, String> {
        if let Some(rest) = s.strip_prefix("http://") {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            if !authority.contains(':') {
                return Err(format!(
                    "{s:?}: the URL needs a port (http://host:port/path)"
                ));
            }
            return Ok(Target::Http {
                authority: authority.to_string(),
                path: format!("/{path}"),
            });
        }
        let addr = s.strip_prefix("grpc://").unwrap_or(s);
        match addr.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Target::Grpc(addr.to_string()))
            }
            _ => Err(format!(
                "{s:?}: expected host:port, grpc://host:port or http://host:port/path"
            )),
        }
    }
}

/// Probes `target` within `timeout`; an error says why it is not healthy.
pub async fn check(target: &Target, service: &str, timeout: Duration) -> Result<()> {
    match tokio::time::timeout(timeout, probe(target, service)).await {
        Ok(r) => r,
        Err(_) => bail!("no answer within {timeout:?}"),
    }
}

async fn probe(target: &Target, service: &str) -> Result<()> {
    match target {
        Target::Grpc(addr) => {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
                .connect()
                .await
                .with_context(|| format!("connecting to {addr}"))?;
            let status = HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: service.to_string(),
                })
                .await
                .with_context(|| format!("grpc.health.v1 Check on {addr}"))?
                .into_inner()
                .status();
            if status != ServingStatus::Serving {
                bail!("{addr} is {}", status.as_str_name());
            }
        }
        Target::Http { authority, path } => {
            let mut stream = tokio::net::TcpStream::connect(authority.as_str())
                .await
                .with_context(|| format!("connecting to {authority}"))?;
            let request =
                format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await?;
            let mut head = [0u8; 64];
            let n = stream.read(&mut head).await?;
            let line = String::from_utf8_lossy(&head[..n]);
            let line = line.lines().next().unwrap_or_default();
            if line.split_whitespace().nth(1) != Some("200") {
                bail!("GET http://{authority}{path} answered {line:?}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Target;

    #[test]
    fn targets_parse() {
        assert_eq!(
            "learner:50051".parse(),
            Ok(Target::Grpc("learner:50051".into()))
        );
        assert_eq!(
            "grpc://127.0.0.1:1".parse(),
            Ok(Target::Grpc("127.0.0.1:1".into()))
        );
        assert_eq!(
            "http://actor:9102/metrics".parse(),
            Ok(Target::Http {
                authority: "actor:9102".into(),
                path: "/metrics".into()
            })
        );
        for bad in ["learner", "http://actor/metrics", ":80", "host:port", ""] {
            assert!(bad.parse::<Target>().is_err(), "{bad:?} parsed");
        }
    }
}
