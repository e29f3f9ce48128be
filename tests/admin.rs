//! The admin listener under abuse: a flood of connections beyond its cap, clients that send
//! nothing or send their request a byte at a time, requests whose lines end with a bare LF or
//! that have no HTTP version, and a process that runs out of file descriptors. After each, the
//! listener still answers.
//!
//! Every wait below is bounded by a read timeout far above what the listener needs, so that a
//! listener that stops answering fails the test instead of hanging it; no test measures time.

use kairos::config::Config;
use kairos::metrics::admin::{AdminOptions, AdminServer, AdminSource};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// Longer than any exchange below takes; a read that waits this long means no answer came.
const PATIENCE: Duration = Duration::from_secs(20);

struct Healthy;

impl AdminSource for Healthy {
    fn metrics(&self) -> String {
        "kairos_events_total 7\n".into()
    }
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
}

fn start(max_connections: usize, request_timeout: Duration) -> AdminServer {
    AdminServer::start_with(
        "127.0.0.1:0".parse().unwrap(),
        AdminOptions {
            max_connections,
            request_timeout,
        },
        Arc::new(Healthy),
    )
    .unwrap()
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s
}

/// Everything the listener sends until it closes the connection. A reset after its answer
/// counts as the close; a read that times out fails the test.
fn read_to_close(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!(
                    "the listener neither answered nor closed the connection; it sent {:?}",
                    String::from_utf8_lossy(&got)
                )
            }
            Err(e) => panic!("read failed: {e}"),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Sends `request` on a new connection and returns the whole answer.
fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = connect(addr);
    s.write_all(request).unwrap();
    read_to_close(&mut s)
}

fn get(addr: SocketAddr, path: &str) -> String {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    )
}

/// Whether the listener still holds `s` open without having answered: a non-blocking peek
/// finds nothing to read and no close (and takes nothing from what is to be read).
fn held_open(s: &mut TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let held = matches!(s.peek(&mut [0u8; 64]), Err(e) if e.kind() == ErrorKind::WouldBlock);
    s.set_nonblocking(false).unwrap();
    held
}

/// What the listener says to a connection that sends nothing, until it closes it. A refused
/// connection is read this way: a client that wrote a request could have its answer lost to
/// the reset that closing a socket with unread data sends.
fn listen(addr: SocketAddr) -> String {
    read_to_close(&mut connect(addr))
}

/// Asks for `/health` until it is answered 200; connections the listener has yet to see
/// closed may hold its places for a moment, and a refused request may lose its 503 to a reset.
fn healthy_again(addr: SocketAddr) {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let answer = get(addr, "/health");
        if answer.starts_with("HTTP/1.1 200 OK\r\n") {
            assert!(answer.ends_with("\r\n\r\nok\n"), "{answer}");
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/health is still not served: {answer}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_flood_beyond_the_cap_is_refused_and_service_goes_on() {
    let server = start(4, Duration::from_secs(60));
    let addr = server.local_addr();
    // Idle connections fill the cap; the ones after it are answered 503 and closed.
    let mut idle: Vec<TcpStream> = (0..4).map(|_| connect(addr)).collect();
    let answered = listen(addr);
    assert!(
        answered.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{answered}"
    );
    assert!(
        answered.ends_with("too many admin connections\n"),
        "{answered}"
    );
    for _ in 0..16 {
        let refused = listen(addr);
        assert!(refused.starts_with("HTTP/1.1 503 "), "{refused}");
    }
    for s in &mut idle {
        assert!(held_open(s), "a connection within the cap was closed");
    }
    // A flood of connections opened and dropped at once leaves nothing behind.
    for _ in 0..500 {
        drop(TcpStream::connect(addr).unwrap());
    }
    drop(idle);
    // The idle connections' closes reach the listener in their own time; until then a request
    // may still find the cap full.
    healthy_again(addr);
    let metrics = get(addr, "/metrics");
    assert!(
        metrics.ends_with("\r\n\r\nkairos_events_total 7\n"),
        "{metrics}"
    );
}

#[test]
fn idle_and_slow_clients_are_closed_while_others_are_served() {
    let server = start(8, Duration::from_millis(300));
    let addr = server.local_addr();
    let mut silent = connect(addr);
    let mut slow = connect(addr);
    slow.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
    // Served while the two others are held.
    assert!(get(addr, "/health").starts_with("HTTP/1.1 200 OK\r\n"));
    // The slow client keeps sending header bytes; its time runs from its connection, so it
    // is cut off all the same.
    let trickle = std::thread::spawn(move || {
        for _ in 0..(PATIENCE.as_millis() / 50) {
            if slow.write_all(b"X").is_err() {
                return read_to_close(&mut slow);
            }
            std::thread::sleep(Duration::from_millis(50));
            if !held_open(&mut slow) {
                return read_to_close(&mut slow);
            }
        }
        panic!("the slow client was never closed");
    });
    let answer = read_to_close(&mut silent);
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer}"
    );
    let answer = trickle.join().unwrap();
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer}"
    );
    assert!(get(addr, "/health").starts_with("HTTP/1.1 200 OK\r\n"));
}

