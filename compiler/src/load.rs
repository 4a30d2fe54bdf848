//! Loading a program from disk: read the entry file, parse it, follow `use` items
//! (relative to the using file) depth-first, each file once, and reject cycles.
//!
//! Invariant: the returned files are in dependency order is not required — the checker
//! treats names globally — but each canonical path appears once.

use std::path::{Path, PathBuf};
use tfm_dsl::ast::{File, Item};
use tfm_dsl::{Diagnostic, Diagnostics, FileId, SourceMap, Span};

/// Parsed files of one program and their sources.
pub struct Loaded {
    /// Source texts.
    pub sources: SourceMap,
    /// Parsed files, entry first.
    pub files: Vec<(FileId, File)>,
}

/// Reads and parses `path` and every file it uses (on a large-stack thread, like every
/// public entry point of the front end).
pub fn load_files(path: &Path) -> Result<Loaded, Diagnostics> {
    crate::with_stack(|| load_files_here(path))
}

fn load_files_here(path: &Path) -> Result<Loaded, Diagnostics> {
    let mut l = Loader { sources: SourceMap::new(), files: Vec::new(), stack: Vec::new(), errors: Vec::new() };
    l.load(path, path.display().to_string(), None);
    l.finish()
}

/// Parses `text` as a file named `name`; `use` paths resolve against the current directory.
pub fn load_text(name: &str, text: &str) -> Result<Loaded, Diagnostics> {
    crate::with_stack(|| load_text_here(name, text))
}

fn load_text_here(name: &str, text: &str) -> Result<Loaded, Diagnostics> {
    let mut l = Loader { sources: SourceMap::new(), files: Vec::new(), stack: Vec::new(), errors: Vec::new() };
    let id = l.sources.add(name, None, text.to_string());
    l.parse_and_follow(id, Path::new("."));
    l.finish()
}

struct Loader {
    sources: SourceMap,
    files: Vec<(FileId, File)>,
    /// Files being loaded (canonical path, display name), outermost first.
    stack: Vec<(PathBuf, String)>,
    errors: Vec<Diagnostic>,
}

impl Loader {
    fn finish(self) -> Result<Loaded, Diagnostics> {
        if self.errors.is_empty() {
            Ok(Loaded { sources: self.sources, files: self.files })
        } else {
            Err(Diagnostics { items: self.errors, sources: self.sources })
        }
    }

    fn load(&mut self, path: &Path, display: String, from: Option<Span>) {
        let canon = match std::fs::canonicalize(path) {
            Ok(c) => c,
            Err(e) => return self.io_error(&display, &e, from, true),
        };
        if let Some(at) = self.stack.iter().position(|(c, _)| *c == canon) {
            let mut chain: Vec<&str> = self.stack[at..].iter().map(|(_, n)| n.as_str()).collect();
            chain.push(&self.stack[at].1);
            let d = match from {
                Some(s) => Diagnostic::error(format!("`use` cycle: {}", chain.join(" → ")), s, "cycle closes here")
                    .with_hint("files may not use each other in a cycle; move shared kernels to a third file"),
                None => Diagnostic::error_nospan(format!("`use` cycle through '{display}'")),
            };
            self.errors.push(d);
            return;
        }
        if self.sources.find_path(&canon).is_some() {
            return; // already loaded through another `use`
        }
        let text = match read_source(path) {
            Ok(t) => t,
            Err(e) => return self.io_error(&display, &e, from, false),
        };
        let id = self.sources.add(display.clone(), Some(&canon), text);
        let dir = canon.parent().map(Path::to_path_buf).unwrap_or_default();
        self.stack.push((canon, display));
        self.parse_and_follow(id, &dir);
        self.stack.pop();
    }

    fn parse_and_follow(&mut self, id: FileId, dir: &Path) {
        let text = self.sources.get(id).text.clone();
        let file = match tfm_dsl::parse_file(&text, id) {
            Ok(f) => f,
            Err(d) => {
                self.errors.push(d);
                return;
            }
        };
        let uses: Vec<(String, Span)> =
            file.items.iter().filter_map(|i| if let Item::Use(u) = i { Some((u.path.clone(), u.span)) } else { None }).collect();
        self.files.push((id, file));
        for (p, span) in uses {
            let target = dir.join(&p);
            self.load(&target, display_name(&target), Some(span));
        }
    }

    /// A file that cannot be read; `missing` when it was not found (then a `use` gets a hint
    /// on how its path resolves).
    fn io_error(&mut self, display: &str, e: &dyn std::fmt::Display, from: Option<Span>, missing: bool) {
        let display = &visible(display);
        let d = match from {
            Some(s) if missing => Diagnostic::error(format!("cannot read '{display}': {e}"), s, "used here")
                .with_hint("`use` paths are relative to the file that contains them"),
            Some(s) => Diagnostic::error(format!("cannot read '{display}': {e}"), s, "used here"),
            None => Diagnostic::error_nospan(format!("cannot read '{display}': {e}")),
        };
        self.errors.push(d);
    }
}

/// The largest source file read, in bytes. Larger files (and endless ones) are refused before
/// they are read whole.
pub const MAX_SOURCE_BYTES: u64 = 16 << 20;

/// Reads a source file: a regular file (a device, FIFO or directory is refused before it is
/// opened, so `/dev/zero` or a pipe cannot stall or exhaust memory) of at most
/// [`MAX_SOURCE_BYTES`] (checked while reading too, for files whose size is not known up front),
/// in UTF-8.
fn read_source(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() { "a directory" } else { "not a regular file" };
        return Err(format!("{what}; a source must be a regular .tfm file"));
    }
    let too_large = || format!("larger than {MAX_SOURCE_BYTES} bytes, the limit for a source file");
    if meta.len() > MAX_SOURCE_BYTES {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    file.take(MAX_SOURCE_BYTES + 1).read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_SOURCE_BYTES {
        return Err(too_large());
    }
    String::from_utf8(bytes).map_err(|e| format!("not valid UTF-8 (at byte {})", e.utf8_error().valid_up_to()))
}

/// `name` with every invisible character (NUL, controls, zero-width marks) written as
/// `\u{..}`, so a diagnostic never echoes one raw.
fn visible(name: &str) -> String {
    name.chars().map(|c| if tfm_dsl::diagnostic::is_invisible(c) { c.escape_unicode().to_string() } else { c.to_string() }).collect()
}

/// How a used file is named in diagnostics: relative to the working directory when it is
/// under it, with `.` and `..` resolved.
fn display_name(path: &Path) -> String {
    let full = std::fs::canonicalize(path).unwrap_or_else(|_| normalize(path));
    let rel = std::env::current_dir().ok().and_then(|cwd| {
        let cwd = std::fs::canonicalize(&cwd).unwrap_or(cwd);
        full.strip_prefix(&cwd).ok().map(Path::to_path_buf)
    });
    rel.unwrap_or(full).display().to_string()
}

/// Resolves `.` and `..` lexically (for paths that do not exist).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}
