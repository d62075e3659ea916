//! A check of bar lengths by a parser that is not the project's own: `abc2midi` (abcMIDI,
//! the standard ABC-to-MIDI converter that `make setup` installs from Debian's packages)
//! warns about every bar whose length differs from the meter ("Bar 3 has 9/2 time units
//! while the time signature has 4"). [`bar_shares`] writes tunes as one ABC file, runs
//! abc2midi on it, and gives each tune the share of its bars that drew no warning; a tune
//! it gives up on (a sample with two durations in a row reads as a zero note length) gets
//! 0, and the tunes after it are checked in a second run.
//!
//! Only the first pass over a bar counts (abc2midi repeats its warnings for the second
//! time through a repeat, marked "in repeat", and misreads some endings there); a pickup
//! and a final partial bar draw no warning from it, as the judge does not count them.

use std::collections::HashSet;
use std::process::Command;

use anyhow::{Context, Result};

use crate::render::to_abc;
use crate::tune::Token;

/// Whether `abc2midi` can be run.
pub fn available() -> bool {
    Command::new("abc2midi").arg("-ver").output().is_ok()
}

/// Bars holding at least one note or rest: the bar lines that close one, and a last bar
/// without a closing bar line.
pub fn bars(tokens: &[Token]) -> usize {
    let (mut bars, mut open) = (0, false);
    for t in tokens {
        match t {
            Token::Note(_) | Token::Rest => open = true,
            Token::Bar(_) if open => {
                bars += 1;
                open = false;
            }
            _ => {}
        }
    }
    bars + usize::from(open)
}

/// For each tune, the share of its bars ([`bars`]) that abc2midi did not warn about (NaN
/// for a tune without bars, 0 for one abc2midi stops on); an error when abc2midi cannot be
/// run.
pub fn bar_shares(tunes: &[Vec<Token>]) -> Result<Vec<f64>> {
    let mut shares = vec![f64::NAN; tunes.len()];
    let mut start = 0;
    // abc2midi gives up on a file at a tune it cannot read at all (a note length of 0):
    // that tune gets 0, and the rest is checked again.
    while start < tunes.len() {
        let run = run(&tunes[start..])?;
        for (i, warned) in run.warned.iter().enumerate() {
            let n = bars(&tunes[start + i]);
            if n > 0 {
                shares[start + i] = 1.0 - (*warned).min(n) as f64 / n as f64;
            }
        }
        match run.stopped_at {
            Some(i) => {
                shares[start + i] = 0.0;
                start += i + 1;
            }
            None => break,
        }
    }
    Ok(shares)
}

/// One abc2midi run over a file of tunes.
struct Run {
    /// Bar warnings of each tune it read, in order.
    warned: Vec<usize>,
    /// The tune it stopped on, if it gave up before the end.
    stopped_at: Option<usize>,
}

fn run(tunes: &[Vec<Token>]) -> Result<Run> {
    let dir = tempfile::tempdir()?;
    // Each tune's first and last line in the file, 1-based as abc2midi counts them.
    let (mut text, mut lines) = (String::new(), Vec::with_capacity(tunes.len()));
    let mut line = 1;
    for (i, t) in tunes.iter().enumerate() {
        let abc = to_abc(t, i as u32 + 1, "sample");
        let n = abc.lines().count();
        lines.push((line, line + n - 1));
        text.push_str(&abc);
        text.push('\n');
        line += n + 1;
    }
    std::fs::write(dir.path().join("tunes.abc"), &text)?;
    let out = Command::new("abc2midi")
        .arg("tunes.abc")
        .current_dir(dir.path())
        .output()
        .context("running abc2midi (`make setup` installs it)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let warned = warned_lines(&stdout);
    // It names each tune's MIDI file as it starts on it.
    let started = stdout
        .lines()
        .filter_map(|l| {
            l.strip_prefix("writing MIDI file tunes")?
                .strip_suffix(".mid")?
                .parse::<usize>()
                .ok()
        })
        .max()
        .unwrap_or(0);
    let read = if out.status.success() {
        tunes.len()
    } else {
        started.saturating_sub(1)
    };
    Ok(Run {
        warned: lines[..read.min(tunes.len())]
            .iter()
            .map(|&(first, last)| {
                warned
                    .iter()
                    .filter(|l| (first..=last).contains(&l.0))
                    .count()
            })
            .collect(),
        stopped_at: (!out.status.success()).then_some(read.min(tunes.len() - 1)),
    })
}

/// The distinct `(line, char)` places of abc2midi's bar-length warnings on the first pass.
fn warned_lines(output: &str) -> HashSet<(usize, usize)> {
    output
        .lines()
        .filter(|l| l.contains("time units while the time signature has"))
        .filter(|l| !l.trim_end().ends_with("in repeat"))
        .filter_map(|l| {
            let place = l.split("line-char ").nth(1)?.split_whitespace().next()?;
            let (line, ch) = place.split_once('-')?;
            Some((line.parse().ok()?, ch.parse().ok()?))
        })
        .collect()
}
