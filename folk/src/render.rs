//! Tokens back to ABC text that standard ABC tools read: a header with `L:1/8` (the unit
//! tokens are normalised to) and a body with a line break every few bars.

use std::fmt::Write;

use super::tune::Token;

/// Bars per line of rendered ABC.
const BARS_PER_LINE: usize = 4;

/// Renders a tune (`M:` and `K:` tokens first, as the tokenizer writes them) as a
/// complete ABC tune with reference number `x` and title `title`.
pub fn to_abc(tokens: &[Token], x: u32, title: &str) -> String {
    let mut head = format!("X:{x}\nT:{}\n", title.replace('\n', " "));
    let mut body_start = 0;
    let (mut meter, mut key) = (None, None);
    for t in tokens.iter().take(2) {
        match t {
            Token::Meter(m) if meter.is_none() => meter = Some(*m),
            Token::Key(k) if key.is_none() => key = Some(*k),
            _ => break,
        }
        body_start += 1;
    }
    if let Some(m) = meter {
        let _ = writeln!(head, "M:{m}");
    }
    head.push_str("L:1/8\n");
    let _ = writeln!(
        head,
        "K:{}",
        key.map_or_else(|| "C".to_string(), |k| k.to_string())
    );
    head.push_str(&body(&tokens[body_start..]));
    head.push('\n');
    head
}

/// The body text of a token sequence.
pub fn body(tokens: &[Token]) -> String {
    let mut s = String::new();
    let mut bars = 0;
    for t in tokens {
        match t {
            Token::Note(_) | Token::Rest | Token::Dur(_) | Token::Tie | Token::Tuplet { .. } => {
                let _ = write!(s, "{t}");
            }
            Token::Bar(b) => {
                if !s.is_empty() && !s.ends_with(['\n', ' ']) {
                    s.push(' ');
                }
                s.push_str(b.text());
                bars += 1;
                if bars % BARS_PER_LINE == 0 {
                    s.push('\n');
                } else {
                    s.push(' ');
                }
            }
            Token::Ending(_) => {
                let _ = write!(s, "{t} ");
            }
            Token::Meter(m) => {
                let _ = write!(s, "[M:{m}] ");
            }
            Token::Key(k) => {
                let _ = write!(s, "[K:{k}] ");
            }
        }
    }
    s.trim_end().to_string()
}
