//! A parser for the ABC subset of the folk corpus: headers `X T M L K R O N` (others are
//! read past), and bodies with notes, accidentals, octaves, lengths, broken rhythm,
//! rests, ties, tuplets, bar lines, repeats and endings. Decorations, chord symbols,
//! annotations, grace notes and slurs are dropped. Anything else (inline field changes,
//! voices, chords, …) rejects the tune with a [`Skip`] reason; nothing here panics on
//! any input.

use super::music::{parse_pitch, Dur, Key, Meter};
use super::tune::{default_tuplet_q, Bar, Token};

/// Why a tune was not parsed. The reasons are counted in `qd data prepare`'s summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, thiserror::Error)]
pub enum Skip {
    #[error("no K: field")]
    NoKey,
    #[error("no M: field")]
    NoMeter,
    #[error("unsupported meter")]
    BadMeter,
    #[error("unsupported unit length")]
    BadUnit,
    #[error("unsupported key")]
    BadKey,
    #[error("unknown field")]
    UnknownField,
    #[error("inline field change")]
    InlineField,
    #[error("multiple voices")]
    Voices,
    #[error("chord")]
    Chord,
    #[error("bad note length")]
    BadLength,
    #[error("pitch out of range")]
    BadPitch,
    #[error("bad tuplet")]
    BadTuplet,
    #[error("misplaced broken rhythm")]
    BadBroken,
    #[error("multi-measure rest")]
    MultiRest,
    #[error("unsupported ending")]
    BadEnding,
    #[error("unterminated decoration, grace or annotation")]
    Unterminated,
    #[error("unexpected character")]
    UnexpectedChar,
    #[error("no notes")]
    Empty,
}

/// The metadata of a tune that captions are built from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    pub number: Option<u32>,
    pub titles: Vec<String>,
    pub rhythm: Vec<String>,
    pub origin: Vec<String>,
    pub notes: Vec<String>,
    pub tempo: Option<String>,
}

/// A parsed tune: its metadata and its tokens (`M:`, `K:`, then the body).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub meta: Meta,
    pub meter: Meter,
    pub key: Key,
    pub tokens: Vec<Token>,
}

/// Splits a file into tunes: each starts at an `X:` line and ends at a blank line or at
/// the next `X:`. Text outside tunes (file headers, free text) is ignored.
pub fn split_tunes(text: &str) -> Vec<&str> {
    let mut tunes = Vec::new();
    let mut start: Option<usize> = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        if line.starts_with("X:") {
            if let Some(s) = start {
                tunes.push(&text[s..offset]);
            }
            start = Some(offset);
        } else if trimmed.is_empty() {
            if let Some(s) = start.take() {
                tunes.push(&text[s..offset]);
            }
        }
        offset += line.len();
    }
    if let Some(s) = start {
        tunes.push(&text[s..]);
    }
    tunes
}

/// Splits `F:value` into the field letter and its value.
fn field(line: &str) -> Option<(u8, &str)> {
    let b = line.as_bytes();
    (b.len() >= 2 && b[1] == b':' && (b[0].is_ascii_alphabetic() || b[0] == b'+'))
        .then(|| (b[0], &line[2..]))
}

/// A field's value without a trailing `% comment`.
fn strip_comment(value: &str) -> &str {
    value.split('%').next().unwrap_or("").trim()
}

/// Fields that carry nothing qd uses and are read past wherever they stand.
const IGNORED_FIELDS: &[u8] = b"ABCDFGHINOPQRSTWZImrsUw+";

/// How a collection writes its tunes, where it departs from ABC 2.1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dialect {
    /// A line of music ends a bar even without a bar line (the Essen collection writes
    /// one phrase per line and leaves the bar line at its end implicit).
    pub line_ends_bar: bool,
}

/// Parses one tune (as split by [`split_tunes`]) in standard ABC.
pub fn parse_tune(text: &str) -> Result<Parsed, Skip> {
    parse_tune_in(text, Dialect::default())
}

