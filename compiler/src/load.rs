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

/// Reads and parses `path` and every file it uses.
pub fn load_files(path: &Path) -> Result<Loaded, Diagnostics> {
    let mut l = Loader { sources: SourceMap::new(), files: Vec::new(), stack: Vec::new(), errors: Vec::new() };
    l.load(path, path.display().to_string(), None);
    l.finish()
}

/// Parses `text` as a file named `name`; `use` paths resolve against the current directory.
pub fn load_text(name: &str, text: &str) -> Result<Loaded, Diagnostics> {
    let mut l = Loader { sources: SourceMap::new(), files: Vec::new(), stack: Vec::new(), errors: Vec::new() };
    let id = l.sources.add(name, None, text.to_string());
    l.parse_and_follow(id, Path::new("."));
    l.finish()
}

struct Loader {
    sources: SourceMap,
    files: Vec<(FileId, File)>,
    stack: Vec<PathBuf>,
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
            Err(e) => return self.io_error(&display, &e, from),
        };
        if self.stack.contains(&canon) {
            let d = match from {
                Some(s) => Diagnostic::error(format!("`use` cycle: '{display}' uses itself"), s, "cycle closes here")
                    .with_hint("files may not use each other in a cycle; move shared kernels to a third file"),
                None => Diagnostic::error_nospan(format!("`use` cycle through '{display}'")),
            };
            self.errors.push(d);
            return;
        }
        if self.sources.find_path(&canon).is_some() {
            return; // already loaded through another `use`
        }
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => return self.io_error(&display, &e, from),
        };
        let id = self.sources.add(display, Some(&canon), text);
        let dir = canon.parent().map(Path::to_path_buf).unwrap_or_default();
        self.stack.push(canon);
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
            self.load(&target, target.display().to_string(), Some(span));
        }
    }

    fn io_error(&mut self, display: &str, e: &std::io::Error, from: Option<Span>) {
        let d = match from {
            Some(s) => Diagnostic::error(format!("cannot read '{display}': {e}"), s, "used here")
                .with_hint("`use` paths are relative to the file that contains them"),
            None => Diagnostic::error_nospan(format!("cannot read '{display}': {e}")),
        };
        self.errors.push(d);
    }
}
