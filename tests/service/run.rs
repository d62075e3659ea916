//! `qd run`: every role as local processes.

use super::*;

#[test]
fn qd_run_trains_to_its_budget_and_restarts_a_dead_actor() {
    let f = Fixture::new();
    let cfg = f.config(
        "run",
        "[learner]\nmax_steps = 150\n[run]\nactors = 2\nevaluator = true\n",
    );
    let log = f.path("qd-run.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut run = Proc {
        child: Command::new(env!("CARGO_BIN_EXE_qd"))
            .args(["run", "--config", cfg.to_str().unwrap()])
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap(),
        log,
    };
    // Kill actor 1 as soon as it is up; `qd run` starts it again.
    let ready = f.path("rl/actor-1.endpoints.json");
    let first = wait_until("actor 1", || Endpoints::read(&ready).ok()).pid;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_until("actor 1 to be restarted", || {
        Endpoints::read(&ready).ok().filter(|e| e.pid != first)
    });
    assert!(run.wait().success(), "{}", run.log());
    let text = run.log();
    assert!(
        text.contains("[actor-1]") && text.contains("[learner]") && text.contains("[evaluator]")
    );
    assert!(text.contains("starting it again"), "{text}");
    assert!(text.contains("student weights:"), "{text}");
    assert_eq!(train_log(&f.path("rl/train.jsonl")).len(), 150);
    // The end of the run: the learner tells its clients, each stops by itself with
    // status 0 (none is stopped by a signal), and the evaluator scores the final version.
    assert!(text.contains("run finished: telling the clients"), "{text}");
    for role in ["actor-1", "actor-2", "evaluator"] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("[{role}]"))
                && l.contains("the learner has finished the run")),
            "{role} did not hear the run finished:\n{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.contains("stopped: the run finished") && l.contains(role)),
            "{role} did not stop by itself with status 0:\n{text}"
        );
    }
    assert!(!text.contains("did not stop within"), "{text}");
    let evals = std::fs::read_to_string(f.path("rl/eval.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(evals.lines().last().unwrap()).unwrap();
    assert_eq!(
        last["step"], 150,
        "the final version was not evaluated: {evals}"
    );
    // The final student is the 150th step's, and training moved it off the base model.
    let student = Checkpoint::read(&f.path("rl/student.safetensors")).unwrap();
    assert_eq!(student.meta.step, 150);
    let base = Checkpoint::read(&f.path("pt/last.safetensors")).unwrap();
    assert!(
        student
            .tensors()
            .zip(base.tensors())
            .any(|((n, a), (m, b))| n == m && !a.equal(b)),
        "the student's weights equal the base model's"
    );

    // Started again on the finished run: `qd run` says so and returns 0; a learner
    // started on it trains nothing more, says the run finished, and exits 0.
    for role in ["run", "learner"] {
        let again = Command::new(env!("CARGO_BIN_EXE_qd"))
            .args([role, "--config", cfg.to_str().unwrap()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&again.stderr);
        assert!(again.status.success(), "{role}: {text}");
        let said = match role {
            "run" => "the run has finished already",
            _ => "run finished: telling the clients",
        };
        assert!(text.contains(said), "{role}: {text}");
        assert_eq!(train_log(&f.path("rl/train.jsonl")).len(), 150);
    }
    assert_eq!(
        Checkpoint::read(&f.path("rl/student.safetensors"))
            .unwrap()
            .meta
            .step,
        150
    );
}

/// `actor.synchronous`: every step trains on one batch of each actor sampled from the
/// current weights, so two seeded runs end with the same student, bit for bit, and the
/// same training log; a batch size that cannot hold one batch per actor is refused.
#[test]
fn a_synchronous_run_is_reproducible_bit_for_bit() {
    let f = Fixture::new();
    let cfg = f.config(
        "sync",
        "[learner]\nmax_steps = 6\nbatch_prompts = 8\nbeta = 5.0\n\
         [actor]\nbatch_prompts = 4\nsynchronous = true\n[run]\nactors = 2\nevaluator = false\n",
    );
    let run = |dir: &str, sets: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_qd"));
        cmd.args(["run", "--config", cfg.to_str().unwrap(), "--set"])
            .arg(format!("paths.run_dir={}", f.path(dir).display()));
        for s in sets {
            cmd.args(["--set", s]);
        }
        cmd.output().unwrap()
    };
    for dir in ["sync-a", "sync-b"] {
        let o = run(dir, &[]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let log = |dir: &str| train_log(&f.path(&format!("{dir}/train.jsonl")));
    let (a, b) = (log("sync-a"), log("sync-b"));
    assert_eq!(a.len(), 6);
    for (x, y) in a.iter().zip(&b) {
        for key in [
            "loss",
            "kl",
            "pg",
            "reward_mean",
            "grad_norm",
            "mean_staleness",
        ] {
            assert_eq!(x.get(key), y.get(key), "step {}: {key}", x["step"]);
        }
        // Every pair was sampled from the weights it is trained against.
        assert_eq!(x["mean_staleness"].as_f64(), Some(0.0), "{x}");
    }
    let student =
        |dir: &str| Checkpoint::read(&f.path(&format!("{dir}/student.safetensors"))).unwrap();
    let (sa, sb) = (student("sync-a"), student("sync-b"));
    assert_eq!(sa.meta.step, 6);
    for ((n, x), (m, y)) in sa.tensors().zip(sb.tensors()) {
        assert_eq!(n, m);
        assert!(x.equal(y), "{n} differs between two synchronous runs");
    }

    let o = run("sync-c", &["learner.batch_prompts=6"]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("actor.synchronous needs learner.batch_prompts (6)"),
        "{e}"
    );
}
