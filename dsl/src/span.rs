//! Source files and spans.
//!
//! A [`SourceMap`] owns the text of every file that was read; a [`Span`] is a byte range in
//! one of them. Spans are only meaningful together with the map that issued their file id.

use std::path::{Path, PathBuf};

/// Identifies a file in a [`SourceMap`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FileId(pub u32);

/// A byte range `start..end` in one source file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Span {
    /// The file.
    pub file: FileId,
    /// First byte.
    pub start: u32,
    /// One past the last byte.
    pub end: u32,
}

impl Span {
    /// A span in `file` covering `start..end`.
    pub fn new(file: FileId, start: usize, end: usize) -> Span {
        // Files are capped at u32::MAX bytes when they are added to the map.
        Span { file, start: start as u32, end: end as u32 }
    }

    /// The smallest span covering both (same file assumed; `self`'s file wins).
    pub fn to(self, other: Span) -> Span {
        Span { file: self.file, start: self.start.min(other.start), end: self.end.max(other.end) }
    }

    /// The byte range.
    pub fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
}

/// One source file.
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// The name shown in diagnostics (the path as given).
    pub name: String,
    /// Canonical path on disk, if it came from disk.
    pub path: Option<PathBuf>,
    /// Full text.
    pub text: String,
}

/// All source files of one compilation.
#[derive(Clone, Debug, Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

impl SourceMap {
    /// An empty map.
    pub fn new() -> SourceMap {
        SourceMap::default()
    }

    /// Adds a file and returns its id. Text beyond 4 GiB is truncated (spans are 32-bit).
    pub fn add(&mut self, name: impl Into<String>, path: Option<&Path>, mut text: String) -> FileId {
        if text.len() > u32::MAX as usize {
            let mut cut = u32::MAX as usize;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        self.files.push(SourceFile { name: name.into(), path: path.map(Path::to_path_buf), text });
        FileId(self.files.len() as u32 - 1)
    }

    /// The file with this id.
    ///
    /// # Panics
    /// If the id was not issued by this map (a programming error).
    pub fn get(&self, id: FileId) -> &SourceFile {
        &self.files[id.0 as usize]
    }

    /// All files in insertion order.
    pub fn files(&self) -> impl Iterator<Item = (FileId, &SourceFile)> {
        self.files.iter().enumerate().map(|(i, f)| (FileId(i as u32), f))
    }

    /// The text a span covers.
    pub fn snippet(&self, span: Span) -> &str {
        self.get(span.file).text.get(span.range()).unwrap_or("")
    }

    /// The file id whose canonical path is `path`, if it was added.
    pub fn find_path(&self, path: &Path) -> Option<FileId> {
        self.files().find(|(_, f)| f.path.as_deref() == Some(path)).map(|(id, _)| id)
    }
}