/// Parses one tune written in a collection's dialect.
pub fn parse_tune_in(text: &str, dialect: Dialect) -> Result<Parsed, Skip> {
    let mut meta = Meta::default();
    let mut meter = None;
    let mut unit = None;
    let mut key = None;
    let mut lines = text.lines();
    for line in lines.by_ref() {
        let line = line.trim_end();
        if line.starts_with('%') || line.is_empty() {
            continue;
        }
        let Some((f, value)) = field(line) else {
            return Err(Skip::NoKey);
        };
        let value = strip_comment(value);
        match f {
            b'X' => meta.number = value.parse().ok(),
            b'T' => meta.titles.push(value.to_string()),
            b'R' => meta.rhythm.push(value.to_string()),
            b'O' => meta.origin.push(value.to_string()),
            b'N' => meta.notes.push(value.to_string()),
            b'Q' => meta.tempo = Some(value.to_string()),
            b'M' => meter = Some(Meter::parse(value).ok_or(Skip::BadMeter)?),
            b'L' => unit = Some(parse_unit(value).ok_or(Skip::BadUnit)?),
            b'K' => {
                key = Some(Key::parse(value).ok_or(Skip::BadKey)?);
                break;
            }
            b'V' => return Err(Skip::Voices),
            f if IGNORED_FIELDS.contains(&f) => {}
            _ => return Err(Skip::UnknownField),
        }
    }
    let key = key.ok_or(Skip::NoKey)?;
    let meter = meter.ok_or(Skip::NoMeter)?;
    // ABC's default unit: 1/16 below 3/4, else 1/8.
    let unit = unit.unwrap_or_else(|| {
        let (n, d) = meter.ratio();
        if f64::from(n) / f64::from(d) < 0.75 {
            Dur::new(1, 2)
        } else {
            Dur::from_integer(1)
        }
    });
    let mut body = Body::new(meter, unit);
    body.out.push(Token::Meter(meter));
    body.out.push(Token::Key(key));
    for line in lines {
        if line.starts_with('%') {
            continue;
        }
        if let Some((f, value)) = field(line) {
            let value = strip_comment(value);
            match f {
                b'M' if Meter::parse(value) == Some(meter) => {}
                b'K' if Key::parse(value) == Some(key) => {}
                b'M' | b'K' => return Err(Skip::InlineField),
                b'L' => body.unit = parse_unit(value).ok_or(Skip::BadUnit)?,
                b'V' => return Err(Skip::Voices),
                f if IGNORED_FIELDS.contains(&f) => {}
                _ => return Err(Skip::UnknownField),
            }
            continue;
        }
        body.line(line.as_bytes())?;
        if dialect.line_ends_bar
            && matches!(
                body.out.last(),
                Some(Token::Note(_) | Token::Rest | Token::Dur(_))
            )
        {
            body.push(Token::Bar(Bar::Single));
        }
    }
    if !body.out.iter().any(|t| matches!(t, Token::Note(_))) {
        return Err(Skip::Empty);
    }
    Ok(Parsed {
        meta,
        meter,
        key,
        tokens: body.out,
    })
}

/// Parses an `L:` value into eighth notes.
fn parse_unit(s: &str) -> Option<Dur> {
    let (n, d) = s.trim().split_once('/')?;
    let (n, d): (i64, i64) = (n.trim().parse().ok()?, d.trim().parse().ok()?);
    ((1..=4).contains(&n) && matches!(d, 1 | 2 | 4 | 8 | 16 | 32 | 64)).then(|| Dur::new(n * 8, d))
}

/// Parses a note length suffix (`2`, `/`, `//`, `3/2`, `/4`); returns the multiple of
/// the unit and the bytes used. Absurd lengths are `None`.
fn parse_length(b: &[u8]) -> Option<(Dur, usize)> {
    let mut i = 0;
    let digits = |i: &mut usize| -> Option<Option<i64>> {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
            if *i - start > 4 {
                return None;
            }
        }
        Some(if *i > start {
            std::str::from_utf8(&b[start..*i]).ok()?.parse().ok()
        } else {
            None
        })
    };
    let num = digits(&mut i)?.unwrap_or(1);
    let mut den: i64 = 1;
    while b.get(i) == Some(&b'/') {
        i += 1;
        den *= digits(&mut i)?.unwrap_or(2);
        if den > 64 {
            return None;
        }
    }
    ((1..=4096).contains(&num) && den >= 1).then(|| (Dur::new(num, den), i))
}

