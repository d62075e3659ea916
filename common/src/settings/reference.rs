//! The configuration reference (`qd config --reference`, committed as
//! `docs/configuration.md`): every key of every section with its type, unit, default and
//! meaning, read from the settings' types — their fields, their `Default`s and their doc
//! comments — so that it cannot drift from what the service accepts.

use schemars::schema_for;
use serde_json::{Map, Value};

use super::Settings;

/// One key of one section.
#[derive(Debug, PartialEq)]
pub struct Key {
    pub section: String,
    pub name: String,
    /// `integer`, `number`, `string`, `boolean`, or the values an enumeration takes.
    pub kind: String,
    /// Read from the name's suffix (`_s`, `_ms`, `_bytes`), else empty.
    pub unit: &'static str,
    /// The built-in default, written as in a TOML file.
    pub default: String,
    /// The field's doc comment (and its values' for an enumeration), on one line.
    pub meaning: String,
}

/// A section: its name, what it is for, and its keys.
#[derive(Debug)]
pub struct Section {
    pub name: String,
    pub about: String,
    pub keys: Vec<Key>,
}

/// Every section of [`Settings`], sections and keys in alphabetical order.
pub fn sections() -> Vec<Section> {
    let root = schema_for!(Settings).to_value();
    let defs = root
        .get("$defs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    properties(&root)
        .into_iter()
        .map(|(section, schema)| {
            let body = resolve(&schema, &defs);
            let keys = properties(&body)
                .into_iter()
                .map(|(name, field)| key(&section, name, &field, &defs))
                .collect();
            Section {
                about: one_line(text(&body, "description")),
                name: section,
                keys,
            }
        })
        .collect()
}

/// The reference as markdown.
pub fn reference() -> String {
    let mut out = String::from(
        "# Configuration reference\n\n\
         Every key the service reads, generated from the settings' types by `qd config \
         --reference` (a test fails when this file and the types differ). A key is set, \
         last one winning, by the built-in default below, a TOML file (`--config FILE`, \
         `[section]` then `key = value`), the environment (`QD__SECTION__KEY=value`, e.g. \
         `QD__LEARNER__BETA=2`) and the command line (`--set section.key=value`). Unknown \
         keys and invalid values stop the process at start-up with a message naming the \
         key; `qd config` prints the effective settings. Units come from the key's \
         suffix: `_s` seconds, `_ms` milliseconds, `_bytes` bytes.\n",
    );
    for s in sections() {
        out.push_str(&format!("\n## `[{}]`\n\n", s.name));
        if !s.about.is_empty() {
            out.push_str(&format!("{}\n\n", s.about));
        }
        out.push_str("| key | type | unit | default | meaning |\n|---|---|---|---|---|\n");
        for k in s.keys {
            out.push_str(&format!(
                "| `{}` | {} | {} | `{}` | {} |\n",
                k.name,
                cell(&k.kind),
                k.unit,
                k.default.replace('|', "\\|"),
                cell(&k.meaning)
            ));
        }
    }
    out
}

fn key(section: &str, name: String, field: &Value, defs: &Map<String, Value>) -> Key {
    let body = resolve(field, defs);
    let (kind, values) = kind(&body);
    let mut meaning = one_line(text(field, "description"));
    if meaning.is_empty() {
        meaning = one_line(text(&body, "description"));
    }
    if !values.is_empty() {
        meaning = [meaning, values].join(" ").trim().to_string();
    }
    let unit = if name.ends_with("_s") {
        "seconds"
    } else if name.ends_with("_ms") {
        "milliseconds"
    } else if name.ends_with("_bytes") {
        "bytes"
    } else {
        ""
    };
    Key {
        section: section.into(),
        default: field.get("default").map(toml_value).unwrap_or_default(),
        name,
        kind,
        unit,
        meaning,
    }
}

/// A type's name, and for an enumeration the meaning of each value that has one.
fn kind(schema: &Value) -> (String, String) {
    let variants: Vec<&Value> = match (schema.get("enum"), schema.get("oneOf")) {
        (Some(Value::Array(values)), _) => values.iter().collect(),
        (_, Some(Value::Array(cases))) => cases.iter().filter_map(|c| c.get("const")).collect(),
        _ => Vec::new(),
    };
    if !variants.is_empty() {
        let names: Vec<String> = variants.iter().map(|v| format!("`{}`", plain(v))).collect();
        let meanings: Vec<String> = schema
            .get("oneOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| {
                let d = one_line(text(c, "description"));
                let value = c.get("const")?;
                (!d.is_empty()).then(|| format!("`{}`: {d}", plain(value)))
            })
            .collect();
        return (format!("one of {}", names.join(", ")), meanings.join("; "));
    }
    let kind = match schema.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts.iter().map(plain).collect::<Vec<_>>().join(" or "),
        _ => "value".into(),
    };
    (kind, String::new())
}

