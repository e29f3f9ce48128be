//! The daemon's configuration: the example parses and loads its patterns; every error names
//! the file, line and column of the key at fault.

use kairos::config::{Config, Guarantee};
use kairos::daemon;

fn err(text: &str) -> String {
    match Config::parse("k.toml", text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

const BASE: &str =
    "patterns = [\"../patterns/bonus_abuse.cep\"]\n[kafka]\nbrokers = \"localhost:9092\"\n";

#[test]
fn the_example_config_loads_with_its_patterns() {
    let c = Config::load(std::path::Path::new("config/kairos.toml")).unwrap();
    assert_eq!(c.streams.len(), 2);
    assert_eq!(c.delivery.guarantee, Guarantee::AtLeastOnce);
    assert_eq!(
        c.checkpoint_interval().unwrap(),
        std::time::Duration::from_secs(1)
    );
    assert_eq!(
        c.lateness(&c.streams[0]).unwrap(),
        std::time::Duration::from_secs(2)
    );
    let props = Config::properties(&c.kafka.consumer);
    assert!(props.contains(&("fetch.wait.max.ms".into(), "5".into())));
    let prepared = daemon::prepare(c).unwrap();
    assert_eq!(prepared.program.patterns.len(), 3);
}

#[test]
fn unknown_keys_name_their_line() {
    let e = err(&format!("{BASE}brokerz = 1\n"));
    assert!(e.starts_with("k.toml:4:1: unknown field `brokerz`"), "{e}");
    let e = err(&format!(
        "{BASE}[[streams]]\nname = \"bets\"\ntopic = \"bets\"\nlateness = \"1s\"\n"
    ));
    assert!(e.starts_with("k.toml:7:1: unknown field `lateness`"), "{e}");
}

#[test]
fn bad_values_name_their_line_and_column() {
    let e = err(&format!(
        "{BASE}[delivery]\ncheckpoint_interval = \"soon\"\n"
    ));
    assert_eq!(
        e,
        "k.toml:5:23: `soon` is not a duration: write e.g. 250us, 100ms, 5s, 2m"
    );
    let e = err(&format!("{BASE}[delivery]\nguarantee = \"at-most-once\"\n"));
    assert!(
        e.starts_with("k.toml:5:13: unknown variant `at-most-once`"),
        "{e}"
    );
    let e = err(&format!("{BASE}[engine]\ntime_unit = \"days\"\n"));
    assert!(
        e.starts_with("k.toml:5:13: unknown time unit `days`"),
        "{e}"
    );
    let e = err(&format!("{BASE}[admin]\naddress = \"localhost\"\n"));
    assert!(
        e.starts_with("k.toml:5:11: `localhost` is not an address"),
        "{e}"
    );
    let e = err(&format!("{BASE}[pipeline]\nshards = 0\n"));
    assert!(
        e.contains("k.toml:5:10: [pipeline]: a pipeline needs at least one match shard"),
        "{e}"
    );
    let e = err(&format!(
        "{BASE}[pipeline]\nshards = 1\nshard_cores = [999]\n"
    ));
    assert!(e.contains("core 999"), "{e}");
    let e = err(&format!("{BASE}[pipeline]\nwait = \"sleep\"\n"));
    assert!(
        e.starts_with("k.toml:5:8: unknown wait strategy `sleep`"),
        "{e}"
    );
    let e = err(&format!("{BASE}[kafka.consumer]\n\"x\" = [1]\n"));
    assert!(
        e.starts_with("k.toml:5:7: a librdkafka consumer property"),
        "{e}"
    );
}

#[test]
fn duplicate_names_and_missing_pieces_are_errors() {
    let e = err(&format!(
        "{BASE}[[sinks]]\nname = \"a\"\ntopic = \"a\"\n[[sinks]]\nname = \"a\"\ntopic = \"b\"\n"
    ));
    assert!(
        e.starts_with("k.toml:8:8: sink `a` is declared twice"),
        "{e}"
    );
    let e = err("[kafka]\nbrokers = \"x\"\n");
    assert!(e.contains("missing field `patterns`"), "{e}");
    let e = err(&format!(
        "{BASE}[[tables]]\nname = \"t\"\npath = \"t.tbl\"\ntopic = \"t\"\n"
    ));
    assert!(e.contains("needs `key`"), "{e}");
}

#[test]
fn patterns_must_fit_the_declared_streams_and_sinks() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("k.toml");
    std::fs::write(
        dir.path().join("p.cep"),
        "pattern p\n  from bets\n  match a\n  emit alerts { n: 1 }\n",
    )
    .unwrap();
    let write = |extra: &str| {
        std::fs::write(
            &cfg,
            format!("patterns = [\"*.cep\"]\n[kafka]\nbrokers = \"b\"\n{extra}"),
        )
        .unwrap();
        Config::load(&cfg).map(daemon::prepare)
    };
    let e = write("").unwrap().err().unwrap().to_string();
    assert!(
        e.contains("read stream `bets`, which no [[streams]] entry declares"),
        "{e}"
    );
    let e = write("[[streams]]\nname = \"bets\"\ntopic = \"bets\"\n")
        .unwrap()
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("emits to sink `alerts`, which no [[sinks]] entry declares"),
        "{e}"
    );
    let ok = write("[[streams]]\nname = \"bets\"\ntopic = \"bets\"\n[[sinks]]\nname = \"alerts\"\ntopic = \"alerts\"\n");
    assert!(ok.unwrap().is_ok());
    std::fs::write(
        &cfg,
        "patterns = [\"none/*.cep\"]\n[kafka]\nbrokers = \"b\"\n",
    )
    .unwrap();
    let e = daemon::prepare(Config::load(&cfg).unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("1:13: `none/*.cep` matches no file"), "{e}");
}

