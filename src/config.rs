//! The daemon's configuration file (`kairos.toml`), documented field by field in
//! `docs/config.md`.
//!
//! Every error names the file, line and column of the key at fault: unknown keys, values of the
//! wrong type, a pattern that reads a stream no `[[streams]]` entry declares, a sink no
//! `[[sinks]]` entry declares, a layout the machine cannot run.
//!
//! ```
//! let text = r#"
//! patterns = ["patterns/bonus_abuse.cep"]
//! [kafka]
//! brokers = "localhost:9092"
//! [[streams]]
//! name = "payments"
//! topic = "payments"
//! [[streams]]
//! name = "bets"
//! topic = "bets"
//! [[sinks]]
//! name = "alerts"
//! topic = "alerts"
//! "#;
//! let config = kairos::config::Config::parse("kairos.toml", text).unwrap();
//! assert_eq!(config.streams.len(), 2);
//! assert_eq!(config.kafka.group_id, "kairos");
//! ```

use crate::event::TimeUnit;
use crate::pipeline::Layout;
use crate::ring::WaitStrategy;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// A configuration error, with the position of the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}:{line}:{col}: {message}")]
    At {
        file: String,
        line: usize,
        col: usize,
        message: String,
    },
    #[error("{file}: {message}")]
    File { file: String, message: String },
}

/// How records reach the output topics, relative to the input offsets committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Guarantee {
    /// Input offsets are committed only after every record caused by the events before them
    /// has been acknowledged; after a crash, records since the last checkpoint are produced
    /// again (duplicates, never a loss).
    AtLeastOnce,
    /// Records, offsets and state move together in Kafka transactions, one per checkpoint:
    /// readers with `isolation.level=read_committed` see each record once, a checkpoint
    /// interval later.
    ExactlyOnce,
}

/// The payload format of a topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON object per message.
    #[default]
    Json,
}

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Pattern files, directories of `*.cep` files, or globs, relative to the config file.
    pub patterns: Vec<Spanned<String>>,
    pub kafka: KafkaConfig,
    #[serde(default)]
    pub streams: Vec<StreamConfig>,
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
    #[serde(default)]
    pub tables: Vec<TableConfig>,
    #[serde(default)]
    pub engine: EngineConfig,
    #[serde(default)]
    pub pipeline: PipelineConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// The file it was read from, for resolving relative paths and for messages.
    #[serde(skip)]
    pub file: String,
    #[serde(skip)]
    text: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Any librdkafka consumer property; overrides Kairos's defaults.
    #[serde(default)]
    pub consumer: BTreeMap<String, Spanned<toml::Value>>,
    /// Any librdkafka producer property; overrides Kairos's defaults.
    #[serde(default)]
    pub producer: BTreeMap<String, Spanned<toml::Value>>,
    /// Where events that cannot be parsed go, with headers naming their origin and the error.
    /// Without it they are logged and counted only.
    pub dead_letter_topic: Option<String>,
}

fn default_group() -> String {
    "kairos".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// The name patterns use in `from`.
    pub name: Spanned<String>,
    pub topic: String,
    #[serde(default)]
    pub format: Format,
    /// A field filled with the message's key (as a string) when the payload lacks it.
    pub key_field: Option<String>,
    /// A field filled with the message's timestamp (in the engine's time unit) when the payload
    /// lacks it.
    pub time_field: Option<String>,
    /// How far behind the newest event time an event may arrive and still be matched in time
    /// order (events are held back this long); later ones are dead letters. "0s" by default:
    /// nothing is held back.
    #[serde(default)]
    pub allowed_lateness: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// The name patterns use in `emit NAME { .. }`.
    pub name: Spanned<String>,
    pub topic: String,
    #[serde(default)]
    pub format: Format,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// The name patterns use in `lookup(NAME, ..)` and `in NAME`.
    pub name: Spanned<String>,
    /// The table file (built by `kairos table build`), relative to the config file. Replacing
    /// the file swaps the table in the running engine.
    pub path: Spanned<String>,
    /// A compacted topic to materialise into `path` and keep up to date.
    pub topic: Option<String>,
    /// The key column, for a table from a topic (the message key fills it when absent).
    pub key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Unit of numeric time fields and of `ts` in records: "ms", "us" or "ns".
    #[serde(default = "default_unit")]
    pub time_unit: Spanned<String>,
    /// The most partial matches one key may hold; the oldest beyond it are evicted.
    #[serde(default = "default_max_runs")]
    pub max_runs_per_key: usize,
    /// The most bytes the partial matches of one key may hold; the oldest beyond it are evicted.
    #[serde(default = "default_max_state_bytes_per_key")]
    pub max_state_bytes_per_key: Spanned<u64>,
    /// The most bytes the partial matches of every key may hold together, across the shards;
    /// beyond it the keys that hold the most lose their oldest.
    #[serde(default = "default_max_state_bytes")]
    pub max_state_bytes: Spanned<u64>,
}

