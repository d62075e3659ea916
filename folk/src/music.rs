//! Musical value types shared by the parser, the tokenizer, the renderer and the MIDI
//! export: exact durations, meters, keys and pitches, each with its canonical ABC text.

use std::fmt;

/// An exact duration in eighth notes (the unit every tune is normalised to, `L:1/8`).
pub type Dur = num_rational::Ratio<i64>;

/// The unit all durations are expressed in, as a fraction of a whole note.
pub const UNIT: (i64, i64) = (1, 8);

/// Formats a duration as an ABC length suffix relative to `L:1/8` (`""` for one unit).
pub fn dur_suffix(d: Dur) -> String {
    match (*d.numer(), *d.denom()) {
        (1, 1) => String::new(),
        (n, 1) => n.to_string(),
        (1, q) => format!("/{q}"),
        (n, q) => format!("{n}/{q}"),
    }
}

// === Meter ===

/// The time signature. `C` and `C|` are kept as written so that rendering is faithful.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Meter {
    /// `n/d`.
    Frac(u8, u8),
    /// `C`, common time (4/4).
    Common,
    /// `C|`, cut time (2/2).
    Cut,
}

impl Meter {
    /// Parses the value of an `M:` field; `None` for free meter or anything unsupported.
    pub fn parse(s: &str) -> Option<Meter> {
        let s = s.trim();
        match s {
            "C" => return Some(Meter::Common),
            "C|" => return Some(Meter::Cut),
            _ => {}
        }
        let (n, d) = s.split_once('/')?;
        let n: u8 = n.trim().parse().ok()?;
        let d: u8 = d.trim().parse().ok()?;
        (1..=32).contains(&n).then_some(())?;
        matches!(d, 1 | 2 | 4 | 8 | 16 | 32).then_some(Meter::Frac(n, d))
    }

    /// (numerator, denominator) of the time signature.
    pub fn ratio(self) -> (u8, u8) {
        match self {
            Meter::Frac(n, d) => (n, d),
            Meter::Common => (4, 4),
            Meter::Cut => (2, 2),
        }
    }

    /// The length of one full bar in eighth notes.
    pub fn bar_len(self) -> Dur {
        let (n, d) = self.ratio();
        Dur::new(i64::from(n) * UNIT.1, i64::from(d))
    }

    /// Compound meters (6/8, 9/8, 12/8, …) change the default tuplet ratio.
    pub fn is_compound(self) -> bool {
        let (n, _) = self.ratio();
        n % 3 == 0 && n > 3
    }

    /// The header token, e.g. `M:6/8`.
    pub fn token(self) -> String {
        format!("M:{self}")
    }
}

impl fmt::Display for Meter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Meter::Frac(n, d) => write!(f, "{n}/{d}"),
            Meter::Common => f.write_str("C"),
            Meter::Cut => f.write_str("C|"),
        }
    }
}

// === Key ===

/// The church modes ABC can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    Major,
    Minor,
    Dorian,
    Phrygian,
    Lydian,
    Mixolydian,
    Locrian,
}

impl Mode {
    /// Parses a mode word by its first three letters, as ABC does (`m` alone is minor).
    fn parse(word: &str) -> Option<Mode> {
        let w = word.to_ascii_lowercase();
        if w.is_empty() || w == "maj" || w == "major" || w.starts_with("ion") {
            return Some(Mode::Major);
        }
        if w == "m" || w.starts_with("min") || w.starts_with("aeo") {
            return Some(Mode::Minor);
        }
        let prefix = w.get(..3)?;
        match prefix {
            "dor" => Some(Mode::Dorian),
            "phr" => Some(Mode::Phrygian),
            "lyd" => Some(Mode::Lydian),
            "mix" => Some(Mode::Mixolydian),
            "loc" => Some(Mode::Locrian),
            _ => None,
        }
    }

    /// The suffix used in canonical key tokens (`""`, `m`, `dor`, …).
    fn suffix(self) -> &'static str {
        match self {
            Mode::Major => "",
            Mode::Minor => "m",
            Mode::Dorian => "dor",
            Mode::Phrygian => "phr",
            Mode::Lydian => "lyd",
            Mode::Mixolydian => "mix",
            Mode::Locrian => "loc",
        }
    }

    /// The English name used in captions.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Major => "major",
            Mode::Minor => "minor",
            Mode::Dorian => "dorian",
            Mode::Phrygian => "phrygian",
            Mode::Lydian => "lydian",
            Mode::Mixolydian => "mixolydian",
            Mode::Locrian => "locrian",
        }
    }

    /// Fifths to add to the major key of the same tonic.
    fn fifths_offset(self) -> i32 {
        match self {
            Mode::Lydian => 1,
            Mode::Major => 0,
            Mode::Mixolydian => -1,
            Mode::Dorian => -2,
            Mode::Minor => -3,
            Mode::Phrygian => -4,
            Mode::Locrian => -5,
        }
    }
}

