//! The tune as a token sequence: the token type, its canonical text, and the grouping
//! of tokens into notes that bar accounting, rendering and MIDI export walk over.
//!
//! A tune is `M:<meter> K:<key>` followed by body tokens. A note is a pitch token (or `z`
//! for a rest) optionally followed by a duration token (absent means one eighth note),
//! optionally followed by a tie `-`. Durations are exact and normalised to eighth notes
//! whatever `L:` the source used, and broken rhythm is already applied to them.

use std::fmt;
use std::str::FromStr;

use super::music::{dur_suffix, Dur, Key, Meter, Pitch};

/// One token of a tune.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Token {
    Meter(Meter),
    Key(Key),
    Note(Pitch),
    Rest,
    /// The length of the preceding note or rest, in eighth notes (never exactly 1).
    Dur(Dur),
    /// Ties the preceding note to the next.
    Tie,
    /// `(p:q:r`: the next `r` notes take the time of `q` notes of their length … `p` notes.
    Tuplet {
        p: u8,
        q: u8,
        r: u8,
    },
    Bar(Bar),
    /// First/second … ending, `[1`.
    Ending(u8),
}

/// Bar lines, normalised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bar {
    Single,
    Double,
    Final,
    ThickThin,
    RepeatStart,
    RepeatEnd,
    RepeatBoth,
}

impl Bar {
    pub fn text(self) -> &'static str {
        match self {
            Bar::Single => "|",
            Bar::Double => "||",
            Bar::Final => "|]",
            Bar::ThickThin => "[|",
            Bar::RepeatStart => "|:",
            Bar::RepeatEnd => ":|",
            Bar::RepeatBoth => "::",
        }
    }

    const ALL: [Bar; 7] = [
        Bar::Single,
        Bar::Double,
        Bar::Final,
        Bar::ThickThin,
        Bar::RepeatStart,
        Bar::RepeatEnd,
        Bar::RepeatBoth,
    ];

    /// Whether the bar line closes a section (where a partial bar may stand).
    pub fn ends_section(self) -> bool {
        !matches!(self, Bar::Single)
    }
}

/// The default `q` of a `(p` tuplet (ABC 2.1 §4.13).
pub fn default_tuplet_q(p: u8, meter: Meter) -> u8 {
    match p {
        2 | 4 | 8 => 3,
        3 | 6 => 2,
        _ if meter.is_compound() => 3,
        _ => 2,
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Meter(m) => write!(f, "M:{m}"),
            Token::Key(k) => write!(f, "K:{k}"),
            Token::Note(p) => write!(f, "{p}"),
            Token::Rest => f.write_str("z"),
            Token::Dur(d) => f.write_str(&dur_suffix(*d)),
            Token::Tie => f.write_str("-"),
            Token::Tuplet { p, q, r } => write!(f, "({p}:{q}:{r}"),
            Token::Bar(b) => f.write_str(b.text()),
            Token::Ending(n) => write!(f, "[{n}"),
        }
    }
}

/// Error for text that is not a token.
#[derive(Debug, thiserror::Error)]
#[error("not a tune token: {0:?}")]
pub struct BadToken(pub String);

impl FromStr for Token {
    type Err = BadToken;

