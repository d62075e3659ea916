//! Property tests: no input makes the parser, the bar accounting or the MIDI export
//! panic, and whatever parses round-trips through rendered ABC.

#![allow(clippy::unwrap_used)]

use folk::abc::parse_tune;
use folk::bars::check_bars;
use folk::midi::to_midi;
use folk::render::to_abc;
use folk::tune::{events, tokens_text, Token};
use proptest::prelude::*;

const SEED_TUNE: &str = "X:1\nT:Seed\nR:reel\nM:C|\nL:1/8\nK:Dmix\n\
\"D\"A2 (3Bcd e>f ~g2|:[1 a/b/c'-c'2 z2 {g}f2:|2 _B,,4 =c'4||\n(3:2:3ABc !trill!d4 |]\n";

/// Runs every stage on the text; panics only if a stage panics or a parsed tune fails
/// to round-trip.
fn exercise(text: &str) {
    let Ok(p) = parse_tune(text) else { return };
    let abc = to_abc(&p.tokens, 1, "t");
    let again = parse_tune(&abc).expect("rendered ABC parses");
    assert_eq!(tokens_text(&again.tokens), tokens_text(&p.tokens));
    let Token::Meter(m) = p.tokens[0] else {
        panic!("first token is not the meter")
    };
    let ev = events(&p.tokens).expect("parsed tokens group into events");
    let _ = check_bars(&ev, m);
    to_midi(&p.tokens, 120).expect("parsed tokens export to MIDI");
}

/// ABC-flavoured characters, so that random strings reach deep into the parser.
fn abc_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => proptest::sample::select("ABCDEFGabcdefgz|:[]()<>/-^_=,'0123456789 \n\"!{}.~xyZ%\\&+".chars().collect::<Vec<_>>()),
        1 => any::<char>(),
    ]
}

/// Whole ABC symbols, so that random sequences often parse and exercise round trips.
fn abc_symbol() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(vec![
        "A",
        "B2",
        "c/",
        "d3/2",
        "^f",
        "_B,",
        "=e'",
        "z",
        "z4",
        "G//",
        "|",
        "||",
        "|]",
        "|:",
        ":|",
        "::",
        "[1",
        ":|2",
        "(3",
        "(2",
        "(3:2:4",
        ">",
        "<",
        "-",
        "\"Am\"",
        "{g}",
        "!fermata!",
        "~",
        " ",
        "\n",
        "(",
        ")",
        "x2",
        "a'",
        "C,,",
    ])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 5000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bodies_never_panic(body in proptest::collection::vec(abc_char(), 0..200)) {
        let body: String = body.into_iter().collect();
        exercise(&format!("X:1\nM:6/8\nL:1/8\nK:G\n{body}\n"));
    }

    #[test]
    fn random_symbol_sequences_round_trip(parts in proptest::collection::vec(abc_symbol(), 0..60)) {
        exercise(&format!("X:1\nM:3/4\nL:1/16\nK:Bb\n{}\n", parts.concat()));
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        exercise(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn truncated_and_mutated_tunes_never_panic(cut in 0..SEED_TUNE.len(), at in 0..SEED_TUNE.len(),
                                               insert in proptest::collection::vec(abc_char(), 0..8)) {
        let cut = SEED_TUNE.floor_char_boundary(cut);
        exercise(&SEED_TUNE[..cut]);
        let at = SEED_TUNE.floor_char_boundary(at);
        let inserted: String = insert.into_iter().collect();
        exercise(&format!("{}{inserted}{}", &SEED_TUNE[..at], &SEED_TUNE[at..]));
    }

    #[test]
    fn random_headers_never_panic(m in "[ -~]{0,8}", l in "[ -~]{0,8}", k in "[ -~]{0,12}") {
        exercise(&format!("X:1\nM:{m}\nL:{l}\nK:{k}\nABc|\n"));
    }
}

#[test]
fn the_seed_tune_parses() {
    assert!(parse_tune(SEED_TUNE).is_ok());
}
