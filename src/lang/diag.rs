//! Diagnostics: `file:line:col: message`, the offending line, and a caret under the place.

use std::fmt;

/// A byte range in a source file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        Span {
            start: start as u32,
            end: end.max(start) as u32,
        }
    }
    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

/// One error in a pattern file, located to the line and column.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub col: usize,
    /// Width of the caret underline, at least 1.
    pub width: usize,
    pub message: String,
    pub hint: Option<String>,
    /// The text of the offending line around the column, for the caret display: from character
    /// [`Diagnostic::snippet_start`]`(col)` of the line (its start, unless the column is far into
    /// the line), at most [`SNIPPET_WIDTH`] + 1 characters (the one more tells the display that
    /// the line goes on). A long line is not copied whole into every error it holds.
    pub line_text: String,
}

/// Characters of the line shown before the column of an error.
pub const SNIPPET_BEFORE: usize = 80;
/// Characters of the line shown in all, from [`Diagnostic::snippet_start`].
pub const SNIPPET_WIDTH: usize = 120;
/// Errors listed per file; the rest are counted ("and N more errors in FILE").
pub const MAX_ERRORS_PER_FILE: usize = 100;

impl Diagnostic {
    /// Locates `span` in `source` and builds the diagnostic. A byte-order mark at the start of
    /// `source` is not part of its first line.
    ///
    /// Its cost is a scan of `source` up to the span for newlines, and of the span's line up to
    /// it for characters (both at memory speed), plus the few characters kept around the
    /// column: a file with thousands of errors on one long line is reported at once.
    pub fn at(file: &str, source: &str, span: Span, message: impl Into<String>) -> Self {
        let bom = if source.starts_with(super::lexer::BOM) {
            super::lexer::BOM.len()
        } else {
            0
        };
        // A span inside the mark (none is) is taken to be just after it.
        let start = (span.start as usize).clamp(bom, source.len().max(bom));
        let bytes = source.as_bytes();
        let line_start = memchr::memrchr(b'\n', &bytes[..start]).map_or(bom, |i| i + 1);
        let line_end = memchr::memchr(b'\n', &bytes[start..]).map_or(source.len(), |i| start + i);
        let line = memchr::memchr_iter(b'\n', &bytes[..line_start]).count() + 1;
        let col = char_count(&bytes[line_start..start]) + 1;
        let end = (span.end as usize).clamp(start, line_end);
        let width = char_count(&bytes[start..end]).max(1);
        // The snippet starts `SNIPPET_BEFORE` characters before the column (or at the line's
        // start): found by walking back from the column, not forward from the line's start.
        let before = source[line_start..start]
            .char_indices()
            .rev()
            .nth(SNIPPET_BEFORE - 1)
            .map_or(line_start, |(i, _)| line_start + i);
        debug_assert_eq!(
            char_count(&bytes[line_start..before]),
            Diagnostic::snippet_start(col)
        );
        let text = source[line_start..line_end].trim_end_matches('\r');
        Diagnostic {
            file: file.to_string(),
            line,
            col,
            width,
            message: message.into(),
            hint: None,
            line_text: text
                .get(before - line_start..)
                .unwrap_or_default()
                .chars()
                .take(SNIPPET_WIDTH + 1)
                .collect(),
        }
    }

    /// The character of its line from which a diagnostic at column `col` keeps the line's text:
    /// [`SNIPPET_BEFORE`] characters before the column.
    pub fn snippet_start(col: usize) -> usize {
        col.saturating_sub(1).saturating_sub(SNIPPET_BEFORE)
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}:{}:{}: error: {}",
            self.file, self.line, self.col, self.message
        )?;
        let num = self.line.to_string();
        let pad = " ".repeat(num.len());
        let skipped = Diagnostic::snippet_start(self.col) > 0;
        let cut = self.line_text.chars().count() > SNIPPET_WIDTH;
        let shown: String = self.line_text.chars().take(SNIPPET_WIDTH).collect();
        let (before, after) = (
            if skipped { "..." } else { "" },
            if cut { "..." } else { "" },
        );
        writeln!(f, "{pad} |")?;
        writeln!(f, "{num} | {before}{shown}{after}")?;
        let into = (self.col - 1).min(SNIPPET_BEFORE);
        let lead: String = before
            .chars()
            .chain(shown.chars().take(into))
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        let width = self.width.min(SNIPPET_WIDTH.saturating_sub(into)).max(1);
        write!(f, "{pad} | {lead}{}", "^".repeat(width))?;
        if let Some(h) = &self.hint {
            write!(f, "\n{pad} = hint: {h}")?;
        }
        Ok(())
    }
}

/// The characters of UTF-8 `bytes`: the bytes that do not continue a character.
fn char_count(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| (b as i8) >= -0x40).count()
}

/// Every error found in a set of pattern files.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    /// Every error, up to [`MAX_ERRORS_PER_FILE`] per file (the rest of a file's are counted
    /// after its last one shown), then the total.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Per file: how many errors it has, and the index of its last one.
        let mut files: Vec<(&str, usize, usize)> = Vec::new();
        for (i, d) in self.0.iter().enumerate() {
            match files.iter_mut().find(|(name, _, _)| *name == d.file) {
                Some(entry) => (entry.1, entry.2) = (entry.1 + 1, i),
                None => files.push((&d.file, 1, i)),
            }
        }
        let mut shown: Vec<usize> = vec![0; files.len()];
        let mut first = true;
        for (i, d) in self.0.iter().enumerate() {
            let k = files
                .iter()
                .position(|(name, _, _)| *name == d.file)
                .expect("every file was counted");
            if shown[k] < MAX_ERRORS_PER_FILE {
                shown[k] += 1;
                if !first {
                    writeln!(f)?;
                }
                first = false;
                writeln!(f, "{d}")?;
            }
            let (name, count, last) = files[k];
            if i == last && count > MAX_ERRORS_PER_FILE {
                let more = count - MAX_ERRORS_PER_FILE;
                writeln!(
                    f,
                    "\n{name}: and {more} more error{} (the first {MAX_ERRORS_PER_FILE} are listed)",
                    if more == 1 { "" } else { "s" }
                )?;
            }
        }
        let n = self.0.len();
        write!(f, "{n} error{} in patterns", if n == 1 { "" } else { "s" })
    }
}
