//! The `kairos` command line. Thin: every command is a call into the library.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use kairos::compile::load::{load, LoadError};
use kairos::compile::CompileOptions;
use kairos::engine::EngineOptions;
use kairos::event::TimeUnit;
use kairos::io::replay::{
    replay_sharded_with, replay_with, Input, ReadOptions, DEFAULT_MAX_LINE_BYTES,
};
use kairos::pipeline::Layout;
use kairos::ring::WaitStrategy;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "kairos",
    version,
    about = "Complex event processing: patterns over event streams, decisions in microseconds"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Compile pattern files and report every error, or summarise what each pattern compiled to.
    Check {
        /// Pattern files, or directories of *.cep files.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Print only errors.
        #[arg(long, short)]
        quiet: bool,
        /// A lookup table the patterns may read: `NAME=FILE` (built by `kairos table build`).
        #[arg(long = "table", short = 't')]
        tables: Vec<String>,
    },
    /// Run patterns over recorded JSON-lines files (a backtest) and print the matches.
    Replay {
        /// Pattern files, or directories of *.cep files.
        #[arg(long = "patterns", short = 'p', required = true)]
        patterns: Vec<PathBuf>,
        /// An input, `STREAM=FILE` or `FILE` (when the patterns read one stream); `-` is
        /// standard input. A regular file is mapped; any other input (a pipe, a FIFO, standard
        /// input) is streamed, each record written as its match completes.
        #[arg(long = "input", short = 'i', required = true)]
        inputs: Vec<String>,
        /// Where to write the records (default: standard output).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Unit of numeric time fields and of `ts` in records: ms, us or ns.
        #[arg(long, default_value = "ms")]
        time_unit: String,
        /// The longest input line, in bytes (its newline not counted); a longer line is
        /// reported, counted as malformed and skipped.
        #[arg(long, default_value_t = DEFAULT_MAX_LINE_BYTES)]
        max_line_bytes: usize,
        /// The most partial matches a key may hold; the oldest beyond it are evicted.
        #[arg(long, default_value_t = EngineOptions::default().max_runs_per_key)]
        max_runs_per_key: usize,
        /// The most bytes the partial matches of one key may hold; the oldest beyond it are
        /// evicted.
        #[arg(long, default_value_t = EngineOptions::default().max_state_bytes_per_key)]
        max_state_bytes_per_key: u64,
        /// The most bytes the partial matches of every key may hold together (across the
        /// shards); beyond it the keys that hold the most lose their oldest.
        #[arg(long, default_value_t = EngineOptions::default().max_state_bytes)]
        max_state_bytes: u64,
        /// Run through the thread-per-core pipeline with this many match shards (0: one
        /// thread, no pipeline).
        #[arg(long, default_value_t = 0)]
        shards: usize,
        /// Slots of each pipeline ring.
        #[arg(long, default_value_t = 4096)]
        ring_capacity: usize,
        /// How pipeline stages wait: spin, yield or park (default: chosen from the core count).
        #[arg(long)]
        wait: Option<String>,
        /// Do not print the summary line.
        #[arg(long, short)]
        quiet: bool,
        /// A lookup table the patterns may read: `NAME=FILE` (built by `kairos table build`).
        /// Replacing the file while the replay runs swaps the table between two events.
        #[arg(long = "table", short = 't')]
        tables: Vec<String>,
    },
    /// Lookup tables: build one from CSV or JSON lines.
    Table {
        #[command(subcommand)]
        cmd: TableCmd,
    },
    /// The whole pipeline on this machine with nothing installed: an in-process Kafka cluster,
    /// a synthetic sportsbook, the example patterns, live figures.
    Demo {
        /// How long to run: 20s, 2m, ... (Ctrl-C stops it earlier).
        #[arg(long, default_value = "20s")]
        duration: String,
        /// Events offered per second.
        #[arg(long, default_value_t = 10_000)]
        rate: u64,
        /// Customers in the synthetic sportsbook.
        #[arg(long, default_value_t = 10_000)]
        keys: u64,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Match shards.
        #[arg(long, default_value_t = 1)]
        shards: usize,
    },
    /// The daemon: read Kafka topics, match, write records to Kafka topics.
    Run {
        /// The configuration file (see docs/config.md).
        #[arg(long, short)]
        config: PathBuf,
        /// Check the configuration, the patterns and the brokers, then exit.
        #[arg(long)]
        check: bool,
        /// Log as JSON lines instead of text.
        #[arg(long)]
        json_logs: bool,
    },
}

#[derive(Subcommand)]
enum TableCmd {
    /// Build a table file from CSV (with a header row) or JSON lines.
    Build {
        /// The CSV (.csv) or JSON-lines (.jsonl, .json, .ndjson) file.
        #[arg(long, short)]
        input: PathBuf,
        /// The key column.
        #[arg(long, short)]
        key: String,
        /// The table file to write (replaced atomically).
        #[arg(long, short)]
        output: PathBuf,
        /// Column types, `name:type,...` (int, float, string, bool); others are inferred.
        #[arg(long)]
        schema: Option<String>,
    },
}

