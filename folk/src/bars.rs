//! Bar-length accounting: how many complete bars of a tune have the length its meter
//! asks for. A pickup bar, the final bar and the partial bars on either side of a
//! section boundary (`||`, `:|`, `|:`, `::`, `|]`) may be short; every other bar must be
//! exactly one bar long.

use super::music::{Dur, Meter};
use super::tune::Event;

/// One bar: its sounding length, the meter's bar length, and whether it must be full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarLen {
    pub len: Dur,
    pub expected: Dur,
    /// A bar that may be partial (pickup, final, or next to a section boundary).
    pub may_be_partial: bool,
}

impl BarLen {
    /// Whether the bar is counted as a complete bar.
    pub fn is_complete(&self) -> bool {
        !(self.may_be_partial && self.len < self.expected)
    }

    pub fn fits(&self) -> bool {
        self.len == self.expected
    }
}

/// The bars of a tune and their accounting.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BarReport {
    pub bars: Vec<BarLen>,
}

impl BarReport {
    /// Bars counted as complete.
    pub fn complete(&self) -> usize {
        self.bars.iter().filter(|b| b.is_complete()).count()
    }

    /// Complete bars whose length fits the meter.
    pub fn fitting(&self) -> usize {
        self.bars
            .iter()
            .filter(|b| b.is_complete() && b.fits())
            .count()
    }

    /// Share of complete bars that fit (0 when there are none).
    pub fn fit_share(&self) -> f64 {
        match self.complete() {
            0 => 0.0,
            n => self.fitting() as f64 / n as f64,
        }
    }
}

/// Walks the events of a tune and measures every bar.
pub fn check_bars(events: &[Event], meter: Meter) -> BarReport {
    let mut meter = meter;
    let mut bars = Vec::new();
    let mut len = Dur::from_integer(0);
    let mut after_section = true; // the first bar may be a pickup
    for e in events {
        match *e {
            Event::Note { sounding, .. } => len += sounding,
            Event::Meter(m) => meter = m,
            Event::Bar(b) => {
                if len > Dur::from_integer(0) {
                    bars.push(BarLen {
                        len,
                        expected: meter.bar_len(),
                        may_be_partial: after_section || b.ends_section(),
                    });
                    after_section = b.ends_section();
                } else {
                    after_section |= b.ends_section();
                }
                len = Dur::from_integer(0);
            }
            Event::Ending(_) | Event::Key(_) => {}
        }
    }
    if len > Dur::from_integer(0) {
        bars.push(BarLen {
            len,
            expected: meter.bar_len(),
            may_be_partial: true,
        });
    } else if let Some(last) = bars.last_mut() {
        last.may_be_partial = true;
    }
    BarReport { bars }
}
