//! Captions from metadata: each tune's attributes (genre, origin, tempo, key and mode,
//! meter) in English, and seeded free-text prompts built from them with varied templates
//! and randomly omitted fields. The attributes are also the quality judge's labels.

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::abc::Meta;
use super::music::{Key, Meter};

/// The attributes of a tune that prompts name and the judge predicts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attributes {
    /// Genre or rhythm: `reel`, `jig`, `ballad`, `love song`, … (`None`: unknown).
    pub genre: Option<String>,
    /// Origin as an English adjective: `irish`, `german`, `chinese`, …
    pub origin: Option<String>,
    /// `slow`, `moderate` or `lively`, from the transcriber's notes or the tempo field.
    pub tempo: Option<String>,
    /// Key and mode, e.g. `d major`, `a dorian`.
    pub key: String,
    /// The mode alone, e.g. `major`.
    pub mode: String,
    /// The meter in words, e.g. `6/8`, `common time`.
    pub meter: String,
}

/// Keywords (lower case, matched as substrings) → genre, most specific first. German
/// and Chinese labels of the Essen collection and English dance types.
const GENRES: &[(&str, &str)] = &[
    ("slip jig", "slip jig"),
    ("slipjig", "slip jig"),
    ("single jig", "jig"),
    ("double jig", "jig"),
    ("jig", "jig"),
    ("reel", "reel"),
    ("hornpipe", "hornpipe"),
    ("strathspey", "strathspey"),
    ("highland fling", "fling"),
    ("fling", "fling"),
    ("slide", "slide"),
    ("clog", "clog"),
    ("set dance", "set dance"),
    ("planxty", "planxty"),
    ("quick step", "march"),
    ("quickstep", "march"),
    ("march", "march"),
    ("waltz", "waltz"),
    ("polka", "polka"),
    ("minuet", "minuet"),
    ("rant", "rant"),
    ("lament", "lament"),
    ("walkaround", "walkaround"),
    ("wiegen", "lullaby"),
    ("kinder", "children's song"),
    ("liebe", "love song"),
    ("ballade", "ballad"),
    ("romanze", "ballad"),
    ("tanz", "dance song"),
    ("reigen", "dance song"),
    ("wuge", "dance song"),
    ("soldaten", "soldiers' song"),
    ("kriegs", "soldiers' song"),
    ("religi", "hymn"),
    ("geistlich", "hymn"),
    ("trink", "drinking song"),
    ("abschied", "farewell song"),
    ("jaeger", "hunting song"),
    ("klage", "lament"),
    ("scherz", "humorous song"),
    ("lustig", "humorous song"),
    ("wander", "walking song"),
    ("xiaodiao", "ditty"),
    ("shange", "mountain song"),
    ("haozi", "work song"),
    ("arbeit", "work song"),
    ("yangge", "yangge"),
    ("air", "air"),
    ("song", "song"),
];

/// Keywords in `O:` (German place names) → origin adjective, most specific first.
const ORIGINS: &[(&str, &str)] = &[
    ("lothringen", "lorraine"),
    ("luxemburg", "luxembourgish"),
    ("china", "chinese"),
    ("irland", "irish"),
    ("irish", "irish"),
    ("scotch", "scottish"),
    ("schottland", "scottish"),
    ("schweiz", "swiss"),
    ("oesterreich", "austrian"),
    ("tirol", "austrian"),
    ("steiermark", "austrian"),
    ("niederlande", "dutch"),
    ("ungarn", "hungarian"),
    ("polen", "polish"),
    ("udssr", "russian"),
    ("russland", "russian"),
    ("schweden", "swedish"),
    ("daenemark", "danish"),
    ("jugoslawien", "yugoslav"),
    ("rumaenien", "romanian"),
    ("tschechoslowakei", "czech"),
    ("amerika", "american"),
    ("frankreich", "french"),
    ("deutschland", "german"),
];

/// Transcribers' tempo notes → tempo word.
const TEMPI: &[(&str, &str)] = &[
    ("very slow", "slow"),
    ("slow", "slow"),
    ("tender", "slow"),
    ("feeling", "slow"),
    ("expression", "slow"),
    ("plaintive", "slow"),
    ("moderate", "moderate"),
    ("lively", "lively"),
    ("spirit", "lively"),
    ("animated", "lively"),
    ("gaily", "lively"),
    ("brisk", "lively"),
    ("quick", "lively"),
    ("fast", "lively"),
];