/// The tables of the command line: their declarations for the compiler, and the tables.
type Tables = (
    Vec<kairos::compile::TableDecl>,
    Vec<(String, kairos::table::SharedTable)>,
);

/// Opens the `NAME=FILE` tables of the command line.
fn open_tables(specs: &[String]) -> Result<Tables> {
    let mut decls = Vec::new();
    let mut tables = Vec::new();
    for spec in specs {
        let Some((name, file)) = spec.split_once('=') else {
            bail!("--table takes NAME=FILE, not `{spec}`");
        };
        if tables.iter().any(|(n, _)| n == name) {
            bail!("--table: `{name}` is given twice");
        }
        let shared = kairos::table::SharedTable::open(file, kairos::table::OpenOptions::default())
            .with_context(|| format!("table `{name}`"))?;
        decls.push(kairos::compile::TableDecl {
            name: name.to_string(),
            schema: shared.load().schema().clone(),
        });
        tables.push((name.to_string(), shared));
    }
    Ok((decls, tables))
}

fn main() {
    let cli = Cli::parse();
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kairos: {e:#}");
            2
        }
    };
    std::process::exit(code);
}

fn compile_opts(unit: &str) -> Result<CompileOptions> {
    let Some(unit) = TimeUnit::parse(unit) else {
        bail!("--time-unit must be ms, us or ns, not `{unit}`");
    };
    Ok(CompileOptions {
        unit,
        tables: Vec::new(),
    })
}

/// Loads patterns; compile errors are printed and give exit code 1.
fn load_or_report(
    paths: &[PathBuf],
    opts: &CompileOptions,
) -> Result<Option<kairos::compile::Program>> {
    match load(paths, opts) {
        Ok(p) => Ok(Some(p)),
        Err(LoadError::Compile(d)) => {
            eprintln!("{d}");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Structured logs on stderr; `RUST_LOG` chooses what (default `info`).
fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

fn run_daemon(config: PathBuf, check: bool, json_logs: bool) -> Result<i32> {
    init_logs(json_logs);
    let config = kairos::config::Config::load(&config)?;
    if check {
        let prepared = kairos::daemon::check(config)?;
        println!(
            "ok: {} ({} patterns, {} streams, {} sinks; brokers at {} answer and hold every topic)",
            prepared.config.file,
            prepared.program.patterns.len(),
            prepared.config.streams.len(),
            prepared.config.sinks.len(),
            prepared.config.kafka.brokers
        );
        return Ok(0);
    }
    let prepared = kairos::daemon::prepare(config)?;
    let shutdown = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, shutdown.clone())
            .context("cannot install the signal handlers")?;
    }
    match kairos::daemon::run(prepared, shutdown, |_| {}) {
        Ok(r) => {
            tracing::info!(
                events = r.pipeline.events,
                records = r.pipeline.records,
                dead_letters = r.dead_letters,
                late = r.late,
                checkpoints = r.checkpoints,
                revoked_runs = r.revoked_runs,
                "stopped after draining"
            );
            Ok(0)
        }
        Err(e @ kairos::daemon::DaemonError::Delivery) => {
            tracing::error!("{e}");
            Ok(3)
        }
        Err(e @ kairos::daemon::DaemonError::Undrained { .. }) => {
            tracing::error!("{e}");
            Ok(4)
        }
        Err(e) => Err(e.into()),
    }
}

fn run_demo(opts: kairos::demo::DemoOptions) -> Result<i32> {
    // Only warnings: the status line is the demo's output.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())
            .context("cannot install the signal handlers")?;
    }
    let mut out = std::io::stderr();
    kairos::demo::run(&opts, stop, &mut out)?;
    Ok(0)
}