fn default_unit() -> Spanned<String> {
    Spanned::new(0..0, "ms".into())
}

fn default_max_runs() -> usize {
    crate::engine::EngineOptions::default().max_runs_per_key
}

fn default_max_state_bytes_per_key() -> Spanned<u64> {
    Spanned::new(
        0..0,
        crate::engine::EngineOptions::default().max_state_bytes_per_key,
    )
}

fn default_max_state_bytes() -> Spanned<u64> {
    Spanned::new(
        0..0,
        crate::engine::EngineOptions::default().max_state_bytes,
    )
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            time_unit: default_unit(),
            max_runs_per_key: default_max_runs(),
            max_state_bytes_per_key: default_max_state_bytes_per_key(),
            max_state_bytes: default_max_state_bytes(),
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Match shards (default 1).
    pub shards: Option<Spanned<usize>>,
    pub ring_capacity: Option<Spanned<usize>>,
    /// "spin", "yield" or "park", for every stage (default: chosen from the core count).
    pub wait: Option<Spanned<String>>,
    pub source_core: Option<usize>,
    pub shard_cores: Option<Vec<usize>>,
    pub sink_core: Option<usize>,
    /// How long the input may be quiet before time is moved on by the wall clock, so that the
    /// windows of a quiet input still close (default "100ms").
    pub idle_advance: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Where `/metrics` and `/health` are served; "" turns the listener off. The environment
    /// variable `KAIROS_ADMIN_ADDRESS`, when set, takes its place (see
    /// [`ADMIN_ADDRESS_VARIABLE`]).
    #[serde(default = "default_admin")]
    pub address: Spanned<String>,
    /// Connections served at once; beyond them a new connection is answered 503 and closed.
    #[serde(default = "default_admin_connections")]
    pub max_connections: Spanned<usize>,
    /// How long a client has to send its request head, and then to take the response.
    #[serde(default = "default_admin_timeout")]
    pub request_timeout: Spanned<String>,
}

/// The environment variable that replaces `[admin] address` when set: a container publishes
/// the admin port only if the listener binds the container's own interface (`0.0.0.0:9464`),
/// while the file keeps the loopback address that suits a host.
pub const ADMIN_ADDRESS_VARIABLE: &str = "KAIROS_ADMIN_ADDRESS";

fn default_admin_connections() -> Spanned<usize> {
    Spanned::new(0..0, crate::metrics::admin::DEFAULT_MAX_CONNECTIONS)
}

fn default_admin_timeout() -> Spanned<String> {
    let secs = crate::metrics::admin::DEFAULT_REQUEST_TIMEOUT.as_secs();
    Spanned::new(0..0, format!("{secs}s"))
}

fn default_admin() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:9464".into())
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            address: default_admin(),
            max_connections: default_admin_connections(),
            request_timeout: default_admin_timeout(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    #[serde(default = "default_guarantee")]
    pub guarantee: Guarantee,
    /// How often input offsets are committed (with the engine state when `state_dir` is set).
    #[serde(default = "default_checkpoint")]
    pub checkpoint_interval: Spanned<String>,
    /// Where checkpoints of the engine state are kept, so that a restart resumes its partial
    /// matches instead of losing them. Relative to the config file.
    pub state_dir: Option<String>,
}

fn default_guarantee() -> Guarantee {
    Guarantee::AtLeastOnce
}

fn default_checkpoint() -> Spanned<String> {
    Spanned::new(0..0, "1s".into())
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            guarantee: default_guarantee(),
            checkpoint_interval: default_checkpoint(),
            state_dir: None,
        }
    }
}

