//! Where each token of a tune falls in its bar: the structure the folk task gives the
//! policy beside each token (`model::structure`), so that closing a bar at the right
//! moment is something the model reads, not arithmetic it must learn over durations.
//!
//! After each token, four feature ids (disjoint ranges of one table; 0 is "none", for the
//! prompt's positions):
//!
//! | feature | what it says |
//! | --- | --- |
//! | position | the onset of the next note within the bar, in quarters of an eighth (0 exact, capped at 16 eighths); a note whose duration token has not come yet is not counted |
//! | remaining | the bar's length (from the meter) minus that position: 0 exactly when the bar is full, an overflow id when past it |
//! | beat | a note is waiting for its duration or not × the position on the downbeat, on a beat (the meter's: a quarter in 4/4, a dotted quarter in 6/8), off the beat on the sixteenth grid, or off the grid (tuplets) |
//! | bar | bars since the last section boundary (`||`, `:|`, `|:`, `::`, `|]`) or the start, capped at 15 |
//!
//! Before the meter is read (the `<sep>` position) every feature holds its "header" id.
//! The cursor reads one id in O(1) (exact rational durations, tuplets as in
//! [`crate::tune::events`]); [`from_scratch`] computes the same features by grouping the
//! whole prefix into events again, which the tests compare it with on every tune.

use std::sync::Arc;

use model::structure::{Cursor, Structure, StructureSpec};

use crate::music::{Dur, Meter};
use crate::tune::{events, Event, Token};
use crate::vocab::Vocab;

/// The name checkpoints carry: a changed function gets a new name.
pub const NAME: &str = "folk-metrical-1";
/// Feature ids per token.
pub const PER_TOKEN: usize = 4;

/// Quarters of an eighth a position or a remainder is counted in, and its cap.
const QUANTUM: i64 = 4;
/// The largest count (16 eighths).
pub const CAP: i64 = 64;
/// The first id of each feature: 0 is "none", then each feature's header id and values.
pub const POSITION: i64 = 1; // header, then 0..=CAP
pub const REMAINING: i64 = POSITION + 2 + CAP; // header, overflow, then 0..=CAP
pub const BEAT: i64 = REMAINING + 3 + CAP; // header, then 2 × 4 classes
pub const BAR: i64 = BEAT + 9; // header, then 0..=15
const MAX_BARS: i64 = 15;
/// How many ids the four features take.
pub const IDS: i64 = BAR + 2 + MAX_BARS;

/// The metrical features of the folk task's tunes.
#[derive(Debug)]
pub struct Metrical {
    /// Each id's tune token (`None` for prompt words and specials).
    tokens: Arc<Vec<Option<Token>>>,
}

impl Metrical {
    pub fn new(vocab: &Vocab) -> Metrical {
        Metrical {
            tokens: Arc::new(vocab.tokens_by_id()),
        }
    }
}

impl Structure for Metrical {
    fn spec(&self) -> StructureSpec {
        StructureSpec {
            name: NAME.into(),
            per_token: PER_TOKEN as i64,
            ids: IDS,
        }
    }

    fn start(&self) -> Box<dyn Cursor> {
        Box::new(MetricalCursor {
            tokens: self.tokens.clone(),
            state: State::default(),
        })
    }
}

/// Where a tune's prefix stands in its bar.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct State {
    meter: Option<Meter>,
    /// Time since the last bar line, the waiting note excluded.
    position: Dur,
    /// The sounding length of a note whose duration token may still come (its tuplet
    /// scale); it counts once anything else follows.
    waiting: Option<Dur>,
    /// The scale of the current tuplet and the notes it still covers.
    tuplet: Option<(Dur, u8)>,
    /// Bars closed since the last section boundary.
    bars: i64,
}

impl State {
    /// Reads one token.
    pub fn read(&mut self, token: Option<Token>) {
        let Some(token) = token else {
            self.commit();
            return;
        };
        match token {
            Token::Note(_) | Token::Rest => {
                self.commit();
                let mut scale = Dur::from_integer(1);
                if let Some((s, left)) = self.tuplet.as_mut() {
                    scale = *s;
                    *left -= 1;
                    if *left == 0 {
                        self.tuplet = None;
                    }
                }
                self.waiting = Some(scale);
            }
            Token::Dur(d) => {
                // A duration after anything but a note is malformed: it sounds nowhere.
                if let Some(scale) = self.waiting.take() {
                    self.position += scale * d;
                }
            }
            Token::Tuplet { p, q, r } => {
                self.commit();
                if p > 0 && q > 0 && r > 0 {
                    self.tuplet = Some((Dur::new(i64::from(q), i64::from(p)), r));
                }
            }
            Token::Bar(b) => {
                self.commit();
                if b.ends_section() {
                    self.bars = 0;
                } else if self.position > Dur::from_integer(0) {
                    self.bars += 1;
                }
                self.position = Dur::from_integer(0);
            }
            Token::Meter(m) => {
                self.commit();
                self.meter = Some(m);
            }
            Token::Key(_) | Token::Tie | Token::Ending(_) => self.commit(),
        }
    }

