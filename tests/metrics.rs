//! Every metric a role registers is documented in docs/metrics.md, and every metric
//! documented there is registered by a role: the catalogues and the page are one list.

use std::collections::BTreeSet;

use common::telemetry::Metric;

fn documented() -> BTreeSet<String> {
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md"))
        .expect("docs/metrics.md");
    // Names in backticks at the start of a table row, e.g. `qd_learner_kl` or
    // `qd_learner_actors_connected{role}`.
    page.lines()
        .filter(|l| l.starts_with("| `qd_"))
        .flat_map(|l| {
            l.split('|')
                .nth(1)
                .unwrap_or("")
                .split(',')
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .map(|n| {
            let n = n.trim().trim_matches('`');
            n.split('{').next().unwrap_or(n).to_string()
        })
        .collect()
}

#[test]
fn catalogues_and_docs_name_the_same_metrics() {
    let roles: [(&str, Vec<Metric>); 3] = [
        ("learner", learner::metrics::ALL.to_vec()),
        ("actor", actor::metrics::actor()),
        ("evaluator", actor::metrics::evaluator()),
    ];
    let mut registered = BTreeSet::new();
    for (role, catalogue) in &roles {
        let mut seen = BTreeSet::new();
        for m in catalogue {
            assert!(
                m.name.starts_with("qd_"),
                "{role}: {} lacks the qd_ prefix",
                m.name
            );
            assert!(
                !m.help.trim().is_empty(),
                "{role}: {} has no help text",
                m.name
            );
            assert!(
                seen.insert(m.name),
                "{role}: {} is registered twice",
                m.name
            );
            registered.insert(m.name.to_string());
        }
    }
    let documented = documented();
    let undocumented: Vec<_> = registered.difference(&documented).collect();
    let unregistered: Vec<_> = documented.difference(&registered).collect();
    assert!(
        undocumented.is_empty() && unregistered.is_empty(),
        "registered but not in docs/metrics.md: {undocumented:?}; documented but registered by no role: {unregistered:?}"
    );
    assert!(registered.len() >= 45, "{} metrics", registered.len());
}