/// A key signature: tonic letter, tonic accidental (-1, 0, +1) and mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub tonic: u8,
    pub accidental: i8,
    pub mode: Mode,
}

impl Key {
    /// Parses the value of a `K:` field (`G`, `Gm`, `E Minor`, `Ador`, `F#mix`, `Bb`).
    /// Explicit accidentals, clefs and highland-pipe keys are not supported.
    pub fn parse(s: &str) -> Option<Key> {
        let s = s.trim();
        let mut chars = s.chars();
        let tonic = chars.next()?.to_ascii_uppercase();
        if !('A'..='G').contains(&tonic) {
            return None;
        }
        let rest = chars.as_str();
        let (accidental, rest) = match rest.chars().next() {
            Some('#') => (1, &rest[1..]),
            Some('b') => (-1, &rest[1..]),
            _ => (0, rest),
        };
        let mut words = rest.split_whitespace();
        let mode = Mode::parse(words.next().unwrap_or(""))?;
        if words.next().is_some() {
            return None;
        }
        Some(Key {
            tonic: tonic as u8,
            accidental,
            mode,
        })
    }

    /// Sharps (positive) or flats (negative) in the signature.
    pub fn fifths(self) -> i32 {
        let base = match self.tonic {
            b'C' => 0,
            b'G' => 1,
            b'D' => 2,
            b'A' => 3,
            b'E' => 4,
            b'B' => 5,
            _ => -1, // F
        };
        base + 7 * i32::from(self.accidental) + self.mode.fifths_offset()
    }

    /// The accidental (-1, 0, +1, possibly ±2 for theoretical keys) the signature gives
    /// to a natural letter `A`–`G`.
    pub fn signature_accidental(self, letter: u8) -> i32 {
        const SHARPS: &[u8] = b"FCGDAEB";
        let f = self.fifths();
        let idx = SHARPS
            .iter()
            .position(|&c| c == letter.to_ascii_uppercase());
        let Some(i) = idx else { return 0 };
        let i = i as i32;
        if f >= 0 {
            (f - i + 6).div_euclid(7)
        } else {
            -((-f - (6 - i) + 6).div_euclid(7))
        }
    }

    /// The English name used in captions, e.g. `d major`, `b flat minor`.
    pub fn name(self) -> String {
        let acc = match self.accidental {
            1 => " sharp",
            -1 => " flat",
            _ => "",
        };
        format!(
            "{}{acc} {}",
            (self.tonic as char).to_ascii_lowercase(),
            self.mode.name()
        )
    }

    /// The header token, e.g. `K:Dmix`.
    pub fn token(self) -> String {
        format!("K:{self}")
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let acc = match self.accidental {
            1 => "#",
            -1 => "b",
            _ => "",
        };
        write!(f, "{}{acc}{}", self.tonic as char, self.mode.suffix())
    }
}

// === Pitch ===

/// A written pitch: explicit accidental (`None` when none is written; `Some(0)` is a
/// natural sign), letter `A`–`G` and octave (0 for `C`–`B`, 1 for `c`–`b`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pitch {
    pub accidental: Option<i8>,
    pub letter: u8,
    pub octave: i8,
}

impl Pitch {
    /// The lowest and highest octaves accepted (C,,, to b'''), beyond any instrument.
    pub const OCTAVES: std::ops::RangeInclusive<i8> = -3..=4;

    /// Semitone of the natural letter within its octave.
    fn letter_semitone(letter: u8) -> i32 {
        match letter {
            b'C' => 0,
            b'D' => 2,
            b'E' => 4,
            b'F' => 5,
            b'G' => 7,
            b'A' => 9,
            _ => 11, // B
        }
    }

    /// MIDI key number given the accidental in force (explicit, carried in the bar, or
    /// from the key signature). Middle C (`C`) is 60.
    pub fn midi_key(self, accidental: i32) -> i32 {
        60 + 12 * i32::from(self.octave) + Self::letter_semitone(self.letter) + accidental
    }
}

