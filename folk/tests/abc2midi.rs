//! The outside bar check (`folk::abc2midi`) against the judge's own bar accounting
//! (`folk::bars`): on corpus tunes and on the same tunes with bars broken on purpose, the
//! two move in the same direction. Needs abc2midi and the corpus (`make setup`).

#![allow(clippy::unwrap_used)]

use folk::abc::parse_tune;
use folk::abc2midi::{bar_shares, bars};
use folk::bars::check_bars;
use folk::dataset::COLLECTIONS;
use folk::tune::{events, Token};

fn require_abc2midi() {
    assert!(
        folk::abc2midi::available(),
        "abc2midi is not installed: run `make setup` first (`make test` runs it)"
    );
}

/// The judge's side: the share of complete bars that fit the meter.
fn judged(t: &[Token]) -> f64 {
    let Some(Token::Meter(m)) = t.first() else {
        return f64::NAN;
    };
    check_bars(&events(t).unwrap(), *m).fit_share()
}

/// The tune with every second bar's first note or rest dropped (with its duration).
fn broken(t: &[Token]) -> Vec<Token> {
    let (mut out, mut bar, mut dropped) = (Vec::new(), 0, false);
    let mut skip_dur = false;
    for &x in t {
        match x {
            Token::Bar(_) => {
                bar += 1;
                dropped = false;
                out.push(x);
            }
            Token::Note(_) | Token::Rest if bar % 2 == 1 && !dropped => {
                dropped = true;
                skip_dur = true;
            }
            Token::Dur(_) | Token::Tie if skip_dur => {}
            _ => {
                skip_dur = false;
                out.push(x);
            }
        }
    }
    out
}

fn mean(v: &[f64]) -> f64 {
    let v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    v.iter().sum::<f64>() / v.len() as f64
}

#[test]
fn a_hand_written_tune_and_its_broken_bars() {
    require_abc2midi();
    let tune = parse_tune(
        "X:1\nT:t\nM:4/4\nL:1/8\nK:G\nD|GABc d2B2|c2A2 B2G2|ABcd e2d2|1 c2A2 G3:|2 c2A2 G4|]\n",
    )
    .unwrap()
    .tokens;
    assert_eq!(bars(&tune), 6, "the pickup, three full bars, two endings");
    // Two durations in a row (a sample can hold them) render as `B/23/2`, a zero note
    // length, where abc2midi gives up on the whole file.
    let mut unreadable = tune.clone();
    let at = unreadable
        .iter()
        .position(|t| matches!(t, Token::Note(_)))
        .unwrap();
    let d = |n, q| Token::Dur(folk::music::Dur::new(n, q));
    unreadable.splice(at + 1..at + 1, [d(1, 2), d(3, 2)]);
    let shares = bar_shares(&[tune.clone(), broken(&tune), unreadable, tune.clone()]).unwrap();
    assert_eq!(shares[0], 1.0, "abc2midi warns about none of the bars");
    assert!(
        shares[1] < 0.75,
        "every other bar a note short: {}",
        shares[1]
    );
    assert!(judged(&broken(&tune)) < judged(&tune));
    assert_eq!(shares[2], 0.0, "a tune abc2midi stops on");
    assert_eq!(shares[3], 1.0, "the tunes after it are still checked");
}

/// 300 corpus tunes (60 from each collection): abc2midi accepts nearly all their bars,
/// and fewer once bars are broken, as the judge's accounting does.
#[test]
fn abc2midi_agrees_in_direction_with_the_judge_on_the_corpus() {
    require_abc2midi();
    let all = testkit::corpus_tunes();
    let tunes: Vec<Vec<Token>> = COLLECTIONS
        .iter()
        .flat_map(|c| all.iter().filter(move |t| t.0 == *c).take(60))
        .map(|t| t.2.clone())
        .collect();
    let broken: Vec<Vec<Token>> = tunes.iter().map(|t| broken(t)).collect();
    let outside = (
        mean(&bar_shares(&tunes).unwrap()),
        mean(&bar_shares(&broken).unwrap()),
    );
    let judge = (
        mean(&tunes.iter().map(|t| judged(t)).collect::<Vec<_>>()),
        mean(&broken.iter().map(|t| judged(t)).collect::<Vec<_>>()),
    );
    eprintln!("abc2midi {outside:?}, judge {judge:?}");
    assert!(
        outside.0 > 0.85,
        "corpus bars abc2midi accepts: {}",
        outside.0
    );
    assert!(outside.1 < outside.0 - 0.2, "broken bars: {outside:?}");
    assert!(judge.1 < judge.0 - 0.2, "the judge: {judge:?}");
}