/// The schema a `$ref` points to (the schema itself when it has none).
fn resolve(schema: &Value, defs: &Map<String, Value>) -> Value {
    schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
        .and_then(|name| defs.get(name))
        .cloned()
        .unwrap_or_else(|| schema.clone())
}

fn properties(schema: &Value) -> Vec<(String, Value)> {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

fn text<'a>(schema: &'a Value, field: &str) -> &'a str {
    schema.get(field).and_then(Value::as_str).unwrap_or("")
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

fn plain(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

/// A default as a TOML file writes it.
fn toml_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Array(items) => {
            format!(
                "[{}]",
                items.iter().map(toml_value).collect::<Vec<_>>().join(", ")
            )
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_every_section_is_listed_with_its_default_and_a_meaning() {
        let sections = sections();
        let defaults = serde_json::to_value(Settings::default()).expect("settings serialise");
        let names: Vec<&str> = sections.iter().map(|s| s.name.as_str()).collect();
        let expected: Vec<&String> = defaults.as_object().expect("object").keys().collect();
        assert_eq!(
            names.len(),
            expected.len(),
            "{names:?} against {expected:?}"
        );
        for s in &sections {
            let fields = defaults[&s.name].as_object().expect("a section is a table");
            assert_eq!(s.keys.len(), fields.len(), "[{}]", s.name);
            for k in &s.keys {
                assert_eq!(
                    k.default,
                    toml_value(&fields[&k.name]),
                    "{}.{}",
                    s.name,
                    k.name
                );
                assert!(
                    !k.meaning.is_empty(),
                    "{}.{} has no doc comment",
                    s.name,
                    k.name
                );
                assert!(!k.kind.is_empty(), "{}.{}", s.name, k.name);
            }
        }
    }

    #[test]
    fn enumerations_list_their_values_and_units_come_from_the_suffix() {
        let keys: Vec<Key> = sections().into_iter().flat_map(|s| s.keys).collect();
        let find = |section: &str, name: &str| {
            keys.iter()
                .find(|k| k.section == section && k.name == name)
                .unwrap_or_else(|| panic!("{section}.{name} missing"))
        };
        let clip = find("learner", "grad_clip_scope");
        assert_eq!(clip.kind, "one of `total`, `per_term`");
        assert!(
            clip.meaning.contains("`per_term`: Each term"),
            "{}",
            clip.meaning
        );
        assert_eq!(find("learner", "cfg_scope").default, "\"content\"");
        assert_eq!(find("limits", "handshake_timeout_s").unit, "seconds");
        assert_eq!(find("learner", "chunk_bytes").unit, "bytes");
        assert_eq!(find("learner", "beta").kind, "number");
        assert_eq!(find("learner", "beta").unit, "");
    }

    #[test]
    fn the_committed_reference_is_the_generated_one() {
        let committed = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/configuration.md"
        ));
        assert!(
            committed == reference(),
            "docs/configuration.md differs from the settings' types: \
             run `qd config --reference > docs/configuration.md`"
        );
    }
}
