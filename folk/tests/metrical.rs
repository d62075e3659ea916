//! The metrical position (`folk::metrical`): its values on hand-written tunes, the cursor
//! over ids against the state over tokens, and — when `make setup` has fetched the corpus
//! — the incremental cursor against the from-scratch computation on every prefix of every
//! tune that parses.

#![allow(clippy::unwrap_used)]

use folk::abc::parse_tune;
use folk::bars::check_bars;
use folk::dataset::Dataset;
use folk::metrical::{
    from_scratch, Metrical, State, BAR, BEAT, IDS, PER_TOKEN, POSITION, REMAINING,
};
use folk::tune::{events, Token};
use model::structure::{row_features, Structure};

fn tokens(abc: &str) -> Vec<Token> {
    parse_tune(abc).unwrap().tokens
}

/// The features after each token, read one token at a time.
fn incremental(toks: &[Token]) -> Vec<[i64; PER_TOKEN]> {
    let mut s = State::default();
    toks.iter()
        .map(|&t| {
            s.read(Some(t));
            let mut f = [0; PER_TOKEN];
            s.features(&mut f);
            f
        })
        .collect()
}

/// Features for a position `q` quarters of an eighth into the bar with `rem` quarters left
/// (negative: past the bar), `beat` (0 downbeat, 1 on a beat, 2 off the beat, 3 off the
/// grid), a note waiting for its duration or not, `bars` bars into the section.
fn at(q: i64, rem: i64, beat: i64, waiting: bool, bars: i64) -> [i64; PER_TOKEN] {
    [
        POSITION + 1 + q,
        if rem < 0 {
            REMAINING + 1
        } else {
            REMAINING + 2 + rem
        },
        BEAT + 1 + beat + if waiting { 4 } else { 0 },
        BAR + 1 + bars,
    ]
}

#[test]
fn a_jig_with_a_pickup_a_triplet_and_a_repeat() {
    // 6/8: a bar is 6 eighths (24 quarters of an eighth), the beat a dotted quarter.
    let toks = tokens("X:1\nT:t\nM:6/8\nL:1/8\nK:D\nA|:d2e (3fga B|A6:|\n");
    let expected = [
        at(0, 24, 0, false, 0),  // M:6/8
        at(0, 24, 0, false, 0),  // K:D
        at(0, 24, 0, true, 0),   // A waits for its duration
        at(0, 24, 0, false, 0),  // |: ends a section (the pickup): bars from 0
        at(0, 24, 0, true, 0),   // d
        at(8, 16, 2, false, 0),  // 2: d is a quarter; off the beat
        at(8, 16, 2, true, 0),   // e waits, not counted yet
        at(12, 12, 1, false, 0), // (3: e counted; the second beat
        at(12, 12, 1, true, 0),  // f, a third of a triplet of eighths
        at(14, 9, 3, true, 0),   // g: f took 2/3 of an eighth (11/3 in): off the grid
        at(17, 6, 3, true, 0),   // a: 13/3 eighths in
        at(20, 4, 2, true, 0),   // B: the triplet took two eighths
        at(0, 24, 0, false, 1),  // | : B counted, one bar closed
        at(0, 24, 0, true, 1),   // A
        at(24, 0, 1, false, 1),  // 6: the bar is full, on a beat
        at(0, 24, 0, false, 0),  // :| ends the section
    ];
    assert_eq!(toks.len(), expected.len(), "{toks:?}");
    for (i, (got, want)) in incremental(&toks).iter().zip(&expected).enumerate() {
        assert_eq!(got, want, "after token {i} ({})", toks[i]);
    }
}

#[test]
fn an_overfull_bar_and_the_header() {
    let mut s = State::default();
    let mut f = [0; PER_TOKEN];
    s.features(&mut f);
    assert_eq!(f, [POSITION, REMAINING, BEAT, BAR], "no meter read yet");
    // 2/4: 4 eighths; five eighths overflow.
    for t in tokens("X:1\nT:t\nM:2/4\nL:1/8\nK:C\nCDEF G|\n") {
        s.read(Some(t));
        s.features(&mut f);
        if t == Token::Bar(folk::tune::Bar::Single) {
            assert_eq!(f[3], BAR + 2, "one bar closed");
        }
    }
    let toks = tokens("X:1\nT:t\nM:2/4\nL:1/8\nK:C\nCDEFG\n");
    let last = *incremental(&toks).last().unwrap();
    assert_eq!(
        last[1],
        REMAINING + 2,
        "G waits: four eighths counted, none left"
    );
    s = State::default();
    for t in &toks {
        s.read(Some(*t));
    }
    s.read(None); // anything else commits the waiting note
    s.features(&mut f);
    assert_eq!(f[1], REMAINING + 1, "past the bar: overflow");
    assert!(f.iter().all(|&x| x < IDS));
}

