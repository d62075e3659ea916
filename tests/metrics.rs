//! Every metric a role registers is documented in docs/metrics.md, and every metric
//! documented there is registered by a role: the catalogues and the page are one list,
//! named by Prometheus's conventions, and the page says what each help text says.

use std::collections::{BTreeMap, BTreeSet};

use common::telemetry::{Kind, Metric};

/// The rows of docs/metrics.md's tables: each name in a row's first cell (without its
/// `{label}`), the label, the kind and the meaning.
fn documented() -> BTreeMap<String, Row> {
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md"))
        .expect("docs/metrics.md");
    let mut rows = BTreeMap::new();
    for line in page.lines().filter(|l| l.starts_with("| `qd_")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (names, kind, meaning) = (cells[1], cells[2], cells[3]);
        for n in names.split(',') {
            let n = n.trim().trim_matches('`');
            let (name, label) = match n.split_once('{') {
                Some((name, label)) => (name, Some(label.trim_end_matches('}').to_string())),
                None => (n, None),
            };
            let row = Row {
                label,
                kind: kind.to_string(),
                meaning: meaning.to_string(),
            };
            assert!(
                rows.insert(name.to_string(), row).is_none(),
                "{name} is documented twice"
            );
        }
    }
    rows
}

#[derive(Debug)]
struct Row {
    label: Option<String>,
    kind: String,
    meaning: String,
}

/// The words of a text that carry its meaning: lower case, letters and digits only, four
/// letters or more.
fn words(text: &str) -> BTreeSet<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 4)
        .map(str::to_string)
        .collect()
}

#[test]
fn catalogues_and_docs_name_the_same_metrics_by_the_conventions() {
    let roles: [(&str, Vec<Metric>); 3] = [
        ("learner", learner::metrics::ALL.to_vec()),
        ("actor", actor::metrics::actor()),
        ("evaluator", actor::metrics::evaluator()),
    ];
    let documented = documented();
    let mut registered = BTreeSet::new();
    let mut wrong = Vec::new();
    for (role, catalogue) in &roles {
        let mut seen = BTreeSet::new();
        for m in catalogue {
            let name = m.name;
            assert!(seen.insert(name), "{role}: {name} is registered twice");
            registered.insert(name.to_string());
            // Each role under its own prefix; counters and only counters end in
            // `_total`; rates are PromQL's, not the process's.
            let kind = match m.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram(_) => "histogram",
            };
            if !name.starts_with(&format!("qd_{role}_")) {
                wrong.push(format!("{name}: not under qd_{role}_"));
            }
            if (kind == "counter") != name.ends_with("_total") {
                wrong.push(format!("{name}: a {kind}, so `_total` only if a counter"));
            }
            if name.contains("per_second") {
                wrong.push(format!("{name}: a rate computed in the process"));
            }
            if m.help.trim().is_empty() {
                wrong.push(format!("{name}: no help text"));
            }
            let Some(row) = documented.get(name) else {
                continue;
            };
            // The page says what the help text says: its kind, its label, and every
            // word of the help.
            if row.kind != kind {
                wrong.push(format!("{name}: a {kind}, documented as a {}", row.kind));
            }
            if row.label.as_deref() != m.label.map(|(l, _)| l) {
                wrong.push(format!(
                    "{name}: label {:?}, documented {:?}",
                    m.label.map(|(l, _)| l),
                    row.label
                ));
            }
            let missing: Vec<String> = words(m.help)
                .difference(&words(&row.meaning))
                .cloned()
                .collect();
            if !missing.is_empty() {
                wrong.push(format!(
                    "{name}: help {:?} says {missing:?}, which docs/metrics.md does not",
                    m.help
                ));
            }
        }
    }
    let names: BTreeSet<String> = documented.keys().cloned().collect();
    let undocumented: Vec<_> = registered.difference(&names).collect();
    let unregistered: Vec<_> = names.difference(&registered).collect();
    assert!(
        undocumented.is_empty() && unregistered.is_empty(),
        "registered but not in docs/metrics.md: {undocumented:?}; documented but registered by no role: {unregistered:?}"
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(registered.len() >= 45, "{} metrics", registered.len());
}
