//! # Kairos
//!
//! A complex event processing engine: users write patterns ("a deposit, three low-odds bets and
//! a withdrawal within 30 minutes") in a small language, Kairos compiles them to automata and runs
//! them over streams of events, per key, emitting a record the moment a match completes.
//!
//! The pieces, in the order an event meets them:
//!
//! - [`lang`]: the pattern language (lexer, parser, diagnostics with `file:line:col`).
//! - [`compile`]: name resolution, type checks and the automaton of each pattern.
//! - [`event`]: values, events and the JSON decoder that extracts only the fields patterns use.
//! - [`engine`]: the matcher: partial matches per key, windows, skip strategies, records.
//! - [`io`]: reading recorded inputs (`kairos replay`) and writing records.
//! - [`table`]: memory-mapped lookup tables: file format, builder, reader, hot swap.
//!
//! ```
//! use kairos::compile::{compile, CompileOptions, Source};
//! let text = std::fs::read_to_string("patterns/rising_stakes.cep").unwrap();
//! let program = compile(&[Source { file: "rising_stakes.cep", text: &text }], &CompileOptions::default()).unwrap();
//! assert!(!program.patterns.is_empty());
//! ```

pub mod compile;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod engine;
pub mod event;
pub mod io;
pub mod lang;
pub mod metrics;
pub mod pipeline;
pub mod ring;
pub mod table;
pub mod workload;

/// The README's examples, compiled and run as documentation tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