#[test]
fn lf_only_and_versionless_requests_are_answered_at_once() {
    // A timeout far beyond the read's patience: an answer must not wait for it.
    let server = start(8, Duration::from_secs(3600));
    let addr = server.local_addr();
    let answer = exchange(addr, b"GET /health HTTP/1.0\n\n");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nok\n"), "{answer}");
    let answer = exchange(addr, b"GET /metrics HTTP/1.1\nHost: x\nAccept: */*\n\n");
    assert!(answer.ends_with("kairos_events_total 7\n"), "{answer}");
    let answer = exchange(addr, b"GET /metrics\n");
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    assert!(answer.contains("HTTP/0.9 is not served"), "{answer}");
    let answer = exchange(addr, b"GET /metrics HTTP/2.0\r\n");
    assert!(
        answer.starts_with("HTTP/1.1 505 HTTP Version Not Supported\r\n"),
        "{answer}"
    );
    let answer = exchange(addr, b"DELETE /metrics HTTP/1.1\r\n\r\n");
    assert!(answer.contains("\r\nAllow: GET\r\n"), "{answer}");
    // A client that ends its side before the blank line is told why.
    let mut s = connect(addr);
    s.write_all(b"GET /health HTTP/1.1\n").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let answer = read_to_close(&mut s);
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    let big = format!("GET /health HTTP/1.1\r\nX: {}\r\n", "y".repeat(9000));
    let answer = exchange(addr, big.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
}

#[test]
fn an_lf_only_head_that_never_ends_is_closed_when_its_time_is_up() {
    let server = start(8, Duration::from_millis(200));
    let addr = server.local_addr();
    let answer = exchange(addr, b"GET /health HTTP/1.1\nHost: x\n");
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer}"
    );
}

