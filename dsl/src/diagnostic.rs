//! Diagnostics: an error or warning with a primary span, secondary labels and hints,
//! rendered like rustc (via codespan-reporting, without colour so output is stable).
//!
//! Invariants: messages are lowercase and carry no trailing period; every diagnostic has a
//! primary span except those about whole files (I/O), which name the path in the message.

use crate::span::{SourceMap, Span};
use codespan_reporting::diagnostic::{Diagnostic as CsDiagnostic, Label as CsLabel, Severity as CsSeverity};
use codespan_reporting::files::SimpleFiles;
use codespan_reporting::term;

/// How bad it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// The program is rejected.
    Error,
    /// The program is accepted but probably not what was meant.
    Warning,
}

/// A labelled span.
#[derive(Clone, Debug, PartialEq)]
pub struct Label {
    /// Where.
    pub span: Span,
    /// What to say there (may be empty).
    pub message: String,
}

/// One diagnostic.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The headline, lowercase, no trailing period.
    pub message: String,
    /// The primary label (the `^^^` one).
    pub primary: Option<Label>,
    /// Related places (`---`).
    pub secondary: Vec<Label>,
    /// `= hint: ...` lines.
    pub hints: Vec<String>,
    /// `= note: ...` lines.
    pub notes: Vec<String>,
}

impl Diagnostic {
    /// An error whose primary label is `span` with `label`.
    pub fn error(message: impl Into<String>, span: Span, label: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            message: message.into(),
            primary: Some(Label { span, message: label.into() }),
            secondary: Vec::new(),
            hints: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// An error about no particular place (e.g. a file that cannot be read).
    pub fn error_nospan(message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            message: message.into(),
            primary: None,
            secondary: Vec::new(),
            hints: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// A warning at `span`.
    pub fn warning(message: impl Into<String>, span: Span, label: impl Into<String>) -> Diagnostic {
        Diagnostic { severity: Severity::Warning, ..Diagnostic::error(message, span, label) }
    }

    /// Adds a secondary label.
    pub fn with_label(mut self, span: Span, message: impl Into<String>) -> Diagnostic {
        self.secondary.push(Label { span, message: message.into() });
        self
    }

    /// Adds a `hint:` line.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hints.push(hint.into());
        self
    }

    /// Adds a `note:` line.
    pub fn with_note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }

    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Renders this diagnostic as rustc-style text.
    pub fn render(&self, sources: &SourceMap) -> String {
        render_all(std::slice::from_ref(self), sources)
    }
}

/// True for characters a terminal would not show (or would act on): controls other than tab,
/// newline and carriage return, the byte-order mark and other zero-width or direction marks.
/// Diagnostics name these by code point instead of echoing them.
pub fn is_invisible(c: char) -> bool {
    (c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
        || matches!(c, '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{feff}')
}

/// A file's text as shown in snippets: each invisible character replaced by a visible stand-in
/// (`␀` for NUL, the control pictures for other C0 controls, nothing for a byte-order mark
/// that opens the file, `<U+XXXX>` otherwise), with the
/// byte offset where each replacement starts and how many bytes the text has grown there.
struct Shown {
    text: String,
    /// (offset in the original text, growth in bytes after this replacement), ascending.
    shifts: Vec<(usize, isize)>,
}

impl Shown {
    fn new(text: &str) -> Shown {
        if !text.chars().any(is_invisible) {
            return Shown { text: text.to_string(), shifts: Vec::new() };
        }
        let mut out = String::with_capacity(text.len());
        let mut shifts = Vec::new();
        let mut growth = 0isize;
        for (at, c) in text.char_indices() {
            if !is_invisible(c) {
                out.push(c);
                continue;
            }
            let code = u32::from(c);
            let stand_in = match code {
                // A byte-order mark opening the file is accepted and shown as nothing.
                0xfeff if at == 0 => String::new(),
                0..=0x1f => char::from_u32(0x2400 + code).map(String::from).unwrap_or_default(),
                0x7f => "\u{2421}".to_string(),
                _ => format!("<U+{code:04X}>"),
            };
            out.push_str(&stand_in);
            growth += stand_in.len() as isize - c.len_utf8() as isize;
            shifts.push((at, growth));
        }
        Shown { text: out, shifts }
    }

    /// Where offset `pos` of the original text is in the shown text.
    fn map(&self, pos: usize) -> usize {
        // Replacements that start before `pos` moved it.
        let k = self.shifts.partition_point(|(at, _)| *at < pos);
        let growth = if k == 0 { 0 } else { self.shifts[k - 1].1 };
        pos.saturating_add_signed(growth)
    }

    fn range(&self, span: Span) -> std::ops::Range<usize> {
        let r = span.range();
        self.map(r.start)..self.map(r.end)
    }
}

/// Renders diagnostics as rustc-style text, in order, separated by blank lines. Invisible
/// characters in the quoted source lines are shown by stand-ins (see [`is_invisible`]).
pub fn render_all(diags: &[Diagnostic], sources: &SourceMap) -> String {
    let mut files = SimpleFiles::new();
    let shown: Vec<Shown> = sources.files().map(|(_, f)| Shown::new(&f.text)).collect();
    let ids: Vec<usize> = sources.files().zip(&shown).map(|((_, f), s)| files.add(f.name.clone(), s.text.clone())).collect();
    let config = term::Config::default();
    let mut out = String::new();
    for d in diags {
        let severity = match d.severity {
            Severity::Error => CsSeverity::Error,
            Severity::Warning => CsSeverity::Warning,
        };
        let mut labels = Vec::new();
        let file_of = |s: Span| ids.get(s.file.0 as usize).copied().zip(shown.get(s.file.0 as usize));
        if let Some(p) = &d.primary
            && let Some((f, sh)) = file_of(p.span)
        {
            labels.push(CsLabel::primary(f, sh.range(p.span)).with_message(&p.message));
        }
        for l in &d.secondary {
            if let Some((f, sh)) = file_of(l.span) {
                labels.push(CsLabel::secondary(f, sh.range(l.span)).with_message(&l.message));
            }
        }
        let mut notes: Vec<String> = d.hints.iter().map(|h| format!("hint: {h}")).collect();
        notes.extend(d.notes.iter().map(|n| format!("note: {n}")));
        let cs = CsDiagnostic::new(severity).with_message(&d.message).with_labels(labels).with_notes(notes);
        // Writing to a String cannot fail; a span outside its file is the only error source,
        // and then we fall back to the bare message rather than lose the diagnostic.
        if term::emit_to_string(&mut out, &config, &files, &cs).is_err() {
            out.push_str(&format!("{}: {}\n", if d.is_error() { "error" } else { "warning" }, d.message));
        }
    }
    out
}

/// A list of diagnostics together with the sources they point into.
#[derive(Clone, Debug, Default)]
pub struct Diagnostics {
    /// The diagnostics, in the order they were found.
    pub items: Vec<Diagnostic>,
    /// The files their spans refer to.
    pub sources: SourceMap,
}

impl Diagnostics {
    /// True if any is an error.
    pub fn has_errors(&self) -> bool {
        self.items.iter().any(Diagnostic::is_error)
    }

    /// Rendered text of all diagnostics.
    pub fn render(&self) -> String {
        render_all(&self.items, &self.sources)
    }
}

impl std::fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render())
    }
}

impl std::error::Error for Diagnostics {}
