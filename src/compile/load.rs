//! Loading pattern files from paths (files or directories of `*.cep`).

use super::{compile, CompileOptions, Program, Source};
use crate::lang::Diagnostics;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no pattern files (*.cep) found")]
    Empty { path: PathBuf },
    #[error("{0}")]
    Compile(#[from] Diagnostics),
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

/// Reads and compiles every pattern file under `paths`.
pub fn load(paths: &[PathBuf], opts: &CompileOptions) -> Result<Program, LoadError> {
    let mut files = Vec::new();
    for p in paths {
        files.extend(pattern_files(p)?);
    }
    let mut texts = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).map_err(|source| LoadError::Io {
            path: f.clone(),
            source,
        })?;
        texts.push((f.display().to_string(), text));
    }
    let sources: Vec<Source<'_>> = texts
        .iter()
        .map(|(file, text)| Source { file, text })
        .collect();
    Ok(compile(&sources, opts)?)
}
