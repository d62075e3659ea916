//! The ABC parser, tokens, rendering and MIDI export on hand-written tunes and, when
//! `make setup` has fetched it, on the whole corpus.

#![allow(clippy::unwrap_used)]

use folk::abc::{parse_tune, split_tunes, Skip};
use folk::bars::check_bars;
use folk::dataset::COLLECTIONS;
use folk::midi::{notes, to_midi};
use folk::music::{Dur, Meter};
use folk::render::to_abc;
use folk::tune::{events, tokens_text, Token};

fn tokens(abc: &str) -> Vec<Token> {
    match parse_tune(abc) {
        Ok(p) => p.tokens,
        Err(e) => panic!("{e}: {abc}"),
    }
}

fn text(abc: &str) -> String {
    tokens_text(&tokens(abc))
}

/// tokens → ABC → tokens is the identity.
fn assert_round_trip(toks: &[Token]) {
    let abc = to_abc(toks, 1, "t");
    let again =
        parse_tune(&abc).unwrap_or_else(|e| panic!("rendered ABC does not parse ({e}):\n{abc}"));
    assert_eq!(
        tokens_text(&again.tokens),
        tokens_text(toks),
        "rendered:\n{abc}"
    );
}

/// The bar lengths (in eighths) and whether each counts as complete and fits.
fn bars(abc: &str) -> (Vec<Dur>, usize, usize) {
    let toks = tokens(abc);
    let Token::Meter(m) = toks[0] else {
        panic!("no meter token")
    };
    let r = check_bars(&events(&toks).unwrap(), m);
    (
        r.bars.iter().map(|b| b.len).collect(),
        r.complete(),
        r.fitting(),
    )
}

fn d(n: i64, q: i64) -> Dur {
    Dur::new(n, q)
}

const JIG: &str = "X:1\nT:The Jig\nR:jig\nM:6/8\nL:1/8\nK:D\nA|:dfe dBA|FAF A2B|\"G\"d>ed {e}dBA|1 B3 A2:|2 B3 A3||\n";

#[test]
fn a_jig_tokenizes_with_normalised_durations() {
    assert_eq!(
        text(JIG),
        "M:6/8 K:D A |: d f e d B A | F A F A 2 B | d 3/2 e /2 d d B A | [1 B 3 A 2 :| [2 B 3 A 3 ||"
    );
}

#[test]
fn six_eight_jig_bars_fit_with_pickup_and_endings() {
    let (lens, complete, fitting) = bars(JIG);
    assert_eq!(
        lens,
        vec![d(1, 1), d(6, 1), d(6, 1), d(6, 1), d(5, 1), d(6, 1)]
    );
    // The pickup (1) and the first ending's short bar before `:|` may be partial.
    assert_eq!((complete, fitting), (4, 4));
}

#[test]
fn two_four_in_sixteenths_normalises_to_eighths() {
    let abc = "X:1\nM:2/4\nL:1/16\nK:G\nd4A2c2 | d4d4 | A3cd2g2 | c2A2G4 |]\n";
    assert_eq!(
        text(abc),
        "M:2/4 K:G d 2 A c | d 2 d 2 | A 3/2 c /2 d g | c A G 2 |]"
    );
    let (lens, complete, fitting) = bars(abc);
    assert!(lens.iter().all(|&l| l == d(4, 1)), "{lens:?}");
    assert_eq!((complete, fitting), (4, 4));
}

#[test]
fn triplets_take_the_time_of_two() {
    let abc = "X:1\nM:2/4\nL:1/8\nK:C\n(3ABc d2 | (3:2:3c/d/e/ f3 | (3A2B2c2 c2 |\n";
    assert_eq!(
        text(abc),
        "M:2/4 K:C (3:2:3 A B c d 2 | (3:2:3 c /2 d /2 e /2 f 3 | (3:2:3 A 2 B 2 c 2 c 2 |"
    );
    let (lens, complete, fitting) = bars(abc);
    assert_eq!(lens, vec![d(4, 1), d(4, 1), d(6, 1)]);
    assert_eq!(
        (complete, fitting),
        (3, 2),
        "the last bar is too long, so it counts"
    );
}

#[test]
fn compound_meter_changes_the_default_tuplet() {
    let abc = "X:1\nM:6/8\nL:1/8\nK:C\n(2AB c3 |]\n";
    assert_eq!(text(abc), "M:6/8 K:C (2:3:2 A B c 3 |]");
    assert_eq!(bars(abc).0, vec![d(6, 1)]);
}

#[test]
fn broken_rhythm_is_applied_to_lengths() {
    let abc = "X:1\nM:C\nL:1/8\nK:Ador\nA>B c<d e>>f g2 | a/>b/ c'2 z4 |\n";
    assert_eq!(
        text(abc),
        "M:C K:Ador A 3/2 B /2 c /2 d 3/2 e 7/4 f /4 g 2 | a 3/4 b /4 c' 2 z 4 |"
    );
    let (lens, complete, fitting) = bars(abc);
    assert_eq!(lens, vec![d(8, 1), d(7, 1)]);
    assert_eq!(
        (complete, fitting),
        (1, 1),
        "the short final bar may be partial"
    );
}