/// Whether a length in eighths is one qd keeps: at most 8 whole notes, in at most
/// 1/64ths of an eighth (so every kept length renders to a suffix that parses again).
fn length_ok(d: Dur) -> bool {
    d <= Dur::from_integer(64) && *d.denom() <= 64
}

/// The body scanner's state.
struct Body {
    meter: Meter,
    /// The current `L:` in eighth notes.
    unit: Dur,
    out: Vec<Token>,
    /// Index in `out` of the last note or rest, while nothing but its length or a tie
    /// follows it (the left side of a broken rhythm).
    last_note: Option<usize>,
    /// The factor a pending broken rhythm gives the next note.
    broken: Option<Dur>,
}

impl Body {
    fn new(meter: Meter, unit: Dur) -> Body {
        Body {
            meter,
            unit,
            out: Vec::new(),
            last_note: None,
            broken: None,
        }
    }

    fn push(&mut self, t: Token) {
        self.out.push(t);
        self.last_note = None;
    }

    fn push_note(&mut self, t: Token, len: Dur) -> Result<(), Skip> {
        let mut dur = len * self.unit;
        if let Some(f) = self.broken.take() {
            dur *= f;
        }
        if !length_ok(dur) {
            return Err(Skip::BadLength);
        }
        self.out.push(t);
        let idx = self.out.len() - 1;
        if dur != Dur::from_integer(1) {
            self.out.push(Token::Dur(dur));
        }
        self.last_note = Some(idx);
        Ok(())
    }

    /// Applies a broken rhythm's left factor to the last note.
    fn stretch_last(&mut self, f: Dur) -> Result<(), Skip> {
        let idx = self.last_note.ok_or(Skip::BadBroken)?;
        if self.out.get(idx + 2) == Some(&Token::Tie) || self.out.last() == Some(&Token::Tie) {
            return Err(Skip::BadBroken);
        }
        match self.out.get_mut(idx + 1) {
            Some(Token::Dur(d)) => {
                *d *= f;
                if !length_ok(*d) {
                    return Err(Skip::BadLength);
                }
                if *d == Dur::from_integer(1) {
                    self.out.remove(idx + 1);
                }
            }
            _ => self.out.push(Token::Dur(f)),
        }
        Ok(())
    }