fn lookup(text: &str, table: &[(&str, &'static str)]) -> Option<String> {
    let lower = text.to_lowercase();
    table
        .iter()
        .find(|(k, _)| contains_word_start(&lower, k))
        .map(|(_, v)| v.to_string())
}

/// Whether `needle` occurs in `hay` at the start of a word (so `air` does not match
/// `fair`, while `liebe` matches `liebeslied`).
fn contains_word_start(hay: &str, needle: &str) -> bool {
    hay.match_indices(needle).any(|(i, _)| {
        hay[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_alphanumeric())
    })
}

/// The default origin of a collection whose tunes carry no `O:` field.
fn collection_origin(collection: &str, file: &str) -> Option<&'static str> {
    match collection {
        "oneills1850" => Some("irish"),
        "airdsAirs" => Some("scottish"),
        "miscFolk" if file.contains("american") => Some("american"),
        "miscFolk" if file.contains("northumbrian") => Some("english"),
        _ => None,
    }
}

/// The tempo word of a `Q:` field (`1/4=104`, `3/8=120`), by beats per minute.
fn tempo_from_q(q: &str) -> Option<String> {
    let bpm: f64 = q.rsplit('=').next()?.trim().parse().ok()?;
    Some(
        match bpm {
            b if b < 72.0 => "slow",
            b if b < 108.0 => "moderate",
            _ => "lively",
        }
        .to_string(),
    )
}

/// The meter in caption words.
pub fn meter_words(m: Meter) -> String {
    match m {
        Meter::Common => "common time".to_string(),
        Meter::Cut => "cut time".to_string(),
        Meter::Frac(n, d) => format!("{n}/{d}"),
    }
}

/// Derives the attributes of a tune from its metadata, collection and file name.
pub fn attributes(collection: &str, file: &str, meta: &Meta, key: Key, meter: Meter) -> Attributes {
    let genre = meta
        .rhythm
        .iter()
        .chain(&meta.titles)
        .find_map(|t| lookup(t, GENRES))
        .or_else(|| match file {
            f if f.starts_with("ballad") => Some("ballad".to_string()),
            f if f.starts_with("kinder") => Some("children's song".to_string()),
            _ => None,
        });
    let origin = meta
        .origin
        .iter()
        .find_map(|o| lookup(o, ORIGINS))
        .or_else(|| collection_origin(collection, file).map(str::to_string));
    let tempo = meta
        .notes
        .iter()
        .find_map(|n| lookup(n, TEMPI))
        .or_else(|| meta.tempo.as_deref().and_then(tempo_from_q));
    Attributes {
        genre,
        origin,
        tempo,
        key: key.name(),
        mode: key.mode.name().to_string(),
        meter: meter_words(meter),
    }
}

/// Builds a prompt from the attributes: one of several templates, each optional field
/// omitted with some probability (key or genre always survive, so no prompt is empty).
pub fn caption<R: Rng>(a: &Attributes, rng: &mut R) -> String {
    const KEEP: f64 = 0.7;
    let mut keep = |v: &Option<String>| v.clone().filter(|_| rng.gen_bool(KEEP));
    let tempo = keep(&a.tempo);
    let origin = keep(&a.origin);
    let genre_kept = keep(&a.genre);
    let meter = keep(&Some(a.meter.clone()));
    let key = keep(&Some(a.key.clone()));
    let (genre, key) = match (genre_kept, key) {
        (None, None) => (a.genre.clone(), a.genre.is_none().then(|| a.key.clone())),
        other => other,
    };
    let noun = genre.clone().unwrap_or_else(|| "tune".to_string());
    let adjectives = [tempo.clone(), origin.clone()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    let np = |article: bool| {
        let phrase = [adjectives.as_str(), noun.as_str()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        if article {
            format!(
                "{} {phrase}",
                if phrase.starts_with(['a', 'e', 'i', 'o', 'u']) {
                    "an"
                } else {
                    "a"
                }
            )
        } else {
            phrase
        }
    };
    let in_key = key.as_ref().map(|k| format!("in {k}"));
    let in_meter = meter.as_ref().map(|m| format!("in {m}"));
    let parts: Vec<Option<String>> = match rng.gen_range(0..5) {
        0 => vec![Some(np(true)), in_key, in_meter],
        1 => vec![Some(np(false)), in_meter, in_key],
        2 => vec![
            key.clone(),
            Some(np(false)),
            meter.map(|m| format!(", {m}")),
        ],
        3 => vec![
            Some(np(true)),
            in_meter.map(|m| format!("{m},")),
            key.map(|k| format!("{k} key")),
        ],
        _ => {
            let tempo = tempo.map(|t| format!(", {t}"));
            vec![
                Some(noun.clone()),
                in_key,
                in_meter,
                tempo,
                origin.map(|o| format!(", {o} style")),
            ]
        }
    };
    let text = parts.into_iter().flatten().collect::<Vec<_>>().join(" ");
    text.replace(" ,", ",").trim_end_matches(',').to_string()
}

/// Word-level prompt tokenization: lower case, split on anything but letters, digits,
/// `/` and `'`.
pub fn prompt_words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !(c.is_alphanumeric() || c == '/' || c == '\''))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}
