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

/// Renders diagnostics as rustc-style text, in order, separated by blank lines.
pub fn render_all(diags: &[Diagnostic], sources: &SourceMap) -> String {
    let mut files = SimpleFiles::new();
    let ids: Vec<usize> = sources.files().map(|(_, f)| files.add(f.name.clone(), f.text.clone())).collect();
    let config = term::Config::default();
    let mut out = String::new();
    for d in diags {
        let severity = match d.severity {
            Severity::Error => CsSeverity::Error,
            Severity::Warning => CsSeverity::Warning,
        };
        let mut labels = Vec::new();
        let file_of = |s: Span| ids.get(s.file.0 as usize).copied();
        if let Some(p) = &d.primary
            && let Some(f) = file_of(p.span)
        {
            labels.push(CsLabel::primary(f, p.span.range()).with_message(&p.message));
        }
        for l in &d.secondary {
            if let Some(f) = file_of(l.span) {
                labels.push(CsLabel::secondary(f, l.span.range()).with_message(&l.message));
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