fn run(cli: Cli) -> Result<i32> {
    match cli.cmd {
        Cmd::Demo {
            duration,
            rate,
            keys,
            seed,
            shards,
        } => {
            let Some(duration) = kairos::config::parse_duration(&duration) else {
                bail!("--duration: `{duration}` is not a duration: write e.g. 20s or 2m");
            };
            if rate == 0 || shards == 0 {
                bail!("--rate and --shards must be at least 1");
            }
            run_demo(kairos::demo::DemoOptions {
                duration,
                rate,
                keys,
                seed,
                shards,
                ..Default::default()
            })
        }
        Cmd::Run {
            config,
            check,
            json_logs,
        } => run_daemon(config, check, json_logs),
        Cmd::Table {
            cmd:
                TableCmd::Build {
                    input,
                    key,
                    output,
                    schema,
                },
        } => {
            let mut opts = kairos::table::BuildOptions::new(&input, &key, &output);
            opts.schema = schema;
            let stats = kairos::table::build(&opts)?;
            eprintln!(
                "{}: {} rows, {} columns, {} bytes in {:.3}s",
                output.display(),
                stats.rows,
                stats.columns,
                stats.bytes,
                stats.elapsed.as_secs_f64()
            );
            Ok(0)
        }
        Cmd::Check {
            paths,
            quiet,
            tables,
        } => {
            let (decls, _) = open_tables(&tables)?;
            let opts = CompileOptions {
                tables: decls,
                ..CompileOptions::default()
            };
            let Some(prog) = load_or_report(&paths, &opts)? else {
                return Ok(1);
            };
            if !quiet {
                print!("{}", prog.summary());
            }
            println!(
                "ok: {} pattern{} compiled",
                prog.patterns.len(),
                if prog.patterns.len() == 1 { "" } else { "s" }
            );
            Ok(0)
        }
        Cmd::Replay {
            patterns,
            inputs,
            output,
            time_unit,
            max_line_bytes,
            max_runs_per_key,
            max_state_bytes_per_key,
            max_state_bytes,
            shards,
            ring_capacity,
            wait,
            quiet,
            tables,
        } => {
            let mut opts = compile_opts(&time_unit)?;
            let (decls, tables) = open_tables(&tables)?;
            opts.tables = decls;
            // Each table file is watched: a replacement is swapped in between two events, and
            // each swap or refusal is reported on stderr.
            let _watchers = tables
                .iter()
                .map(|(name, t)| {
                    let table = name.clone();
                    let on_event: kairos::table::SwapCallback =
                        Arc::new(move |e| eprintln!("kairos: table `{table}`: {e}"));
                    let opts = kairos::table::WatchOptions {
                        on_event: Some(on_event),
                        ..Default::default()
                    };
                    kairos::table::TableWatcher::spawn(t.clone(), opts)
                        .with_context(|| format!("table `{name}`: cannot watch its file"))
                })
                .collect::<Result<Vec<_>>>()?;
            let Some(prog) = load_or_report(&patterns, &opts)? else {
                return Ok(1);
            };
            let limits = EngineOptions {
                max_runs_per_key,
                max_state_bytes_per_key,
                max_state_bytes,
                tables: Vec::new(),
            };
            if let Err(e) = limits.validate() {
                // The limit's name as its flag: `max_runs_per_key` is `--max-runs-per-key`.
                bail!("--{}", e.to_string().replace('_', "-"));
            }
            let inputs: Vec<Input> = inputs.iter().map(|s| Input::parse(s)).collect();
            if max_line_bytes == 0 {
                bail!("--max-line-bytes must be at least 1");
            }
            let read = ReadOptions { max_line_bytes };
            let mut reported = 0u64;
            let mut report = |line: &str| {
                reported += 1;
                if reported <= 100 {
                    eprintln!("{line}");
                } else if reported == 101 {
                    eprintln!("(further input problems are counted in the summary, not listed)");
                }
            };
            if shards > 0 {
                let mut layout = Layout::for_this_machine(shards);
                layout.ring_capacity = ring_capacity;
                if let Some(w) = &wait {
                    let Some(w) = WaitStrategy::parse(w) else {
                        bail!("--wait must be spin, yield or park, not `{w}`");
                    };
                    (layout.source_wait, layout.shard_wait, layout.sink_wait) = (w, w, w);
                }
                layout.validate()?;
                let out: Box<dyn Write + Send> = match &output {
                    Some(p) => Box::new(
                        std::fs::File::create(p)
                            .with_context(|| format!("cannot create {}", p.display()))?,
                    ),
                    None => Box::new(std::io::stdout()),
                };
                let (summary, pr) = replay_sharded_with(
                    Arc::new(prog),
                    &inputs,
                    EngineOptions {
                        tables: tables.clone(),
                        ..limits
                    },
                    &read,
                    layout,
                    out,
                    &mut report,
                )?;
                if !quiet {
                    eprintln!("{summary}");
                    eprintln!(
                        "pipeline: {shards} shards  match p50 {}ns p99 {}ns  back-pressure {}ms",
                        pr.match_latency.value_at_quantile(0.5),
                        pr.match_latency.value_at_quantile(0.99),
                        pr.source_backpressure_ns / 1_000_000
                    );
                }
                return Ok(0);
            }
            let mut out: Box<dyn Write> = match &output {
                Some(p) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(p)
                        .with_context(|| format!("cannot create {}", p.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let summary = replay_with(
                Arc::new(prog),
                &inputs,
                EngineOptions { tables, ..limits },
                &read,
                &mut out,
                &mut report,
            )?;
            if !quiet {
                eprintln!("{summary}");
            }
            Ok(0)
        }
    }
}
