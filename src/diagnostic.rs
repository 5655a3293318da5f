//! Located problems in the configuration file and their rustc-like rendering:
//!
//! ```text
//! error[unknown-key]: unknown key `retension` in [schedule]
//!   --> backplan.toml:9:1
//!    |
//!  9 | retension = "3d"
//!    | ^^^^^^^^^
//!    = hint: did you mean `retention`?
//! ```

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt::Write as _;
use std::ops::Range;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// The rule broken, a stable kebab-case name (`unknown-key`, `inline-secret`, ...).
    pub rule: &'static str,
    pub message: String,
    /// Byte range in the file.
    #[serde(skip)]
    pub span: Range<usize>,
    pub hint: Option<String>,
    /// Bytes of the file not to print (an inline secret): shown as `*` in the quoted line.
    #[serde(skip)]
    pub redact: Option<Range<usize>>,
}

impl Diagnostic {
    pub fn error(rule: &'static str, span: Range<usize>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            rule,
            message: message.into(),
            span,
            hint: None,
            redact: None,
        }
    }
    pub fn warning(rule: &'static str, span: Range<usize>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(rule, span, message)
        }
    }
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
    pub fn redact(mut self, span: Range<usize>) -> Self {
        self.redact = Some(span);
        self
    }
}

/// A line and column, both counted from 1; the column counts characters, not bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Loc {
    pub line: u32,
    pub col: u32,
}

/// Turns byte offsets of one source text into lines and columns.
pub struct LineIndex<'s> {
    src: &'s str,
    starts: Vec<usize>,
    /// The line of the last look-up: validation asks in file order, mostly a few lines on.
    last: Cell<usize>,
}

impl<'s> LineIndex<'s> {
    pub fn new(src: &'s str) -> Self {
        let starts = std::iter::once(0)
            .chain(memchr::memchr_iter(b'\n', src.as_bytes()).map(|i| i + 1))
            .collect();
        LineIndex {
            src,
            starts,
            last: Cell::new(0),
        }
    }

    pub fn loc(&self, offset: usize) -> Loc {
        let offset = offset.min(self.src.len());
        let line = self.line_of(offset);
        let before = &self.src[self.starts[line]..offset];
        // Columns count characters; in ASCII (nearly every line) that is the byte count.
        let col = if before.is_ascii() {
            before.len()
        } else {
            before.chars().count()
        } + 1;
        Loc {
            line: line as u32 + 1,
            col: col as u32,
        }
    }

    /// The index of the line holding `offset`: first among the 64 lines from the last one
    /// found, then in all of them.
    fn line_of(&self, offset: usize) -> usize {
        let last = self.last.get();
        let near = &self.starts[last..(last + 64).min(self.starts.len())];
        let line = match near.partition_point(|&s| s <= offset) {
            n if n > 0 && n < near.len() => last + n - 1,
            _ => self.starts.partition_point(|&s| s <= offset) - 1,
        };
        self.last.set(line);
        line
    }

    /// The text of a line (without its end), and the byte offset where it starts.
    fn line_text(&self, line: u32) -> (&'s str, usize) {
        let i = line as usize - 1;
        let start = self.starts[i];
        let end = self.starts.get(i + 1).copied().unwrap_or(self.src.len());
        (self.src[start..end].trim_end_matches(['\n', '\r']), start)
    }
}

/// Renders diagnostics, in file order, with the file name as the user gave it.
pub fn render(file: &str, src: &str, diags: &[Diagnostic]) -> String {
    let file = printable(file, false);
    let index = LineIndex::new(src);
    let mut out = String::new();
    for d in diags {
        let loc = index.loc(d.span.start);
        let level = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let _ = writeln!(out, "{level}[{}]: {}", d.rule, printable(&d.message, true));
        let _ = writeln!(out, "  --> {file}:{}:{}", loc.line, loc.col);
        let (raw_text, line_start) = index.line_text(loc.line);
        // Secrets are masked; control characters are escaped (each char becomes one or more);
        // tabs are kept, also in the caret's padding, so that it lines up.
        let shown: Vec<String> = raw_text
            .char_indices()
            .map(|(i, c)| match &d.redact {
                Some(r) if r.contains(&(line_start + i)) && c != '\t' => "*".to_string(),
                _ if c == '\t' => "\t".to_string(),
                _ => printable(c.encode_utf8(&mut [0; 4]), false).into_owned(),
            })
            .collect();
        let text: String = shown.concat();
        let padding: String = shown
            .iter()
            .take(loc.col as usize - 1)
            .flat_map(|c| c.chars())
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        let gutter = loc.line.to_string().len();
        // Underline to the end of the span, but only on its first line.
        let span_on_line = src[d.span.start.min(src.len())..d.span.end.min(src.len())]
            .lines()
            .next()
            .map(|s| {
                // As wide as the span is shown (escapes are wider than what they stand for).
                shown
                    .iter()
                    .skip(loc.col as usize - 1)
                    .take(s.chars().count())
                    .map(|c| c.chars().count())
                    .sum::<usize>()
            })
            .unwrap_or(0)
            .max(1);
        let _ = writeln!(out, "{:gutter$} |", "");
        let _ = writeln!(out, "{} | {text}", loc.line);
        let _ = writeln!(
            out,
            "{:gutter$} | {padding}{}",
            "",
            "^".repeat(span_on_line)
        );
        if let Some(h) = &d.hint {
            let _ = writeln!(out, "{:gutter$} = hint: {}", "", printable(h, true));
        }
        out.push('\n');
    }
    let errors = diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let warnings = diags.len() - errors;
    let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
    if errors > 0 {
        let _ = writeln!(
            out,
            "{file}: {} and {}.",
            plural(errors, "error"),
            plural(warnings, "warning")
        );
    } else if warnings > 0 {
        let _ = writeln!(out, "{file}: valid, with {}.", plural(warnings, "warning"));
    }
    out
}