    fn from_str(s: &str) -> Result<Token, BadToken> {
        let bad = || BadToken(s.to_string());
        if let Some(m) = s.strip_prefix("M:") {
            return Meter::parse(m).map(Token::Meter).ok_or_else(bad);
        }
        if let Some(k) = s.strip_prefix("K:") {
            return Key::parse(k).map(Token::Key).ok_or_else(bad);
        }
        if let Some(b) = Bar::ALL.iter().find(|b| b.text() == s) {
            return Ok(Token::Bar(*b));
        }
        match s {
            "z" => return Ok(Token::Rest),
            "-" => return Ok(Token::Tie),
            _ => {}
        }
        if let Some(n) = s.strip_prefix('[') {
            return n.parse().map(Token::Ending).map_err(|_| bad());
        }
        if let Some(t) = s.strip_prefix('(') {
            let v: Vec<u8> = t.split(':').filter_map(|x| x.parse().ok()).collect();
            return match v[..] {
                [p, q, r] => Ok(Token::Tuplet { p, q, r }),
                _ => Err(bad()),
            };
        }
        if s.starts_with(|c: char| c.is_ascii_digit() || c == '/') {
            let (n, d) = match s.split_once('/') {
                Some((n, d)) => (if n.is_empty() { "1" } else { n }, d),
                None => (s, "1"),
            };
            let (n, d): (i64, i64) = (n.parse().map_err(|_| bad())?, d.parse().map_err(|_| bad())?);
            if d == 0 {
                return Err(bad());
            }
            return Ok(Token::Dur(Dur::new(n, d)));
        }
        super::music::parse_pitch(s.as_bytes())
            .filter(|(_, used)| *used == s.len())
            .map(|(p, _)| Token::Note(p))
            .ok_or_else(bad)
    }
}

/// A note or rest with its length, as the bar accounting and MIDI export need it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A note (`Some`) or rest (`None`); `dur` is the written length, `sounding` the
    /// length after tuplet scaling; `tie` joins it to the next note.
    Note {
        pitch: Option<Pitch>,
        dur: Dur,
        sounding: Dur,
        tie: bool,
    },
    Bar(Bar),
    Ending(u8),
    Meter(Meter),
    Key(Key),
}

/// Groups tokens into events, applying tuplets. Tokens that cannot stand where they are
/// (a duration with no note before it, a tie after a bar) are reported as an error, so
/// that malformed generated sequences are detected rather than silently repaired.
pub fn events(tokens: &[Token]) -> Result<Vec<Event>, String> {
    let mut out: Vec<Event> = Vec::with_capacity(tokens.len());
    let mut tuplet: Option<(Dur, u8)> = None; // (scale, notes left)
    for (i, t) in tokens.iter().enumerate() {
        match *t {
            Token::Meter(m) => out.push(Event::Meter(m)),
            Token::Key(k) => out.push(Event::Key(k)),
            Token::Note(_) | Token::Rest => {
                let pitch = match t {
                    Token::Note(p) => Some(*p),
                    _ => None,
                };
                let mut scale = Dur::from_integer(1);
                if let Some((s, left)) = tuplet.as_mut() {
                    scale = *s;
                    *left -= 1;
                    if *left == 0 {
                        tuplet = None;
                    }
                }
                let one = Dur::from_integer(1);
                out.push(Event::Note {
                    pitch,
                    dur: one,
                    sounding: scale,
                    tie: false,
                });
            }
            Token::Dur(d) => match out.last_mut() {
                Some(Event::Note {
                    dur,
                    sounding,
                    tie: false,
                    ..
                }) if *dur == Dur::from_integer(1) => {
                    *sounding *= d;
                    *dur = d;
                }
                _ => return Err(format!("duration {t} at {i} does not follow a note")),
            },
            Token::Tie => match out.last_mut() {
                Some(Event::Note {
                    pitch: Some(_),
                    tie,
                    ..
                }) if !*tie => *tie = true,
                _ => return Err(format!("tie at {i} does not follow a note")),
            },
            Token::Tuplet { p, q, r } => {
                if p == 0 || q == 0 || r == 0 {
                    return Err(format!("empty tuplet at {i}"));
                }
                tuplet = Some((Dur::new(i64::from(q), i64::from(p)), r));
            }
            Token::Bar(b) => out.push(Event::Bar(b)),
            Token::Ending(n) => out.push(Event::Ending(n)),
        }
    }
    Ok(out)
}

/// The canonical text of a token sequence, space separated (for logs and tests).
pub fn tokens_text(tokens: &[Token]) -> String {
    tokens
        .iter()
        .map(Token::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}