/// Parses a duration such as `250us`, `100ms`, `5s`, `2m`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let per = crate::lang::lexer::duration_unit(unit)? as u64;
    n.checked_mul(per).map(Duration::from_nanos)
}

impl Config {
    /// Reads and checks a configuration file.
    /// The file is read as a pattern file is: at most
    /// [`MAX_SOURCE_BYTES`](crate::compile::load::MAX_SOURCE_BYTES), UTF-8, a byte-order mark at
    /// its start skipped.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        use crate::compile::load::{read_bounded, source_text, SourceError, MAX_SOURCE_BYTES};
        let file = path.display().to_string();
        let bytes = read_bounded(path, MAX_SOURCE_BYTES).map_err(|e| match e {
            SourceError::Io { path, source } => ConfigError::Io { path, source },
            SourceError::TooLarge { limit, .. } => ConfigError::File {
                file: file.clone(),
                message: format!(
                    "the file is larger than {limit} bytes, the most Kairos reads from a \
                     configuration file"
                ),
            },
        })?;
        let text = source_text(&file, bytes).map_err(|d| ConfigError::At {
            file: d.file,
            line: d.line,
            col: d.col,
            message: d.message,
        })?;
        Config::parse(&file, &text)
    }

    /// Parses and checks configuration text; `file` names it in messages and anchors relative
    /// paths.
    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let (line, col) = line_col(text, span.start);
            ConfigError::At {
                file: file.to_string(),
                line,
                col,
                message: e.message().trim().to_string(),
            }
        })?;
        config.file = file.to_string();
        config.text = text.to_string();
        config.check()?;
        Ok(config)
    }

    /// An error at the position of a key's value.
    pub fn error_at(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        let (line, col) = line_col(&self.text, span.start);
        ConfigError::At {
            file: self.file.clone(),
            line,
            col,
            message: message.into(),
        }
    }

    fn check(&self) -> Result<(), ConfigError> {
        let dup = |names: Vec<&Spanned<String>>, what: &str| -> Result<(), ConfigError> {
            for (i, n) in names.iter().enumerate() {
                if names[..i].iter().any(|m| m.get_ref() == n.get_ref()) {
                    return Err(self.error_at(
                        n.span(),
                        format!("{what} `{}` is declared twice", n.get_ref()),
                    ));
                }
            }
            Ok(())
        };
        dup(self.streams.iter().map(|s| &s.name).collect(), "stream")?;
        dup(self.sinks.iter().map(|s| &s.name).collect(), "sink")?;
        dup(self.tables.iter().map(|s| &s.name).collect(), "table")?;
        if self.patterns.is_empty() {
            return Err(ConfigError::File {
                file: self.file.clone(),
                message: "`patterns` lists no pattern files".into(),
            });
        }
        self.time_unit()?;
        self.checkpoint_interval()?;
        self.idle_advance()?;
        self.admin_address()?;
        self.admin_options()?;
        for s in &self.streams {
            self.lateness(s)?;
        }
        self.layout()?;
        self.check_engine_limits()?;
        for t in &self.tables {
            if t.topic.is_some() && t.key.is_none() {
                return Err(self.error_at(
                    t.name.span(),
                    format!(
                        "table `{}` reads a topic and needs `key`, the key column",
                        t.name.get_ref()
                    ),
                ));
            }
        }
        for (props, what) in [
            (&self.kafka.consumer, "consumer"),
            (&self.kafka.producer, "producer"),
        ] {
            for v in props.values() {
                if matches!(
                    v.get_ref(),
                    toml::Value::Array(_) | toml::Value::Table(_) | toml::Value::Datetime(_)
                ) {
                    return Err(self.error_at(
                        v.span(),
                        format!("a librdkafka {what} property is a string, number or boolean"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The `[engine]` limits, each in its range (see [`crate::engine::EngineOptions::validate`]).
    fn check_engine_limits(&self) -> Result<(), ConfigError> {
        use crate::engine::{EngineOptions, LimitError};
        let e = &self.engine;
        let limits = EngineOptions {
            max_runs_per_key: e.max_runs_per_key,
            max_state_bytes_per_key: *e.max_state_bytes_per_key.get_ref(),
            max_state_bytes: *e.max_state_bytes.get_ref(),
            tables: Vec::new(),
        };
        let Err(why) = limits.validate() else {
            return Ok(());
        };
        let message = format!("[engine]: {why}");
        Err(match why {
            LimitError::StateBytesPerKey(_) => {
                self.error_at(e.max_state_bytes_per_key.span(), message)
            }
            LimitError::StateBytes => self.error_at(e.max_state_bytes.span(), message),
            LimitError::RunsPerKey => ConfigError::File {
                file: self.file.clone(),
                message,
            },
        })
    }

    pub fn time_unit(&self) -> Result<TimeUnit, ConfigError> {
        let u = &self.engine.time_unit;
        TimeUnit::parse(u.get_ref()).ok_or_else(|| {
            self.error_at(
                u.span(),
                format!("unknown time unit `{}`: use ms, us or ns", u.get_ref()),
            )
        })
    }

    fn duration(&self, d: &Spanned<String>) -> Result<Duration, ConfigError> {
        parse_duration(d.get_ref()).ok_or_else(|| {
            self.error_at(
                d.span(),
                format!(
                    "`{}` is not a duration: write e.g. 250us, 100ms, 5s, 2m",
                    d.get_ref()
                ),
            )
        })
    }

    pub fn checkpoint_interval(&self) -> Result<Duration, ConfigError> {
        let d = self.duration(&self.delivery.checkpoint_interval)?;
        if d.is_zero() {
            return Err(self.error_at(
                self.delivery.checkpoint_interval.span(),
                "the checkpoint interval must be above zero",
            ));
        }
        Ok(d)
    }

    pub fn idle_advance(&self) -> Result<Duration, ConfigError> {
        match &self.pipeline.idle_advance {
            Some(d) => self.duration(d),
            None => Ok(Duration::from_millis(100)),
        }
    }

    pub fn lateness(&self, s: &StreamConfig) -> Result<Duration, ConfigError> {
        match &s.allowed_lateness {
            Some(d) => self.duration(d),
            None => Ok(Duration::ZERO),
        }
    }

    /// The admin address, or `None` when turned off: `KAIROS_ADMIN_ADDRESS` where it is set,
    /// the file's `[admin] address` otherwise.
    pub fn admin_address(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if let Some(value) = std::env::var_os(ADMIN_ADDRESS_VARIABLE) {
            let value = value.to_string_lossy();
            if value.is_empty() {
                return Ok(None);
            }
            return value.parse().map(Some).map_err(|_| ConfigError::File {
                file: self.file.clone(),
                message: format!(
                    "{ADMIN_ADDRESS_VARIABLE} (which replaces [admin] address): `{value}` is not an address: write e.g. 0.0.0.0:9464"
                ),
            });
        }
        let a = &self.admin.address;
        if a.get_ref().is_empty() {
            return Ok(None);
        }
        a.get_ref().parse().map(Some).map_err(|_| {
            self.error_at(
                a.span(),
                format!(
                    "`{}` is not an address: write e.g. 127.0.0.1:9464",
                    a.get_ref()
                ),
            )
        })
    }

    /// The admin listener's limits.
    pub fn admin_options(&self) -> Result<crate::metrics::admin::AdminOptions, ConfigError> {
        let a = &self.admin;
        if *a.max_connections.get_ref() == 0 {
            return Err(self.error_at(
                a.max_connections.span(),
                "[admin]: max_connections must be at least 1",
            ));
        }
        let request_timeout = self.duration(&a.request_timeout)?;
        if request_timeout.is_zero() {
            return Err(self.error_at(
                a.request_timeout.span(),
                "[admin]: the request timeout must be above zero",
            ));
        }
        Ok(crate::metrics::admin::AdminOptions {
            max_connections: *a.max_connections.get_ref(),
            request_timeout,
        })
    }

    /// The pipeline layout: the machine's default for the number of shards, with what the file
    /// says over it, checked against this machine.
    pub fn layout(&self) -> Result<Layout, ConfigError> {
        let p = &self.pipeline;
        let shards = p.shards.as_ref().map_or(1, |s| *s.get_ref());
        let mut layout = Layout::for_this_machine(shards.max(1));
        layout.shards = shards;
        if let Some(c) = &p.ring_capacity {
            layout.ring_capacity = *c.get_ref();
        }
        // Kafka's client threads need CPU too: spin only where every stage and the client have
        // a core to spare.
        let stages = 1 + shards + usize::from(!layout.fuse_sink);
        if crate::pipeline::available_cores() < stages + 2 {
            let park = WaitStrategy::Park { spins: 64 };
            (layout.source_wait, layout.shard_wait, layout.sink_wait) = (park, park, park);
        }
        if let Some(w) = &p.wait {
            let w = WaitStrategy::parse(w.get_ref()).ok_or_else(|| {
                self.error_at(
                    w.span(),
                    format!(
                        "unknown wait strategy `{}`: use spin, yield or park",
                        w.get_ref()
                    ),
                )
            })?;
            layout.source_wait = w;
            layout.shard_wait = w;
            layout.sink_wait = w;
        }
        if let Some(c) = p.source_core {
            layout.source_core = Some(c);
        }
        if let Some(cs) = &p.shard_cores {
            layout.shard_cores = cs.iter().map(|&c| Some(c)).collect();
        }
        if let Some(c) = p.sink_core {
            layout.sink_core = Some(c);
        }
        layout.validate().map_err(|e| {
            use crate::pipeline::LayoutError;
            let named =
                |key: &str, s: &Spanned<usize>| (format!("[pipeline] {key}: {e}"), s.span());
            let capacity = || p.ring_capacity.as_ref().map(|s| named("ring_capacity", s));
            // The place of the key the error is about, where the file gives it.
            let place = match &e {
                LayoutError::Capacity(_) | LayoutError::CapacityTooLarge { .. } => capacity(),
                LayoutError::Memory { .. } => {
                    capacity().or_else(|| p.shards.as_ref().map(|s| named("shards", s)))
                }
                _ => p
                    .shards
                    .as_ref()
                    .or(p.ring_capacity.as_ref())
                    .map(|s| (format!("[pipeline]: {e}"), s.span())),
            };
            match place {
                Some((message, span)) => self.error_at(span, message),
                None => ConfigError::File {
                    file: self.file.clone(),
                    message: format!("[pipeline]: {e}"),
                },
            }
        })?;
        Ok(layout)
    }

    /// A path from the file, relative to the directory of the config file.
    pub fn resolve(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        if p.is_absolute() {
            return p.to_path_buf();
        }
        Path::new(&self.file)
            .parent()
            .map_or_else(|| p.to_path_buf(), |d| d.join(p))
    }

    /// The pattern paths, globs expanded, sorted within each entry.
    pub fn pattern_paths(&self) -> Result<Vec<PathBuf>, ConfigError> {
        let mut out = Vec::new();
        for p in &self.patterns {
            let full = self.resolve(p.get_ref());
            let s = full.display().to_string();
            if s.contains(['*', '?', '[']) {
                let paths = glob::glob(&s)
                    .map_err(|e| self.error_at(p.span(), format!("bad glob: {e}")))?;
                let mut found: Vec<PathBuf> = paths.filter_map(Result::ok).collect();
                if found.is_empty() {
                    return Err(
                        self.error_at(p.span(), format!("`{}` matches no file", p.get_ref()))
                    );
                }
                found.sort();
                out.extend(found);
            } else {
                if !full.exists() {
                    return Err(self.error_at(
                        p.span(),
                        format!("{}: no such file or directory", full.display()),
                    ));
                }
                out.push(full);
            }
        }
        Ok(out)
    }

    /// The librdkafka properties of one side, as strings.
    pub fn properties(map: &BTreeMap<String, Spanned<toml::Value>>) -> Vec<(String, String)> {
        map.iter()
            .map(|(k, v)| {
                let v = match v.get_ref() {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect()
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary_compat(offset)];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

trait FloorCharBoundary {
    fn floor_char_boundary_compat(&self, i: usize) -> usize;
}

impl FloorCharBoundary for str {
    fn floor_char_boundary_compat(&self, mut i: usize) -> usize {
        while i > 0 && !self.is_char_boundary(i) {
            i -= 1;
        }
        i
    }
}