/// `s` safe to print on a terminal: control characters (escape sequences, carriage returns,
/// C1 codes) and the bidirectional overrides that reorder what is shown are written as
/// escapes (`\u{1b}`, `\r`, `\t`), so that a label, a note or a name cannot move the cursor
/// or rewrite what is on screen. With `keep_newlines`, `\n` stays (a whole output); a value
/// printed in a cell or a field escapes it too. JSON output is never passed through this.
pub fn printable(s: &str, keep_newlines: bool) -> Cow<'_, str> {
    let escaped = |c: char| {
        (c.is_control() && !(keep_newlines && c == '\n'))
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !s.chars().any(escaped) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if escaped(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The closest candidate by edit distance, when it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min()
        .map(|(_, c)| c)
}

/// The number of single-character edits between two words.
pub fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_count_lines_and_characters_from_one() {
        let src = "a = 1\nbé = 2\n";
        let idx = LineIndex::new(src);
        assert_eq!(idx.loc(0), Loc { line: 1, col: 1 });
        assert_eq!(idx.loc(src.find('=').unwrap()), Loc { line: 1, col: 3 });
        let second_eq = src.rfind('=').unwrap();
        assert_eq!(idx.loc(second_eq), Loc { line: 2, col: 4 });
    }

    #[test]
    fn a_location_does_not_depend_on_the_look_ups_before_it() {
        // 300 lines, some with a character of two bytes; offsets looked up in file order,
        // backwards and jumping, against counting from the start each time.
        let src: String = (0..300)
            .map(|i| {
                if i % 7 == 0 {
                    format!("é{i} = 1\n")
                } else {
                    format!("k{i} = 2\n")
                }
            })
            .collect();
        let plain = |offset: usize| {
            let before = &src[..offset];
            let line = before.matches('\n').count() as u32 + 1;
            let start = before.rfind('\n').map_or(0, |i| i + 1);
            let col = src[start..offset].chars().count() as u32 + 1;
            Loc { line, col }
        };
        let offsets: Vec<usize> = src.match_indices('=').map(|(i, _)| i).collect();
        let idx = LineIndex::new(&src);
        let jumps = offsets
            .iter()
            .step_by(37)
            .chain(offsets.iter().rev().step_by(5));
        for &o in offsets.iter().chain(jumps).chain([&0, &src.len()]) {
            assert_eq!(idx.loc(o), plain(o), "offset {o}");
        }
    }

    #[test]
    fn suggestions_only_for_close_words() {
        let keys = ["retention", "timezone", "daily_at"];
        assert_eq!(did_you_mean("retension", keys), Some("retention"));
        assert_eq!(did_you_mean("time_zone", keys), Some("timezone"));
        assert_eq!(did_you_mean("colour", keys), None);
    }

    #[test]
    fn control_characters_are_escaped_and_the_caret_still_lines_up() {
        let src = "a\u{7}b = \"\u{1b}[2J\"\n";
        let after = Diagnostic::error("x", 2..3, "m\u{1b}[2J");
        let on = Diagnostic::error("x", 7..8, "m").hint("h\u{9b}");
        let out = render("f\u{1b}.toml", src, &[after, on]);
        assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
        assert!(out.contains("error[x]: m\\u{1b}[2J\n"), "{out}");
        assert!(out.contains("  --> f\\u{1b}.toml:1:3\n"), "{out}");
        assert!(
            out.contains("1 | a\\u{7}b = \"\\u{1b}[2J\"\n  |       ^\n"),
            "{out}"
        );
        assert!(out.contains("\n  |            ^^^^^^\n"), "{out}");
        assert!(out.contains("= hint: h\\u{9b}\n"), "{out}");
        assert_eq!(printable("a\tb\nc", true), "a\\tb\nc");
        assert_eq!(printable("a\tb\nc", false), "a\\tb\\nc");
        assert_eq!(printable("\u{202e}x", false), "\\u{202e}x");
    }

    #[test]
    fn rendering_points_at_the_span() {
        let src = "[schedule]\nretension = \"3d\"\n";
        let d = Diagnostic::error("unknown-key", 11..20, "unknown key `retension`")
            .hint("did you mean `retention`?");
        let out = render("f.toml", src, &[d]);
        assert!(out.contains("  --> f.toml:2:1\n"), "{out}");
        assert!(
            out.contains("2 | retension = \"3d\"\n  | ^^^^^^^^^\n"),
            "{out}"
        );
        assert!(out.contains("= hint: did you mean `retention`?"), "{out}");
    }
}