#[test]
fn a_wrong_middle_bar_is_counted() {
    let abc = "X:1\nM:3/4\nL:1/4\nK:F\nC | F G A | B2 | c3 | F2 |]\n";
    let (lens, complete, fitting) = bars(abc);
    assert_eq!(lens, vec![d(2, 1), d(6, 1), d(4, 1), d(6, 1), d(4, 1)]);
    assert_eq!((complete, fitting), (3, 2));
}

#[test]
fn pickup_and_section_boundaries() {
    // Reel with a pickup, a part ending short before `:|`, and a second part's pickup.
    let abc = "X:1\nM:C|\nL:1/8\nK:G\nGA|:B2 d2 g2 d2|e2 d2 B2 A2:|\n|:B|d2 g2 g2 fe|d2 B2 G3:|\n";
    let (lens, complete, fitting) = bars(abc);
    assert_eq!(
        lens,
        vec![d(2, 1), d(8, 1), d(8, 1), d(1, 1), d(8, 1), d(7, 1)]
    );
    assert_eq!((complete, fitting), (3, 3));
}

#[test]
fn dropped_symbols_and_bar_variants() {
    let abc = "X:1\nM:2/4\nL:1/8\nK:Bb\n\"Gm\"!trill!.~(AB) {/c}u(c/d/e)-|[| e2 f2 :: [1 g4 :|2 a4 |] % comment\n";
    assert_eq!(
        text(abc),
        "M:2/4 K:Bb A B c /2 d /2 e - | [| e 2 f 2 :: [1 g 4 :| [2 a 4 |]"
    );
}

#[test]
fn accidentals_octaves_and_rests() {
    let abc = "X:1\nM:4/4\nL:1/4\nK:C\n^C, _B, =c' ^^f | __e z x2 |\n";
    assert_eq!(
        text(abc),
        "M:4/4 K:C ^C, 2 _B, 2 =c' 2 ^^f 2 | __e 2 z 2 z 4 |"
    );
}

#[test]
fn hand_written_tunes_round_trip() {
    for abc in [
        JIG,
        "X:1\nM:2/4\nL:1/16\nK:G\nd4A2c2 | d4d4 | A3cd2g2 | c2A2G4 |]\n",
        "X:1\nM:C\nL:1/8\nK:Ador\nA>B c<d e>>f g2 | a/>b/ c'2 z4 |\n",
        "X:1\nM:6/8\nL:1/8\nK:Em\n(3ABc (2de f3 | [1 e6 :|2 e6 |]\n",
        "X:1\nM:C|\nL:1/8\nK:G\nGA|:B2 d2 g2 d2|e2-e2 B2 A2:|\n|:B|d2 g2 g2 fe|d2 B2 G3:|\n",
        "X:1\nM:3/4\nL:1/8\nK:Bb\n[|^c'2 _B,,2 =e2 | z6 || f/g/a/b/ c'4 ::\n",
    ] {
        assert_round_trip(&tokens(abc));
    }
}

#[test]
fn unsupported_tunes_are_skipped_with_a_reason() {
    let cases = [
        ("X:1\nM:C\nL:1/8\nK:G\nAB [M:3/4] cd |\n", Skip::InlineField),
        (
            "X:1\nM:C\nL:1/8\nK:G\nAB cd |\nM:3/4\ncde |\n",
            Skip::InlineField,
        ),
        ("X:1\nM:C\nL:1/8\nK:G\nV:1\nAB cd |\n", Skip::Voices),
        ("X:1\nM:C\nL:1/8\nK:G\n[CEG]2 cd |\n", Skip::Chord),
        ("X:1\nM:C\nL:1/8\nK:HP\nAB |\n", Skip::BadKey),
        ("X:1\nM:none\nL:1/8\nK:G\nAB |\n", Skip::BadMeter),
        ("X:1\nM:C\nL:1/8\nAB |\n", Skip::NoKey),
        ("X:1\nL:1/8\nK:G\nAB |\n", Skip::NoMeter),
        ("X:1\nM:C\nY:what\nK:G\nAB |\n", Skip::UnknownField),
        ("X:1\nM:C\nK:G\nA99999 |\n", Skip::BadLength),
        ("X:1\nM:C\nK:G\nA65 |\n", Skip::BadLength),
        ("X:1\nM:C\nK:G\nA64>B |\n", Skip::BadLength),
        ("X:1\nM:C\nL:1/2\nK:G\nA64 |\n", Skip::BadLength),
        ("X:1\nM:C\nK:G\nA///////// |\n", Skip::BadLength),
        ("X:1\nM:C\nK:G\nA\"unclosed |\n", Skip::Unterminated),
        ("X:1\nM:C\nK:G\nA {ga |\n", Skip::Unterminated),
        ("X:1\nM:C\nK:G\nA c'''''''' |\n", Skip::BadPitch),
        ("X:1\nM:C\nK:G\n(0AB |\n", Skip::BadTuplet),
        ("X:1\nM:C\nK:G\n| >A |\n", Skip::BadBroken),
        ("X:1\nM:C\nK:G\nZ4 |\n", Skip::MultiRest),
        ("X:1\nM:C\nK:G\n|1,2 A |\n", Skip::BadEnding),
        ("X:1\nM:C\nK:G\nA \u{0}\u{1} |\n", Skip::UnexpectedChar),
        ("X:1\nM:C\nK:G\n| | |\n", Skip::Empty),
    ];
    for (abc, reason) in cases {
        assert_eq!(parse_tune(abc).map(|p| p.tokens), Err(reason), "{abc}");
    }
}