#[test]
fn answered_connections_leave_nothing_behind_once_their_time_is_up() {
    let timeout = Duration::from_millis(100);
    let server = start(8, timeout);
    let addr = server.local_addr();
    for _ in 0..5 {
        // Sent with the client's side already shut, the request is read, answered and closed
        // in one go.
        let mut s = connect(addr);
        s.write_all(b"GET /health HTTP/1.1\r\n\r\n").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(read_to_close(&mut s).starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(get(addr, "/health").starts_with("HTTP/1.1 200 OK\r\n"));
    }
    // Past the deadlines the answered connections had: the listener goes on serving.
    std::thread::sleep(timeout * 3);
    assert!(get(addr, "/health").starts_with("HTTP/1.1 200 OK\r\n"));
    assert!(get(addr, "/metrics").ends_with("kairos_events_total 7\n"));
}

#[test]
fn the_admin_section_sets_the_listeners_limits() {
    let text = "patterns = [\"p.cep\"]\n[kafka]\nbrokers = \"b\"\n[admin]\nmax_connections = 1\nrequest_timeout = \"250ms\"\n";
    let config = Config::parse("k.toml", text).unwrap();
    let options = config.admin_options().unwrap();
    assert_eq!(
        options,
        AdminOptions {
            max_connections: 1,
            request_timeout: Duration::from_millis(250),
        }
    );
    let server =
        AdminServer::start_with("127.0.0.1:0".parse().unwrap(), options, Arc::new(Healthy))
            .unwrap();
    let addr = server.local_addr();
    let mut held = connect(addr);
    let refused = listen(addr);
    assert!(refused.starts_with("HTTP/1.1 503 "), "{refused}");
    let timed_out = read_to_close(&mut held);
    assert!(timed_out.starts_with("HTTP/1.1 408 "), "{timed_out}");
}

/// The environment variable that makes a test process the child of
/// `the_listener_recovers_once_file_descriptors_are_free`.
const CHILD: &str = "KAIROS_TEST_ADMIN_FD_CHILD";

/// How the child and the parent talk: the child prints lines holding this, then its news.
const SAY: &str = "admin-child: ";

/// Run as a child process by `the_listener_recovers_once_file_descriptors_are_free` (it does
/// nothing without `KAIROS_TEST_ADMIN_FD_CHILD`): under a low descriptor limit, it starts a
/// listener, takes every descriptor left, and gives them back when told to on standard input.
#[test]
#[ignore = "a child process of the_listener_recovers_once_file_descriptors_are_free"]
fn descriptor_starved_child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let limit = libc::rlimit {
        rlim_cur: 64,
        rlim_max: 64,
    };
    // SAFETY: setrlimit reads a valid rlimit; lowering a limit needs no privilege.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    let server = start(8, Duration::from_secs(60));
    println!("{SAY}listening {}", server.local_addr());
    let mut hoard = Vec::new();
    let why = loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) => hoard.push(f),
            Err(e) => break e,
        }
    };
    assert_eq!(why.raw_os_error(), Some(libc::EMFILE), "{why}");
    println!("{SAY}starved after {} more descriptors", hoard.len());
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    assert_eq!(line, "release\n");
    drop(hoard);
    println!("{SAY}released");
    line.clear();
    // Serve until the parent is done.
    let _ = std::io::stdin().read_line(&mut line);
}

#[test]
fn the_listener_recovers_once_file_descriptors_are_free() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "descriptor_starved_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut said = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next_said = || loop {
        let line = said
            .next()
            .expect("the child ended early")
            .expect("the child's output reads");
        // The test harness may have begun the line with the test's name.
        if let Some(at) = line.find(SAY) {
            return line[at + SAY.len()..].to_string();
        }
    };
    let listening = next_said();
    let addr: SocketAddr = listening
        .strip_prefix("listening ")
        .unwrap_or_else(|| panic!("{listening}"))
        .parse()
        .unwrap();
    let starved = next_said();
    assert!(starved.starts_with("starved"), "{starved}");

    // While the child has no descriptor to give a connection, each is answered and closed
    // rather than left waiting in the listen queue.
    let answer = listen(addr);
    assert!(
        answer.starts_with("HTTP/1.1 503 ") && answer.ends_with("out of file descriptors\n"),
        "{answer}"
    );
    // More connections than the listen queue holds (1024): were they left in the queue, it
    // would fill, and no later connection would ever reach the listener.
    for _ in 0..1500 {
        let s = TcpStream::connect_timeout(&addr, PATIENCE)
            .expect("the listen queue is full: the listener stopped accepting");
        drop(s);
    }

    stdin.write_all(b"release\n").unwrap();
    assert_eq!(next_said(), "released");
    // The flood's last connections may still be in the queue, and take the listener's few
    // places for a moment once they can be accepted.
    healthy_again(addr);
    assert!(get(addr, "/metrics").ends_with("kairos_events_total 7\n"));
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success(), "the child failed: {status}");
}
