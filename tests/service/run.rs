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
    assert!(
        std::fs::read_to_string(f.path("rl/eval.jsonl"))
            .unwrap()
            .lines()
            .count()
            >= 1
    );
}
