//! `qd health`: the probe container healthchecks run. A gRPC target is asked over the
//! standard `grpc.health.v1` protocol (the learner serves it), over TLS for
//! `grpcs://host:port` (verified with the given CA, and with a client certificate where
//! the learner wants one); an `http://…` URL must answer 200 (the `/metrics` endpoint of
//! every qd process). Exit 0 when healthy.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// What to probe, parsed from the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `host:port` or `grpc://host:port`: the gRPC health service; `grpcs://host:port`
    /// the same over TLS.
    Grpc { addr: String, tls: bool },
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
        let (addr, tls) = match s.strip_prefix("grpcs://") {
            Some(rest) => (rest, true),
            None => (s.strip_prefix("grpc://").unwrap_or(s), false),
        };
        match addr.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Target::Grpc {
                    addr: addr.to_string(),
                    tls,
                })
            }
            _ => Err(format!(
                "{s:?}: expected host:port, grpc://host:port, grpcs://host:port or http://host:port/path"
            )),
        }
    }
}

/// How a `grpcs://` probe verifies the learner and proves itself.
#[derive(Clone, Debug, Default)]
pub struct Tls {
    /// The CA (PEM) the learner's certificate must chain to.
    pub ca: Option<PathBuf>,
    /// The name expected in the certificate (default: the target's host).
    pub domain: Option<String>,
    /// A client certificate and key (PEM), for a learner that wants mutual TLS.
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// Probes `target` within `timeout`; an error says why it is not healthy.
pub async fn check(target: &Target, service: &str, tls: &Tls, timeout: Duration) -> Result<()> {
    match tokio::time::timeout(timeout, probe(target, service, tls)).await {
        Ok(r) => r,
        Err(_) => bail!("no answer within {timeout:?}"),
    }
}

async fn probe(target: &Target, service: &str, tls: &Tls) -> Result<()> {
    match target {
        Target::Grpc { addr, tls: secure } => {
            let scheme = if *secure { "https" } else { "http" };
            let mut endpoint =
                tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}"))?;
            if *secure {
                endpoint = endpoint.tls_config(client_tls(tls)?)?;
            }
            let channel = endpoint
                .connect()
                .await
                .with_context(|| format!("connecting to {scheme}://{addr}"))?;
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

fn client_tls(tls: &Tls) -> Result<tonic::transport::ClientTlsConfig> {
    let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let ca = tls
        .ca
        .as_ref()
        .context("a grpcs:// target needs --ca (the CA the learner's certificate chains to)")?;
    let mut c = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(read(ca)?));
    if let Some(d) = &tls.domain {
        c = c.domain_name(d.clone());
    }
    if let Some((cert, key)) = &tls.identity {
        c = c.identity(tonic::transport::Identity::from_pem(
            read(cert)?,
            read(key)?,
        ));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::Target;

    #[test]
    fn targets_parse() {
        let grpc = |addr: &str, tls| Target::Grpc {
            addr: addr.into(),
            tls,
        };
        assert_eq!("learner:50051".parse(), Ok(grpc("learner:50051", false)));
        assert_eq!("grpc://127.0.0.1:1".parse(), Ok(grpc("127.0.0.1:1", false)));
        assert_eq!("grpcs://127.0.0.1:1".parse(), Ok(grpc("127.0.0.1:1", true)));
        assert_eq!(
            "http://actor:9102/metrics".parse(),
            Ok(Target::Http {
                authority: "actor:9102".into(),
                path: "/metrics".into()
            })
        );
        for bad in [
            "learner",
            "http://actor/metrics",
            ":80",
            "host:port",
            "",
            "grpcs://x",
        ] {
            assert!(bad.parse::<Target>().is_err(), "{bad:?} parsed");
        }
    }
}