impl fmt::Display for Pitch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let acc = match self.accidental {
            None => "",
            Some(2) => "^^",
            Some(1) => "^",
            Some(0) => "=",
            Some(-1) => "_",
            Some(_) => "__",
        };
        f.write_str(acc)?;
        if self.octave <= 0 {
            write!(f, "{}", self.letter as char)?;
            for _ in 0..-self.octave {
                f.write_str(",")?;
            }
        } else {
            write!(f, "{}", self.letter.to_ascii_lowercase() as char)?;
            for _ in 1..self.octave {
                f.write_str("'")?;
            }
        }
        Ok(())
    }
}

/// Parses an accidental, letter and octave marks at the start of `b`; returns the pitch
/// and the bytes used. `None` if `b` does not start with a note.
pub fn parse_pitch(b: &[u8]) -> Option<(Pitch, usize)> {
    let (accidental, mut i) = match b {
        [b'^', b'^', ..] => (Some(2), 2),
        [b'_', b'_', ..] => (Some(-2), 2),
        [b'^', ..] => (Some(1), 1),
        [b'_', ..] => (Some(-1), 1),
        [b'=', ..] => (Some(0), 1),
        _ => (None, 0),
    };
    let c = *b.get(i)?;
    let mut octave: i32 = match c {
        b'A'..=b'G' => 0,
        b'a'..=b'g' => 1,
        _ => return None,
    };
    i += 1;
    while let Some(&m) = b.get(i) {
        match m {
            b'\'' => octave += 1,
            b',' => octave -= 1,
            _ => break,
        }
        i += 1;
        if octave.abs() > 8 {
            return None;
        }
    }
    let octave = i8::try_from(octave)
        .ok()
        .filter(|o| Pitch::OCTAVES.contains(o))?;
    Some((
        Pitch {
            accidental,
            letter: c.to_ascii_uppercase(),
            octave,
        },
        i,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_signatures() {
        let k = |s| Key::parse(s).unwrap();
        assert_eq!(k("G").fifths(), 1);
        assert_eq!(k("Em").fifths(), 1);
        assert_eq!(k("E Minor").fifths(), 1);
        assert_eq!(k("Ador").fifths(), 1);
        assert_eq!(k("Edor").fifths(), 2);
        assert_eq!(k("Dmix").fifths(), 1);
        assert_eq!(k("Bb").fifths(), -2);
        assert_eq!(k("F#m").fifths(), 3);
        assert_eq!(k("D").signature_accidental(b'F'), 1);
        assert_eq!(k("D").signature_accidental(b'C'), 1);
        assert_eq!(k("D").signature_accidental(b'G'), 0);
        assert_eq!(k("Bb").signature_accidental(b'B'), -1);
        assert_eq!(k("Bb").signature_accidental(b'E'), -1);
        assert_eq!(k("Bb").signature_accidental(b'A'), 0);
        assert_eq!(k("Gm").to_string(), "Gm");
        assert_eq!(k("E Minor").name(), "e minor");
        assert!(Key::parse("HP").is_none());
        assert!(Key::parse("D exp ^f").is_none());
    }

    #[test]
    fn meters() {
        assert_eq!(Meter::parse("6/8").unwrap().bar_len(), Dur::from_integer(6));
        assert_eq!(Meter::parse("C").unwrap().bar_len(), Dur::from_integer(8));
        assert_eq!(Meter::parse("C|").unwrap().bar_len(), Dur::from_integer(8));
        assert_eq!(Meter::parse("2/4").unwrap().bar_len(), Dur::from_integer(4));
        assert!(Meter::parse("none").is_none());
        assert!(Meter::parse("3/7").is_none());
        assert!(Meter::parse("6/8").unwrap().is_compound());
        assert!(!Meter::parse("3/4").unwrap().is_compound());
    }

    #[test]
    fn pitch_text_is_canonical() {
        let p = |acc, letter, octave| Pitch {
            accidental: acc,
            letter,
            octave,
        };
        assert_eq!(p(None, b'C', 0).to_string(), "C");
        assert_eq!(p(Some(1), b'F', 1).to_string(), "^f");
        assert_eq!(p(Some(-1), b'B', -1).to_string(), "_B,");
        assert_eq!(p(Some(0), b'E', 2).to_string(), "=e'");
        assert_eq!(p(None, b'A', 0).midi_key(0), 69);
    }
}