#[test]
fn the_cursor_reads_ids_as_the_state_reads_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let ds = Dataset::load(&testkit::fixture_dataset(dir.path())).unwrap();
    let m = Metrical::new(&ds.vocab);
    assert_eq!(m.spec().per_token, PER_TOKEN as i64);
    for r in &ds.records {
        let prompt = r.prompt.len();
        let ids = row_features(&m, prompt, &r.tune);
        assert!(
            ids[..prompt * PER_TOKEN].iter().all(|&x| x == 0),
            "prompt: none"
        );
        let toks = ds.vocab.decode_tune(&r.tune).unwrap();
        let want: Vec<i64> = incremental(&toks).into_iter().flatten().collect();
        assert_eq!(ids[(prompt + 1) * PER_TOKEN..], want[..], "{}", r.id);
        assert!(ids.iter().all(|&x| (0..IDS).contains(&x)));
    }
}

/// On every tune of the corpus that parses, the cursor's features after every token equal
/// the ones computed from the whole prefix; and before every bar line that closes a bar
/// of exactly the meter's length, nothing of the bar remains. Needs `make setup`.
#[test]
fn incremental_equals_from_scratch_on_the_corpus() {
    let (mut tunes, mut checked, mut full_bars) = (0, 0, 0);
    for (_, f, tokens) in testkit::corpus_tunes() {
        tunes += 1;
        let inc = incremental(&tokens);
        for (i, got) in inc.iter().enumerate() {
            let want = from_scratch(&tokens[..=i]).unwrap();
            assert_eq!(*got, want, "{} token {i}", f.display());
            checked += 1;
        }
        let Token::Meter(meter) = tokens[0] else {
            continue;
        };
        let report = check_bars(&events(&tokens).unwrap(), meter);
        let fitting = report.bars.iter().filter(|b| b.fits()).count();
        // Bar lines before which nothing of the bar remains.
        let mut state = State::default();
        let mut closed_full = 0;
        for &t in &tokens {
            if matches!(t, Token::Bar(_)) {
                let mut before = state.clone();
                before.read(None);
                let mut f = [0; PER_TOKEN];
                before.features(&mut f);
                closed_full += usize::from(f[1] == REMAINING + 2);
            }
            state.read(Some(t));
        }
        // Every bar that fits ends where nothing remains (the last may end the tune).
        assert!(
            closed_full + 1 >= fitting,
            "{}: {closed_full} < {fitting}",
            f.display()
        );
        full_bars += fitting;
    }
    assert!(tunes > 11_000, "{tunes} tunes");
    eprintln!("{tunes} tunes, {checked} prefixes, {full_bars} full bars");
}

/// REMI's position tokens name each note's onset (the cursor's position), and dropping
/// them gives the tune back.
#[test]
fn remi_positions_name_each_onset() {
    use folk::remi::{Remi, POSITIONS};
    let dir = tempfile::tempdir().unwrap();
    let ds = Dataset::load(&testkit::fixture_dataset(dir.path())).unwrap();
    let remi = Remi::new(&ds.vocab);
    assert_eq!(remi.vocab_size(), ds.vocab.len() + POSITIONS as usize);
    assert_ne!(Remi::vocab_hash(&ds.vocab), ds.vocab.hash());
    for r in &ds.records {
        let encoded = remi.encode(&r.tune);
        assert_eq!(remi.strip(&encoded), r.tune, "{}", r.id);
        let toks = ds.vocab.decode_tune(&r.tune).unwrap();
        let notes = toks
            .iter()
            .filter(|t| matches!(t, Token::Note(_) | Token::Rest))
            .count();
        assert_eq!(encoded.len(), r.tune.len() + notes);
        // Each position token is the onset the state had reached before its note.
        let mut state = State::default();
        let mut it = encoded.iter();
        for t in &toks {
            if matches!(t, Token::Note(_) | Token::Rest) {
                let p = *it.next().unwrap();
                assert!(remi.is_position(p));
                let q = i64::from(p) - ds.vocab.len() as i64;
                assert_eq!(q, State::quanta(state.next_onset()), "{}", r.id);
            }
            it.next();
            state.read(Some(*t));
        }
    }
    // The fixture's essen tunes are 2/4 in sixteenths: `CDEF…` starts at 0, 1/2, 1, 3/2 eighths.
    let essen = ds
        .records
        .iter()
        .find(|r| r.collection == "essenFolksong")
        .unwrap();
    let first: Vec<i64> = remi
        .encode(&essen.tune)
        .iter()
        .filter(|&&id| remi.is_position(id))
        .take(4)
        .map(|&id| i64::from(id) - ds.vocab.len() as i64)
        .collect();
    assert_eq!(first, [0, 2, 4, 6]);
}
