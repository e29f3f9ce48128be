//! Loading pattern files from paths (files or directories of `*.cep`).
//!
//! A pattern or configuration file is read whole, so its size is bounded
//! ([`MAX_SOURCE_BYTES`]): no more than one byte past the limit is ever read, so a path such as
//! `/dev/zero` is an error, not a process that grows without end. The text must be UTF-8 (the
//! first byte that is not is reported with its line and column); a byte-order mark at its start
//! is skipped.

use super::{compile, CompileOptions, Program, Source};
use crate::lang::{lexer::BOM, Diagnostic, Diagnostics, Span};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The largest pattern or configuration file Kairos reads: 1 MiB.
pub const MAX_SOURCE_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no pattern files (*.cep) found")]
    Empty { path: PathBuf },
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{0}")]
    Compile(#[from] Diagnostics),
}

/// Why a pattern or configuration file could not be read as text.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{}: the file is larger than {limit} bytes, the most Kairos reads from a pattern or \
         configuration file",
        path.display()
    )]
    TooLarge { path: PathBuf, limit: u64 },
}

/// Reads at most `limit` bytes of the file at `path` (one more byte to tell that there are more:
/// then the file is [`SourceError::TooLarge`]).
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, SourceError> {
    let io = |source| SourceError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(SourceError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(bytes)
}

/// The text of a file read by [`read_bounded`], without a leading byte-order mark; where it is
/// not UTF-8, an error (named `file`) at the line and column of the first byte that is not.
pub fn source_text(file: &str, mut bytes: Vec<u8>) -> Result<String, Box<Diagnostic>> {
    if bytes.starts_with(BOM.as_bytes()) {
        bytes.drain(..BOM.len());
    }
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let at = e.utf8_error().valid_up_to();
        let valid = std::str::from_utf8(&bytes[..at]).expect("valid up to `at`");
        let d = Diagnostic::at(
            file,
            valid,
            Span::new(at, at + 1),
            format!("the file is not valid UTF-8 (byte 0x{:02x})", bytes[at]),
        );
        Box::new(d.with_hint("save the file as UTF-8"))
    })
}

/// The pattern files a path names: the file itself, or every `*.cep` in a directory, sorted.
pub fn pattern_files(path: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let io = |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    };
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "cep"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(LoadError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(files)
    } else {
        std::fs::metadata(path).map_err(io)?;
        Ok(vec![path.to_path_buf()])
    }
}

/// Reads and compiles every pattern file under `paths`. A file that is not UTF-8 is an error
/// of that file, reported with the compile errors of the others.
pub fn load(paths: &[PathBuf], opts: &CompileOptions) -> Result<Program, LoadError> {
    let mut files = Vec::new();
    for p in paths {
        files.extend(pattern_files(p)?);
    }
    let mut texts = Vec::new();
    let mut unreadable = Vec::new();
    for f in &files {
        let name = f.display().to_string();
        match source_text(&name, read_bounded(f, MAX_SOURCE_BYTES)?) {
            Ok(text) => texts.push((name, text)),
            Err(d) => unreadable.push(*d),
        }
    }
    let sources: Vec<Source<'_>> = texts
        .iter()
        .map(|(file, text)| Source { file, text })
        .collect();
    if unreadable.is_empty() {
        return Ok(compile(&sources, opts)?);
    }
    if !sources.is_empty() {
        if let Err(Diagnostics(more)) = compile(&sources, opts) {
            unreadable.extend(more);
        }
    }
    Err(Diagnostics(unreadable).into())
}