#[test]
fn the_container_config_parses() {
    let c = Config::load(std::path::Path::new("config/docker.toml")).unwrap();
    assert_eq!(c.kafka.brokers, "kafka:9092");
    assert_eq!(c.admin_address().unwrap().map(|a| a.port()), Some(9464));
}

#[test]
fn a_ring_capacity_the_machine_cannot_hold_names_the_key_and_its_bytes() {
    let e = err(&format!("{BASE}[pipeline]\nring_capacity = 1000000000\n"));
    assert!(
        e.starts_with("k.toml:5:17: [pipeline] ring_capacity: a ring of 1000000000 slots is above the largest Kairos allows (16777216); the rings of 1 shard would take "),
        "{e}"
    );
    let bytes: u128 = e
        .split("would take ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in {e}"));
    // 2^30 slots (the capacity rounded up to a power of two), each holding an event on its
    // way to the shard and one on its way back.
    assert_eq!(bytes % (1 << 30), 0, "{e}");
    assert!(bytes >= 2 << 30, "{e}");
    // Within the cap, rings no machine holds: a quarter of its memory is the bound.
    let e = err(&format!(
        "{BASE}[pipeline]\nshards = 4096\nring_capacity = 16777216\n"
    ));
    assert!(
        e.starts_with("k.toml:6:17: [pipeline] ring_capacity: the rings of 4096 shards with 16777216 slots each would take "),
        "{e}"
    );
    assert!(e.contains("they may take here: a quarter of "), "{e}");
    let e = err(&format!("{BASE}[pipeline]\nring_capacity = 1\n"));
    assert!(
        e.starts_with("k.toml:5:17: [pipeline] ring_capacity: ring capacity must be at least 2"),
        "{e}"
    );
    let ok = Config::parse(
        "k.toml",
        &format!("{BASE}[pipeline]\nshards = 2\nring_capacity = 65536\n"),
    );
    assert_eq!(ok.unwrap().layout().unwrap().ring_capacity, 65536);
}

#[test]
fn the_admin_limits_are_checked() {
    let c = Config::parse("k.toml", BASE).unwrap();
    let defaults = c.admin_options().unwrap();
    assert_eq!(
        defaults,
        kairos::metrics::admin::AdminOptions {
            max_connections: 64,
            request_timeout: std::time::Duration::from_secs(5),
        }
    );
    let e = err(&format!("{BASE}[admin]\nmax_connections = 0\n"));
    assert_eq!(
        e,
        "k.toml:5:19: [admin]: max_connections must be at least 1"
    );
    let e = err(&format!("{BASE}[admin]\nrequest_timeout = \"0s\"\n"));
    assert_eq!(
        e,
        "k.toml:5:19: [admin]: the request timeout must be above zero"
    );
    let e = err(&format!("{BASE}[admin]\nrequest_timeout = \"soon\"\n"));
    assert!(
        e.starts_with("k.toml:5:19: `soon` is not a duration"),
        "{e}"
    );
    let e = err(&format!("{BASE}[admin]\nmax_connections = -1\n"));
    assert!(e.starts_with("k.toml:5:19: "), "{e}");
}

#[test]
fn the_example_configs_serve_the_admin_address_on_loopback() {
    for file in ["config/kairos.toml", "config/docker.toml"] {
        let c = Config::load(std::path::Path::new(file)).unwrap();
        let a = c.admin.address.get_ref().parse::<std::net::SocketAddr>();
        assert!(
            a.as_ref().is_ok_and(|a| a.ip().is_loopback()),
            "{file}: {a:?}"
        );
    }
}
