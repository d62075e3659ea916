//! `qd bench faults` in miniature: idle and silent streams, heavy and malformed messages,
//! actor and learner SIGKILLs against real processes. Every malformed message is
//! refused with a status, no version is reused, no temporary file is left, the training
//! log holds each step once and the learner logs no error.

use super::*;

#[test]
fn a_small_fault_campaign_leaves_training_intact() {
    let f = Fixture::new();
    let cfg = f.config("faults", "");
    let out = Command::new(env!("CARGO_BIN_EXE_qd"))
        .args(["bench", "faults", "--config"])
        .arg(&cfg)
        .args([
            "--idle-watchers",
            "150",
            "--idle-pushes",
            "20",
            "--heavy-streams",
            "8",
            "--oversize-messages",
            "1",
            "--malformed",
            "60",
            "--actor-kills",
            "2",
            "--learner-kills",
            "3",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let n = |path: &[&str]| {
        path.iter()
            .fold(&r, |v, k| &v[*k])
            .as_f64()
            .unwrap_or_else(|| panic!("{path:?}: {r}"))
    };
    // The limits held: the watchers beyond max_watchers (128, two of them the actors')
    // were refused; the 20 silent pushes (a client id for every two streams, the
    // per-client limit) all held; Status kept answering.
    let held = n(&["idle", "watchers_held"]);
    assert!((120.0..=128.0).contains(&held), "{r}");
    assert_eq!(n(&["idle", "pushes_held"]), 20.0, "{r}");
    assert!(n(&["idle", "status_max_seconds"]) < 2.0, "{r}");
    assert!(n(&["idle", "peak_over_idle"]) < 2.0, "{r}");
    assert!(n(&["idle", "after_over_idle"]) < 1.2, "{r}");
    assert_eq!(r["idle"]["new_client_served"], true, "{r}");
    assert!(
        n(&["idle", "steps_during"]) > 0.0,
        "the actors stopped training: {r}"
    );
    // The heaviest messages: those the limits let through to decoding are refused by
    // validation, those that would decode too large before decoding, the 63 MiB one at
    // its length, never buffered whole.
    let codes = &r["heavy"]["codes"];
    assert_eq!(codes["InvalidArgument"], 4, "{r}");
    assert_eq!(codes["ResourceExhausted"], 4, "{r}");
    assert_eq!(codes["OutOfRange"], 1, "{r}");
    assert_eq!(codes.as_object().map(|c| c.len()), Some(3), "{r}");
    assert!(
        n(&["heavy", "rss_peak_oversize_mib"]) - n(&["heavy", "rss_before_mib"]) < 32.0,
        "{r}"
    );
    // Every malformed message was refused with a status.
    assert_eq!(n(&["malformed", "refused"]), 60.0, "{r}");
    assert_eq!(n(&["malformed", "accepted"]), 0.0, "{r}");
    // Every kill survived, with fresh version numbers and a clean training log.
    assert_eq!(n(&["kills", "learner_resumed"]), 3.0, "{r}");
    for key in [
        "versions_reused",
        "stray_temp_files",
        "log_step_errors",
        "learner_errors",
    ] {
        assert_eq!(n(&["kills", key]), 0.0, "{key}: {r}");
    }
    assert!(n(&["kills", "reconnect_max"]) < 10.0, "{r}");
    // Stopped by SIGTERM mid-run, the learner checkpoints the last step it logged.
    assert_eq!(
        n(&["kills", "final_checkpoint_step"]),
        n(&["kills", "final_step"]),
        "{r}"
    );
}