    /// Where the next note or rest would start: the position with a waiting note counted
    /// at its length so far (what REMI's position tokens name, `crate::remi`).
    pub fn next_onset(&self) -> Dur {
        self.position + self.waiting.unwrap_or(Dur::from_integer(0))
    }

    /// A duration in quarters of an eighth, as the features count it: 0 exactly, else at
    /// least 1, at most the cap.
    pub fn quanta(d: Dur) -> i64 {
        if d == Dur::from_integer(0) {
            0
        } else {
            (d * QUANTUM).floor().to_integer().clamp(1, CAP)
        }
    }

    fn commit(&mut self) {
        if let Some(d) = self.waiting.take() {
            self.position += d;
        }
    }

    /// The four feature ids.
    pub fn features(&self, out: &mut [i64]) {
        let Some(meter) = self.meter else {
            out.copy_from_slice(&[POSITION, REMAINING, BEAT, BAR]);
            return;
        };
        let zero = Dur::from_integer(0);
        let quanta = State::quanta;
        let remaining = meter.bar_len() - self.position;
        let beat_class = if self.position == zero {
            0
        } else if (self.position / beat_len(meter)).is_integer() {
            1
        } else if (self.position * 2).is_integer() {
            2
        } else {
            3
        };
        out[0] = POSITION + 1 + quanta(self.position);
        out[1] = if remaining < zero {
            REMAINING + 1
        } else {
            REMAINING + 2 + quanta(remaining)
        };
        out[2] = BEAT + 1 + beat_class + if self.waiting.is_some() { 4 } else { 0 };
        out[3] = BAR + 1 + self.bars.min(MAX_BARS);
    }
}

/// What the Python port (`scripts/folk_metrical.py`, which `qd export` ships) needs to
/// compute the same features: its module, every id's text and the ids a sample may hold.
/// The PyTorch references of the benchmarks take it in their requests.
pub fn python_port(vocab: &Vocab) -> serde_json::Value {
    let texts: Vec<String> = (0..vocab.len() as u32).map(|id| vocab.text(id)).collect();
    serde_json::json!({
        "module": "folk_metrical",
        "vocab": texts,
        "generatable": crate::task::vocabulary(vocab).allowed,
    })
}

/// The meter's beat in eighths: a dotted quarter in compound meters (6/8, 9/8, 12/8; a
/// dotted half in 6/4), else the denominator's note (a quarter in 4/4 and `C`, a half in
/// 2/2 and `C|`).
pub fn beat_len(meter: Meter) -> Dur {
    let (_, d) = meter.ratio();
    let note = Dur::new(8, i64::from(d));
    if meter.is_compound() {
        note * 3
    } else {
        note
    }
}

struct MetricalCursor {
    tokens: Arc<Vec<Option<Token>>>,
    state: State,
}

impl Cursor for MetricalCursor {
    fn features(&self, out: &mut [i64]) {
        self.state.features(out);
    }

    fn read(&mut self, id: u32) {
        let token = self.tokens.get(id as usize).copied().flatten();
        self.state.read(token);
    }
}

/// The features after the last token of `prefix`, computed from the whole prefix at once:
/// its events (notes with their durations and tuplets applied) summed since the last bar
/// line. The cursor must agree with it on every prefix of every tune (the tests).
pub fn from_scratch(prefix: &[Token]) -> Result<[i64; PER_TOKEN], String> {
    let evs = events(prefix)?;
    // A note whose duration token has not come yet: the last token is the note itself.
    let waiting = matches!(prefix.last(), Some(Token::Note(_) | Token::Rest));
    let mut state = State::default();
    let last_note = evs
        .iter()
        .rposition(|e| matches!(e, Event::Note { .. }))
        .filter(|_| waiting);
    for (i, e) in evs.iter().enumerate() {
        match *e {
            Event::Meter(m) => state.meter = Some(m),
            Event::Note { sounding, .. } if Some(i) == last_note => state.waiting = Some(sounding),
            Event::Note { sounding, .. } => state.position += sounding,
            Event::Bar(b) => {
                if b.ends_section() {
                    state.bars = 0;
                } else if state.position > Dur::from_integer(0) {
                    state.bars += 1;
                }
                state.position = Dur::from_integer(0);
            }
            Event::Ending(_) | Event::Key(_) => {}
        }
    }
    let mut out = [0; PER_TOKEN];
    state.features(&mut out);
    Ok(out)
}
