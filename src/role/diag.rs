//! Diagnostics: turning byte spans into `file:line:col` plus the source line
//! and a caret, and "did you mean" suggestions for near-miss names.

use std::fmt;
use std::ops::Range;

/// Minimum similarity (Jaro-Winkler) for a "did you mean" suggestion.
const SUGGESTION_THRESHOLD: f64 = 0.8;
/// Characters of a source line shown before the problem's column, and in
/// all: a 1 MB value is shown as a window, not printed whole.
const SNIPPET_BEFORE: usize = 40;
const SNIPPET_CHARS: usize = 120;
/// Longest message shown (a message may quote a value of the file).
const MESSAGE_CHARS: usize = 400;
/// What stands for the text left out of a snippet or a message.
const ELLIPSIS: char = '…';

/// Where a problem is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A byte range of the role file.
    Span(Range<usize>),
    /// The role file as a whole (e.g. a missing key).
    File,
    /// A command-line flag (e.g. `--role`).
    Flag(&'static str),
}

/// One problem found in a role file, rendered against its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `path:line:col` (or `path`, or `--flag`).
    pub position: String,
    /// What is wrong.
    pub message: String,
    /// The source line and the caret line under it, when there is a span.
    pub snippet: Option<(String, String)>,
}

impl Problem {
    /// Builds a problem, resolving `location` against `source`.
    pub fn new(path: &str, source: &str, location: &Location, message: String) -> Self {
        let message = shorten(message);
        match location {
            Location::Span(span) => {
                let (line_no, col, line) = locate(source, span.start);
                let width = span_width(line, col, span);
                // A window of the line around the column.
                let total = line.chars().count();
                let skip = if total <= SNIPPET_CHARS {
                    0
                } else {
                    (col - 1).saturating_sub(SNIPPET_BEFORE)
                };
                let mut shown: String = line.chars().skip(skip).take(SNIPPET_CHARS).collect();
                let mut pad: String = line
                    .chars()
                    .skip(skip)
                    .take(col - 1 - skip)
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                if skip > 0 {
                    shown.insert(0, ELLIPSIS);
                    pad.insert(0, ' ');
                }
                if skip + SNIPPET_CHARS < total {
                    shown.push(ELLIPSIS);
                }
                let width = width
                    .min(SNIPPET_CHARS.saturating_sub(col - 1 - skip))
                    .max(1);
                Self {
                    position: format!("{path}:{line_no}:{col}"),
                    message,
                    snippet: Some((shown, format!("{pad}{}", "^".repeat(width)))),
                }
            }
            Location::File => Self {
                position: path.to_string(),
                message,
                snippet: None,
            },
            Location::Flag(flag) => Self {
                position: (*flag).to_string(),
                message,
                snippet: None,
            },
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.position, self.message)?;
        if let Some((line, caret)) = &self.snippet {
            write!(f, "\n  | {line}\n  | {caret}")?;
        }
        Ok(())
    }
}

/// `message`, cut to [`MESSAGE_CHARS`] characters.
fn shorten(message: String) -> String {
    if message.chars().count() <= MESSAGE_CHARS {
        return message;
    }
    let mut s: String = message.chars().take(MESSAGE_CHARS).collect();
    s.push(ELLIPSIS);
    s
}

/// 1-based line and column (in characters) of byte `offset`, and that line.
fn locate(source: &str, offset: usize) -> (usize, usize, &str) {
    let offset = offset.min(source.len());
    let before = &source[..floor_char_boundary(source, offset)];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line_no = before.matches('\n').count() + 1;
    let line_end = source[line_start..]
        .find('\n')
        .map_or(source.len(), |i| line_start + i);
    let line = source[line_start..line_end].trim_end_matches('\r');
    let col = before[line_start..].chars().count() + 1;
    (line_no, col, line)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Number of carets: the span's characters on its first line, at least one.
fn span_width(line: &str, col: usize, span: &Range<usize>) -> usize {
    let rest: usize = line.chars().count().saturating_sub(col - 1);
    let len = span.end.saturating_sub(span.start);
    len.min(rest).max(1)
}

/// The candidate closest to `input`, if it is close enough to suggest.
pub fn did_you_mean<'a>(
    input: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(input, c), c))
        .filter(|(score, _)| *score >= SUGGESTION_THRESHOLD)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_is_shown_with_line_column_and_caret() {
        let src = "schema = 1\nregion = 42\n";
        let at = src.find("42").unwrap();
        let p = Problem::new("n.toml", src, &Location::Span(at..at + 2), "bad".into());
        assert_eq!(
            p.to_string(),
            "n.toml:2:10: bad\n  | region = 42\n  |          ^^"
        );
    }

    #[test]
    fn span_past_end_points_at_last_line() {
        let src = "a = 1";
        let p = Problem::new("f", src, &Location::Span(5..5), "eof".into());
        assert_eq!(p.position, "f:1:6");
    }

    #[test]
    fn a_huge_value_is_shown_as_a_window_and_a_huge_message_is_cut() {
        let src = format!("node_name = \"{}\"\n", "x".repeat(1 << 20));
        let p = Problem::new(
            "f",
            &src,
            &Location::Span(12..src.len() - 1),
            "m".repeat(5000),
        );
        let (line, caret) = p.snippet.clone().unwrap();
        assert_eq!(p.position, "f:1:13");
        assert_eq!(line.chars().count(), SNIPPET_CHARS + 1);
        assert!(line.starts_with("node_name = \"xxx") && line.ends_with(ELLIPSIS));
        assert_eq!(caret.trim_start().len(), SNIPPET_CHARS - 12);
        assert_eq!(p.message.chars().count(), MESSAGE_CHARS + 1);
        // Far into a line: a window starting before the column.
        let src = format!("{} = 1\n", "k".repeat(500));
        let p = Problem::new("f", &src, &Location::Span(503..504), "m".into());
        let (line, caret) = p.snippet.unwrap();
        assert!(line.starts_with(ELLIPSIS) && line.contains("= 1"), "{line}");
        assert_eq!(
            caret.chars().count() - 1,
            line.chars().position(|c| c == '1').unwrap()
        );
    }

    #[test]
    fn near_miss_is_suggested_and_far_miss_is_not() {
        let keys = ["datacenter", "region", "roles"];
        assert_eq!(did_you_mean("datacentre", keys), Some("datacenter"));
        assert_eq!(did_you_mean("zzz", keys), None);
    }
}
