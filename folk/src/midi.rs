//! Tokens to a Standard MIDI File: one track, a tempo, the meter and key signatures,
//! accidentals carried through the bar, ties joined into one note, tuplets scaled.

use midly::num::{u15, u24, u28, u4, u7};
use midly::{Format, Header, MetaMessage, MidiMessage, Smf, Timing, TrackEvent, TrackEventKind};

use super::music::{Dur, Key, Meter};
use super::tune::{events, Event, Token};

/// MIDI ticks per quarter note.
const TICKS_PER_QUARTER: i64 = 480;
/// MIDI ticks per eighth note, the unit of token durations.
const TICKS_PER_UNIT: i64 = TICKS_PER_QUARTER / 2;

/// A sounding note in ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MidiNote {
    pub start: i64,
    pub len: i64,
    pub key: u8,
}

/// The notes a tune sounds, in order, with accidentals resolved and ties joined.
pub fn notes(tokens: &[Token]) -> Result<Vec<MidiNote>, String> {
    let mut key = Key {
        tonic: b'C',
        accidental: 0,
        mode: super::music::Mode::Major,
    };
    let mut carried: Vec<((u8, i8), i32)> = Vec::new(); // (letter, octave) -> accidental
    let mut time = Dur::from_integer(0);
    let mut out: Vec<MidiNote> = Vec::new();
    let mut tie_open = false;
    let ticks = |d: Dur| (d * TICKS_PER_UNIT).round().to_integer();
    for e in events(tokens)? {
        match e {
            Event::Key(k) => key = k,
            Event::Bar(_) => carried.clear(),
            Event::Note {
                pitch,
                sounding,
                tie,
                ..
            } => {
                if let Some(p) = pitch {
                    let slot = (p.letter, p.octave);
                    let acc = match p.accidental {
                        Some(a) => {
                            carried.retain(|(s, _)| *s != slot);
                            carried.push((slot, i32::from(a)));
                            i32::from(a)
                        }
                        None => carried
                            .iter()
                            .find(|(s, _)| *s == slot)
                            .map_or_else(|| key.signature_accidental(p.letter), |(_, a)| *a),
                    };
                    let midi = p.midi_key(acc).clamp(0, 127) as u8;
                    let end = ticks(time + sounding);
                    match out.last_mut() {
                        Some(last) if tie_open && last.key == midi => last.len = end - last.start,
                        _ => out.push(MidiNote {
                            start: ticks(time),
                            len: end - ticks(time),
                            key: midi,
                        }),
                    }
                }
                tie_open = tie && pitch.is_some();
                time += sounding;
            }
            Event::Meter(_) | Event::Ending(_) => {}
        }
    }
    Ok(out)
}

/// Writes the tune as a Standard MIDI File at `qpm` quarter notes per minute.
pub fn to_midi(tokens: &[Token], qpm: u32) -> Result<Vec<u8>, String> {
    let notes = notes(tokens)?;
    let mut track: Vec<TrackEvent<'static>> = Vec::new();
    let meta = |kind| TrackEvent {
        delta: u28::new(0),
        kind: TrackEventKind::Meta(kind),
    };
    let us_per_quarter = 60_000_000 / qpm.clamp(20, 400);
    track.push(meta(MetaMessage::Tempo(u24::new(us_per_quarter))));
    for t in tokens.iter().take(2) {
        match t {
            Token::Meter(m) => {
                let (n, d): (u8, u8) = Meter::ratio(*m);
                track.push(meta(MetaMessage::TimeSignature(
                    n,
                    d.trailing_zeros() as u8,
                    24,
                    8,
                )));
            }
            Token::Key(k) => {
                let minor = matches!(k.mode, super::music::Mode::Minor);
                let sf = k.fifths().clamp(-7, 7) as i8;
                track.push(meta(MetaMessage::KeySignature(sf, minor)));
            }
            _ => {}
        }
    }
    let channel = u4::new(0);
    let mut msgs: Vec<(i64, bool, u8)> = Vec::with_capacity(notes.len() * 2);
    for n in &notes {
        msgs.push((n.start, true, n.key));
        msgs.push((n.start + n.len.max(1), false, n.key));
    }
    // Note-offs before note-ons at the same tick, so repeated pitches re-strike.
    msgs.sort_by_key(|&(t, on, _)| (t, on));
    let mut now = 0;
    for (t, on, key) in msgs {
        let delta = u28::new(u32::try_from(t - now).unwrap_or(0));
        now = t;
        let message = if on {
            MidiMessage::NoteOn {
                key: u7::new(key),
                vel: u7::new(80),
            }
        } else {
            MidiMessage::NoteOff {
                key: u7::new(key),
                vel: u7::new(0),
            }
        };
        track.push(TrackEvent {
            delta,
            kind: TrackEventKind::Midi { channel, message },
        });
    }
    track.push(meta(MetaMessage::EndOfTrack));
    let mut smf = Smf::new(Header::new(
        Format::SingleTrack,
        Timing::Metrical(u15::new(480)),
    ));
    smf.tracks.push(track);
    let mut bytes = Vec::new();
    smf.write_std(&mut bytes).map_err(|e| e.to_string())?;
    Ok(bytes)
}