#[test]
fn a_ten_megabyte_line_is_handled() {
    let mut abc = String::from("X:1\nM:C\nL:1/8\nK:G\n");
    abc.push_str(&"ABcd ".repeat(2_000_000));
    abc.push('\n');
    assert!(abc.len() > 10_000_000);
    assert_eq!(
        parse_tune(&abc).map(|p| p.tokens.len()).ok(),
        Some(2 + 8_000_000)
    );
    let junk: String = "\u{fffd}#$*".repeat(3_000_000);
    assert_eq!(
        parse_tune(&format!("X:1\nM:C\nK:G\n{junk}\n")).err(),
        Some(Skip::UnexpectedChar)
    );
}

#[test]
fn splitting_files_into_tunes() {
    let file = "% header\nfree text\n\nX:1\nT:a\nM:C\nK:G\nAB|\n\nnotes\nX:2\nT:b\nM:C\nK:G\ncd|\nX:3\nM:C\nK:G\nef|";
    let tunes = split_tunes(file);
    assert_eq!(tunes.len(), 3);
    assert!(tunes[2].ends_with("ef|"));
    assert!(tunes.iter().all(|t| parse_tune(t).is_ok()));
}

#[test]
fn midi_resolves_key_accidentals_and_ties() {
    // D major: F and C are sharp; a natural carries to the end of the bar; ties join.
    let toks = tokens("X:1\nM:C\nL:1/8\nK:D\nF =F F c2-c2 | F (3ABc z2 |]\n");
    let n = notes(&toks).unwrap();
    let keys: Vec<u8> = n.iter().map(|n| n.key).collect();
    assert_eq!(keys, vec![66, 65, 65, 73, 66, 69, 71, 73]);
    assert_eq!(n[3].len, 4 * 240, "the tied c lasts two quarters");
    assert_eq!(n[5].len, 160, "a triplet eighth is two thirds of an eighth");
    assert_eq!(
        (n[7].start, n[7].start + n[7].len),
        (2240, 10 * 240),
        "the bar's last triplet note"
    );
    let smf = to_midi(&toks, 100).unwrap();
    let parsed = midly::Smf::parse(&smf).unwrap();
    let ons = parsed.tracks[0]
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                midly::TrackEventKind::Midi {
                    message: midly::MidiMessage::NoteOn { .. },
                    ..
                }
            )
        })
        .count();
    assert_eq!(ons, 8);
}

#[test]
fn events_reject_misplaced_tokens() {
    let meter = Token::Meter(Meter::Common);
    assert!(events(&[meter, Token::Dur(Dur::from_integer(2))]).is_err());
    assert!(events(&[meter, Token::Tie]).is_err());
    assert!(events(&[meter, Token::Rest, Token::Tie]).is_err());
}

/// Every tune of the corpus that parses round-trips through ABC, groups into events and
/// exports to MIDI. Needs `make setup` (which `make test` runs first).
#[test]
fn corpus_round_trip() {
    testkit::require_setup(&format!("data/raw/{}", COLLECTIONS[0]));
    let raw = testkit::require_setup("data/raw");
    let (mut found, mut parsed) = (0, 0);
    for c in COLLECTIONS {
        let mut files: Vec<_> = std::fs::read_dir(raw.join(c))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files
            .iter()
            .filter(|f| f.extension().is_some_and(|x| x == "abc"))
        {
            let bytes = std::fs::read(f).unwrap();
            let text: String = match String::from_utf8(bytes) {
                Ok(s) => s,
                Err(e) => e.into_bytes().iter().map(|&b| b as char).collect(),
            };
            for tune in split_tunes(&text) {
                found += 1;
                let Ok(p) = parse_tune(tune) else { continue };
                parsed += 1;
                assert_round_trip(&p.tokens);
                notes(&p.tokens).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            }
        }
    }
    assert!(found > 12_000, "found {found} tunes");
    assert!(
        parsed as f64 >= 0.85 * found as f64,
        "parsed {parsed} of {found}"
    );
}
