//! `qd tls init`: the certificates a deployment serves TLS with — a private CA, the
//! learner's certificate and key signed by it, and a client certificate for mutual TLS —
//! generated into a folder (compose's bootstrap, or an operator before `kubectl apply`).
//! Keys are written readable by their owner only; an existing set is kept.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// The files of a set, by name in its folder.
pub const CA: &str = "ca.pem";
pub const CA_KEY: &str = "ca-key.pem";
pub const LEARNER: &str = "learner.pem";
pub const LEARNER_KEY: &str = "learner-key.pem";
pub const CLIENT: &str = "client.pem";
pub const CLIENT_KEY: &str = "client-key.pem";

/// Certificates are valid from the start of this year for this many years (renew by
/// removing the folder and running again).
const VALID_YEARS: i32 = 3;

/// The current year (UTC), near enough for validity periods that start on 1 January.
fn this_year() -> i32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    1970 + (secs as f64 / (365.2425 * 86_400.0)) as i32
}

/// Writes a CA, a learner certificate for `names` (host names or IP addresses; `localhost`
/// and 127.0.0.1 are always included, for probes inside the learner's container) and a
/// client certificate into `out`. Returns false, writing nothing, when `out` already
/// holds a learner certificate.
pub fn init(out: &Path, names: &[String]) -> Result<bool> {
    if out.join(LEARNER).exists() {
        return Ok(false);
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let year = this_year();
    let dated = |mut p: CertificateParams| {
        p.not_before = rcgen::date_time_ymd(year, 1, 1);
        p.not_after = rcgen::date_time_ymd(year + VALID_YEARS, 1, 1);
        p
    };

    let mut ca_params = dated(CertificateParams::new(Vec::<String>::new())?);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "qd deployment CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let mut sans: Vec<String> = names.to_vec();
    for always in ["localhost", "127.0.0.1"] {
        if !sans.iter().any(|n| n == always) {
            sans.push(always.to_string());
        }
    }
    let leaf = |sans: Vec<String>, cn: &str, usage: ExtendedKeyUsagePurpose| -> Result<_> {
        let mut p = dated(CertificateParams::new(sans)?);
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![usage];
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &ca)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    let learner = leaf(sans, "qd learner", ExtendedKeyUsagePurpose::ServerAuth)?;
    let client = leaf(vec![], "qd client", ExtendedKeyUsagePurpose::ClientAuth)?;

    // The learner's certificate last: its presence marks a complete set.
    for (name, text, secret) in [
        (CA_KEY, ca.key().serialize_pem(), true),
        (CA, ca.pem(), false),
        (CLIENT_KEY, client.1, true),
        (CLIENT, client.0, false),
        (LEARNER_KEY, learner.1, true),
        (LEARNER, learner.0, false),
    ] {
        write(&out.join(name), &text, secret)?;
    }
    Ok(true)
}

/// Writes `text` to `path` atomically; a secret readable by its owner only.
fn write(path: &Path, text: &str, secret: bool) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp: PathBuf = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_is_written_once_with_private_keys() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("tls");
        assert!(init(&out, &["learner".into()]).unwrap());
        for (name, mode) in [
            (CA, 0o644),
            (CA_KEY, 0o600),
            (LEARNER, 0o644),
            (LEARNER_KEY, 0o600),
            (CLIENT, 0o644),
            (CLIENT_KEY, 0o600),
        ] {
            let meta = std::fs::metadata(out.join(name)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, mode, "{name}");
        }
        let before = std::fs::read(out.join(LEARNER)).unwrap();
        assert!(!init(&out, &["other".into()]).unwrap());
        assert_eq!(std::fs::read(out.join(LEARNER)).unwrap(), before);
    }
}