    fn line(&mut self, b: &[u8]) -> Result<(), Skip> {
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            match c {
                b'%' => break,
                b' ' | b'\t' | b'\r' | b'`' | b'y' | b'\\' | b'.' | b'~' | b'H' | b'L' | b'M'
                | b'O' | b'P' | b'S' | b'T' | b'u' | b'v' | b')' => i += 1,
                b'"' | b'!' | b'+' | b'{' => {
                    let close = if c == b'{' { b'}' } else { c };
                    let end = b[i + 1..]
                        .iter()
                        .position(|&x| x == close)
                        .ok_or(Skip::Unterminated)?;
                    i += end + 2;
                }
                b'(' => {
                    if b.get(i + 1).is_some_and(u8::is_ascii_digit) {
                        i += 1 + self.tuplet(&b[i + 1..])?;
                    } else {
                        i += 1; // a slur
                    }
                }
                b'-' => {
                    let after_note = self
                        .last_note
                        .is_some_and(|j| matches!(self.out[j], Token::Note(_)));
                    if after_note && self.out.last() != Some(&Token::Tie) {
                        self.out.push(Token::Tie);
                    }
                    i += 1;
                }
                b'>' | b'<' => {
                    let n = b[i..].iter().take_while(|&&x| x == c).count();
                    if n > 3 {
                        return Err(Skip::BadBroken);
                    }
                    let short = Dur::new(1, 1 << n);
                    let long = Dur::from_integer(2) - short;
                    let (left, right) = if c == b'>' {
                        (long, short)
                    } else {
                        (short, long)
                    };
                    self.stretch_last(left)?;
                    self.broken = Some(right);
                    i += n;
                }
                b'|' | b':' => i += self.bar(&b[i..])?,
                b'[' => match b.get(i + 1) {
                    Some(b'|') => i += self.bar(&b[i..])?,
                    Some(d) if d.is_ascii_digit() => i += 1 + self.ending(&b[i + 1..])?,
                    Some(f) if f.is_ascii_alphabetic() && b.get(i + 2) == Some(&b':') => {
                        return Err(Skip::InlineField)
                    }
                    _ => return Err(Skip::Chord),
                },
                b'z' | b'x' => {
                    let (len, used) = parse_length(&b[i + 1..]).ok_or(Skip::BadLength)?;
                    self.push_note(Token::Rest, len)?;
                    i += 1 + used;
                }
                b'Z' => return Err(Skip::MultiRest),
                b'^' | b'_' | b'=' | b'A'..=b'G' | b'a'..=b'g' => {
                    let (pitch, used) = parse_pitch(&b[i..]).ok_or(Skip::BadPitch)?;
                    i += used;
                    let (len, used) = parse_length(&b[i..]).ok_or(Skip::BadLength)?;
                    i += used;
                    self.push_note(Token::Note(pitch), len)?;
                }
                _ => return Err(Skip::UnexpectedChar),
            }
        }
        Ok(())
    }

    /// `(p`, `(p:q`, `(p:q:r`, `(p::r`; `b` starts after the parenthesis.
    fn tuplet(&mut self, b: &[u8]) -> Result<usize, Skip> {
        let mut nums = [0u8; 3];
        let mut i = 0;
        for (k, n) in nums.iter_mut().enumerate() {
            if k > 0 {
                if b.get(i) != Some(&b':') {
                    break;
                }
                i += 1;
            }
            let start = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            if i > start {
                *n = std::str::from_utf8(&b[start..i])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or(Skip::BadTuplet)?;
            }
        }
        let p = nums[0];
        if !(2..=9).contains(&p) || nums[1] > 9 || nums[2] > 9 {
            return Err(Skip::BadTuplet);
        }
        let q = if nums[1] == 0 {
            default_tuplet_q(p, self.meter)
        } else {
            nums[1]
        };
        let r = if nums[2] == 0 { p } else { nums[2] };
        self.push(Token::Tuplet { p, q, r });
        Ok(i)
    }

    /// A bar line made of `|`, `:`, `]` and a leading `[`, optionally followed by an
    /// ending number (`|1`, `:|2`).
    fn bar(&mut self, b: &[u8]) -> Result<usize, Skip> {
        let mut i = usize::from(b[0] == b'[');
        while i < b.len() && matches!(b[i], b'|' | b':' | b']') {
            i += 1;
        }
        let run = &b[..i];
        let pipes = run.iter().filter(|&&c| c == b'|').count();
        let first_pipe = run.iter().position(|&c| c == b'|');
        let last_pipe = run.iter().rposition(|&c| c == b'|');
        let left = first_pipe.is_some_and(|p| run[..p].contains(&b':'));
        let right = last_pipe.is_some_and(|p| run[p..].contains(&b':'));
        let bar = match (left, right) {
            _ if pipes == 0 && run.iter().filter(|&&c| c == b':').count() >= 2 => Bar::RepeatBoth,
            _ if pipes == 0 => return Err(Skip::UnexpectedChar),
            (true, true) => Bar::RepeatBoth,
            (true, false) => Bar::RepeatEnd,
            (false, true) => Bar::RepeatStart,
            _ if run.contains(&b']') => Bar::Final,
            _ if run[0] == b'[' => Bar::ThickThin,
            _ if pipes >= 2 => Bar::Double,
            _ => Bar::Single,
        };
        self.push(Token::Bar(bar));
        if b.get(i).is_some_and(u8::is_ascii_digit) {
            i += self.ending(&b[i..])?;
        }
        Ok(i)
    }

    /// An ending number; `b` starts at the digit.
    fn ending(&mut self, b: &[u8]) -> Result<usize, Skip> {
        let n = b[0] - b'0';
        if n == 0
            || b.get(1)
                .is_some_and(|c| c.is_ascii_digit() || matches!(c, b',' | b'-'))
        {
            return Err(Skip::BadEnding);
        }
        self.push(Token::Ending(n));
        Ok(1)
    }
}
