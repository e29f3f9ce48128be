//! The admin listener: `GET /metrics` (Prometheus text) and `GET /health`, served by a small
//! `mio` event loop on its own thread, off the hot path.
//!
//! It stays up whatever its clients do, so that a monitoring system can always reach it:
//!
//! - at most [`AdminOptions::max_connections`] connections are served at once; a connection
//!   beyond them is answered 503 (where its socket takes the answer at once) and closed, so a
//!   flood of connections cannot take the process's file descriptors;
//! - a client has [`AdminOptions::request_timeout`] from its connection to send its whole
//!   request head, and as long again to take the response; one that sends nothing, or sends its
//!   head a byte at a time, is answered 408 and closed when its time is up;
//! - when the process is out of file descriptors, the listener gives up a spare descriptor it
//!   keeps for the purpose, accepts a waiting connection, answers it 503, closes it, and takes
//!   the spare back: the listen queue is kept empty, and the listener answers again as soon as
//!   descriptors are free. Where even that fails, it tries again a little later; it never stops
//!   listening.
//!
//! Requests are HTTP/1.0 or HTTP/1.1 `GET`s. The request head ends at its first blank line;
//! lines may end with CRLF or with a bare LF, as `printf 'GET /health HTTP/1.0\n\n' | nc ...`
//! sends them (RFC 9112 allows a server to accept a bare LF). A request line without a version
//! (an HTTP/0.9 request, `GET /health`) is answered 400 as soon as its line ends, instead of
//! waiting for a blank line that would never come. Each response closes its connection.

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
/// The first token of a connection; the ones below are the listener's and the waker's.
const FIRST_CONNECTION: usize = 2;
/// Request heads larger than this are refused: the admin port serves two small GETs.
const MAX_REQUEST: usize = 8192;
/// How long accepting is put off when the system cannot give a connection a descriptor (or
/// the memory for one) and the spare descriptor does not help either.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The default of [`AdminOptions::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// The default of [`AdminOptions::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What the listener serves.
pub trait AdminSource: Send + Sync + 'static {
    /// The `/metrics` body.
    fn metrics(&self) -> String;
    /// `Ok` when healthy, or the reason it is not (served as 503).
    fn health(&self) -> Result<(), String>;
}

/// The limits of the admin listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminOptions {
    /// Connections served at once (at least 1); a connection beyond them is answered 503 and
    /// closed.
    pub max_connections: usize,
    /// How long a client has to send its request head from its connection, and then to take
    /// the response (above zero).
    pub request_timeout: Duration,
}

impl Default for AdminOptions {
    fn default() -> Self {
        AdminOptions {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// A running admin listener; stops when dropped.
pub struct AdminServer {
    addr: SocketAddr,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Binds `addr` (port 0 picks a free port; see [`AdminServer::local_addr`]) and serves
    /// `source` with the default [`AdminOptions`] until dropped.
    pub fn start(addr: SocketAddr, source: Arc<dyn AdminSource>) -> io::Result<AdminServer> {
        AdminServer::start_with(addr, AdminOptions::default(), source)
    }

    /// [`AdminServer::start`] with the given limits.
    pub fn start_with(
        addr: SocketAddr,
        options: AdminOptions,
        source: Arc<dyn AdminSource>,
    ) -> io::Result<AdminServer> {
        if options.max_connections == 0 || options.request_timeout.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the admin listener needs at least one connection and a request timeout above zero",
            ));
        }
        let mut listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let stop = Arc::new(AtomicBool::new(false));
        let server = Server {
            poll,
            listener,
            source,
            options,
            conns: HashMap::new(),
            deadlines: BTreeSet::new(),
            next_token: FIRST_CONNECTION,
            spare: open_spare(),
            accept_retry: None,
            out_of_descriptors: false,
            at_capacity: false,
        };
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("kairos-admin".into())
            .spawn(move || server.run(&stop2))?;
        Ok(AdminServer {
            addr,
            waker,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Where a connection's exchange stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Reading the request head.
    Reading,
    /// Writing the response.
    Writing,
    /// The response is written and our side shut: reading until the client closes, so that
    /// closing does not reset the connection under a response the client has yet to read.
    Draining,
}

struct Conn {
    stream: TcpStream,
    request: Vec<u8>,
    response: Vec<u8>,
    written: usize,
    /// Bytes read and thrown away while draining.
    drained: usize,
    phase: Phase,
    /// When the current phase's time is up.
    deadline: Instant,
}

/// The event loop's state.
struct Server {
    poll: Poll,
    listener: TcpListener,
    source: Arc<dyn AdminSource>,
    options: AdminOptions,
    conns: HashMap<Token, Conn>,
    /// Every connection's deadline, earliest first.
    deadlines: BTreeSet<(Instant, Token)>,
    next_token: usize,
    /// A descriptor held in reserve, given up to accept (and close) a connection when the
    /// process has none left.
    spare: Option<File>,
    /// When to accept again after putting it off; `None` while waiting for the listener's
    /// readiness instead.
    accept_retry: Option<Instant>,
    /// Whether the process is out of descriptors, so that it is logged once per episode.
    out_of_descriptors: bool,
    /// Whether connections are being refused at the cap, logged once per episode.
    at_capacity: bool,
}

impl Server {
    fn run(mut self, stop: &AtomicBool) {
        let mut events = Events::with_capacity(256);
        while !stop.load(Ordering::Acquire) {
            let timeout = self
                .next_wake()
                .map(|t| t.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(error = %e, "admin listener stopped");
                return;
            }
            let mut accept = false;
            for ev in events.iter() {
                match ev.token() {
                    WAKER => {}
                    LISTENER => accept = true,
                    token => self.drive(token),
                }
            }
            if accept || self.accept_retry.is_some_and(|t| t <= Instant::now()) {
                self.accept_pending();
            }
            self.expire(Instant::now());
        }
    }

    /// The earliest of the connections' deadlines and the retry of accepting.
    fn next_wake(&self) -> Option<Instant> {
        let first = self.deadlines.first().map(|&(t, _)| t);
        match (first, self.accept_retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Accepts every waiting connection, until the listener has none or accepting must be put
    /// off.
    fn accept_pending(&mut self) {
        self.accept_retry = None;
        if self.spare.is_none() {
            self.spare = open_spare();
        }
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if self.out_of_descriptors && self.spare.is_some() {
                        self.out_of_descriptors = false;
                        tracing::info!("admin listener: file descriptors are free again");
                    }
                    self.admit(stream);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if out_of_descriptors(&e) => {
                    if !self.out_of_descriptors {
                        self.out_of_descriptors = true;
                        tracing::warn!(error = %e, "admin listener: the process is out of file descriptors; admin connections are answered 503 until some are free");
                    }
                    if !self.shed_one() {
                        self.accept_retry = Some(Instant::now() + ACCEPT_BACKOFF);
                        return;
                    }
                }
                // The connection went away before it was accepted: the next one may be fine.
                Err(e) if connection_gone(&e) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "admin listener cannot accept; retrying");
                    self.accept_retry = Some(Instant::now() + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
    }

    /// Gives up the spare descriptor to accept one waiting connection, answers it 503 and
    /// closes it, then takes the spare back. False when there was no spare, nothing could be
    /// accepted with it, or it could not be taken back: accepting is then put off.
    fn shed_one(&mut self) -> bool {
        let Some(spare) = self.spare.take() else {
            return false;
        };
        drop(spare);
        let shed = match self.listener.accept() {
            Ok((stream, _)) => {
                refuse(stream, 503, "the process is out of file descriptors\n");
                true
            }
            Err(_) => false,
        };
        self.spare = open_spare();
        shed && self.spare.is_some()
    }

    /// Serves a new connection, or refuses it when the cap is reached.
    fn admit(&mut self, mut stream: TcpStream) {
        if self.conns.len() >= self.options.max_connections {
            if !self.at_capacity {
                self.at_capacity = true;
                tracing::warn!(
                    max_connections = self.options.max_connections,
                    "admin listener: too many connections; new ones are answered 503"
                );
            }
            refuse(stream, 503, "too many admin connections\n");
            return;
        }
        self.at_capacity = false;
        let token = Token(self.next_token);
        self.next_token += 1;
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!(error = %e, "admin listener cannot watch a connection; closing it");
            return;
        }
        let deadline = Instant::now() + self.options.request_timeout;
        self.deadlines.insert((deadline, token));
        self.conns.insert(
            token,
            Conn {
                stream,
                request: Vec::new(),
                response: Vec::new(),
                written: 0,
                drained: 0,
                phase: Phase::Reading,
                deadline,
            },
        );
    }

    /// Moves one connection's exchange on, closing it when it is finished.
    fn drive(&mut self, token: Token) {
        let Some(c) = self.conns.get_mut(&token) else {
            return;
        };
        let before = c.deadline;
        let done = c.advance(&*self.source, self.options.request_timeout);
        let after = c.deadline;
        if after != before {
            self.deadlines.remove(&(before, token));
            self.deadlines.insert((after, token));
        }
        if done {
            self.close(token);
        }
    }

    /// Closes the connections whose time is up, answering 408 to those still sending their
    /// request.
    fn expire(&mut self, now: Instant) {
        while let Some(&(deadline, token)) = self.deadlines.first() {
            if deadline > now {
                return;
            }
            self.deadlines.pop_first();
            if let Some(c) = self.conns.get_mut(&token) {
                if c.phase == Phase::Reading {
                    let _ = c.stream.write(&response(
                        408,
                        "text/plain",
                        "the request head did not arrive in time\n",
                    ));
                }
            }
            self.close(token);
        }
    }

    /// Closes a connection and forgets its deadline.
    fn close(&mut self, token: Token) {
        if let Some(mut c) = self.conns.remove(&token) {
            self.deadlines.remove(&(c.deadline, token));
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
    }
}

impl Conn {
    /// Moves the exchange on as far as the socket allows; true when the connection is
    /// finished. A new phase starts a new deadline.
    fn advance(&mut self, source: &dyn AdminSource, timeout: Duration) -> bool {
        loop {
            match self.phase {
                Phase::Reading => match self.read_request(source) {
                    Progress::Pending => return false,
                    Progress::Finished => return true,
                    Progress::Next => {
                        self.phase = Phase::Writing;
                        self.deadline = Instant::now() + timeout;
                    }
                },
                Phase::Writing => match self.write_response() {
                    Progress::Pending => return false,
                    Progress::Finished => return true,
                    Progress::Next => {
                        let _ = self.stream.shutdown(Shutdown::Write);
                        self.phase = Phase::Draining;
                    }
                },
                Phase::Draining => return self.drain(),
            }
        }
    }

    /// Reads until the request head is complete (the response is then ready), the socket has
    /// nothing more for now, or the client is gone.
    fn read_request(&mut self, source: &dyn AdminSource) -> Progress {
        let mut buf = [0u8; 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    if self.request.iter().all(u8::is_ascii_whitespace) {
                        return Progress::Finished;
                    }
                    // Half closed: the client may still read why its request went unanswered.
                    self.response = response(
                        400,
                        "text/plain",
                        "the request ended before the blank line that ends its head\n",
                    );
                    return Progress::Next;
                }
                Ok(n) => {
                    self.request.extend_from_slice(&buf[..n]);
                    let answer = match parse_head(&self.request) {
                        Head::Incomplete if self.request.len() > MAX_REQUEST => response(
                            431,
                            "text/plain",
                            &format!("the request head is above {MAX_REQUEST} bytes\n"),
                        ),
                        Head::Incomplete => continue,
                        Head::Bad(status, why) => response(status, "text/plain", why),
                        Head::Get(target) => answer(target, source),
                    };
                    self.response = answer;
                    return Progress::Next;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Progress::Finished,
            }
        }
    }

    fn write_response(&mut self) -> Progress {
        while self.written < self.response.len() {
            match self.stream.write(&self.response[self.written..]) {
                Ok(0) => return Progress::Finished,
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Progress::Finished,
            }
        }
        Progress::Next
    }

    /// Reads and throws away what the client still sends, until it closes; true when the
    /// connection can be closed (the client closed, failed, or sent too much).
    fn drain(&mut self) -> bool {
        let mut buf = [0u8; 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(n) => {
                    self.drained += n;
                    if self.drained > MAX_REQUEST {
                        return true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return true,
            }
        }
    }
}

/// How a step of an exchange ended.
enum Progress {
    /// The socket has nothing more for now.
    Pending,
    /// The step is done; the next one starts.
    Next,
    /// The connection is finished.
    Finished,
}

/// What a request head says so far.
#[derive(Debug, PartialEq, Eq)]
enum Head<'a> {
    /// More is needed.
    Incomplete,
    /// A request that cannot be served: the status and why.
    Bad(u16, &'static str),
    /// A complete `GET` of this target.
    Get(&'a [u8]),
}

/// Reads a request head: its request line, then header lines up to the first blank line, each
/// line ended by CRLF or a bare LF. Empty lines before the request line are skipped (RFC 9112,
/// section 2.2). A request line is judged as soon as it is complete, so that a request that
/// can never be served (an HTTP/0.9 one has no header lines and no blank line) is answered at
/// once.
fn parse_head(buf: &[u8]) -> Head<'_> {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let buf = &buf[start..];
    let Some(line_end) = memchr::memchr(b'\n', buf) else {
        return Head::Incomplete;
    };
    let line = buf[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&buf[..line_end]);
    let mut parts = line.split(|&b| b == b' ').filter(|p| !p.is_empty());
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    let (Some(method), Some(target)) = (method, target) else {
        return Head::Bad(400, "a request line is: GET /metrics HTTP/1.1\n");
    };
    let Some(version) = version else {
        return Head::Bad(
            400,
            "HTTP/0.9 is not served: send GET /metrics HTTP/1.1, then a blank line\n",
        );
    };
    if parts.next().is_some() {
        return Head::Bad(400, "a request line is: GET /metrics HTTP/1.1\n");
    }
    if version != b"HTTP/1.1" && version != b"HTTP/1.0" {
        return match version.starts_with(b"HTTP/") {
            true => Head::Bad(505, "only HTTP/1.0 and HTTP/1.1 are served\n"),
            false => Head::Bad(400, "a request line is: GET /metrics HTTP/1.1\n"),
        };
    }
    if !ends_with_blank_line(&buf[line_end..]) {
        return Head::Incomplete;
    }
    if method != b"GET" {
        return Head::Bad(405, "only GET is served\n");
    }
    Head::Get(target)
}

/// Whether a blank line follows one of the line ends in `rest`, which starts at the end of the
/// request line.
fn ends_with_blank_line(rest: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', rest).any(|i| {
        let after = &rest[i + 1..];
        after.starts_with(b"\n") || after.starts_with(b"\r\n")
    })
}

fn answer(target: &[u8], source: &dyn AdminSource) -> Vec<u8> {
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    match path {
        b"/metrics" => response(200, "text/plain; version=0.0.4", &source.metrics()),
        b"/health" => match source.health() {
            Ok(()) => response(200, "text/plain", "ok\n"),
            Err(why) => response(503, "text/plain", &format!("unhealthy: {why}\n")),
        },
        _ => response(404, "text/plain", "not found: try /metrics or /health\n"),
    }
}

fn response(status: u16, content_type: &str, body: &str) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        505 => "HTTP Version Not Supported",
        _ => "Service Unavailable",
    };
    let allow = if status == 405 { "Allow: GET\r\n" } else { "" };
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Answers a connection that will not be served with one write (what the socket takes at once)
/// and closes it.
fn refuse(mut stream: TcpStream, status: u16, why: &str) {
    let _ = stream.write(&response(status, "text/plain", why));
}

/// The descriptor kept in reserve for accepting when the process has none left.
fn open_spare() -> Option<File> {
    #[cfg(unix)]
    {
        File::open("/dev/null").ok()
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Whether accepting failed because the process (`EMFILE`) or the system (`ENFILE`) has no
/// file descriptor left.
fn out_of_descriptors(e: &io::Error) -> bool {
    #[cfg(unix)]
    {
        matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
    }
    #[cfg(not(unix))]
    {
        let _ = e;
        false
    }
}

/// Whether accepting failed because of the waiting connection alone (it was reset or aborted
/// before it was accepted, or a network error was reported on it): the next one may be fine.
fn connection_gone(e: &io::Error) -> bool {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    ) {
        return true;
    }
    #[cfg(target_os = "linux")]
    {
        // accept(2): errors of the new connection that Linux passes on, to be retried.
        matches!(
            e.raw_os_error(),
            Some(
                libc::EPROTO
                    | libc::ENOPROTOOPT
                    | libc::EHOSTDOWN
                    | libc::ENONET
                    | libc::EHOSTUNREACH
                    | libc::EOPNOTSUPP
                    | libc::ENETUNREACH
                    | libc::ENETDOWN
                    | libc::EPERM
            )
        )
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_ends_at_a_blank_line_with_crlf_or_bare_lf() {
        for head in [
            &b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"GET /health HTTP/1.1\n\n",
            b"GET /health HTTP/1.0\nHost: x\n\n",
            b"GET /health HTTP/1.1\r\nHost: x\n\r\n",
            b"\r\nGET /health HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(parse_head(head), Head::Get(b"/health"), "{head:?}");
        }
        for partial in [
            &b""[..],
            b"GET /health HTT",
            b"GET /health HTTP/1.1\r\n",
            b"GET /health HTTP/1.1\nHost: x\n",
            b"GET /health HTTP/1.1\r\nHost: x\r\n\r",
        ] {
            assert_eq!(parse_head(partial), Head::Incomplete, "{partial:?}");
        }
    }

    #[test]
    fn a_request_line_that_cannot_be_served_is_judged_when_it_ends() {
        assert!(
            matches!(parse_head(b"GET /metrics\n"), Head::Bad(400, why) if why.contains("HTTP/0.9"))
        );
        assert!(matches!(parse_head(b"GET /metrics\r\n"), Head::Bad(400, _)));
        assert!(matches!(parse_head(b"GET\r\n"), Head::Bad(400, _)));
        assert!(matches!(
            parse_head(b"GET /metrics HTTP/2.0\r\n"),
            Head::Bad(505, _)
        ));
        assert!(matches!(
            parse_head(b"GET /metrics FTP/1.1\r\n"),
            Head::Bad(400, _)
        ));
        assert!(matches!(
            parse_head(b"GET /metrics HTTP/1.1 extra\r\n"),
            Head::Bad(400, _)
        ));
        assert!(matches!(
            parse_head(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Head::Bad(405, _)
        ));
    }

    struct Fixed;

    impl AdminSource for Fixed {
        fn metrics(&self) -> String {
            "kairos_events_total 3\n".into()
        }
        fn health(&self) -> Result<(), String> {
            Err("no partitions".into())
        }
    }

    #[test]
    fn answers_name_their_status_and_length() {
        let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
        let metrics = text(answer(b"/metrics?x=1", &Fixed));
        assert!(metrics.starts_with("HTTP/1.1 200 OK\r\n"), "{metrics}");
        assert!(metrics.contains("Content-Length: 22\r\n"), "{metrics}");
        assert!(
            metrics.ends_with("\r\n\r\nkairos_events_total 3\n"),
            "{metrics}"
        );
        let health = text(answer(b"/health", &Fixed));
        assert!(health.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(health.ends_with("unhealthy: no partitions\n"), "{health}");
        let missing = text(answer(b"/", &Fixed));
        assert!(
            missing.starts_with("HTTP/1.1 404 Not Found\r\n"),
            "{missing}"
        );
        let post = text(response(405, "text/plain", "only GET is served\n"));
        assert!(post.contains("\r\nAllow: GET\r\n"), "{post}");
    }

    #[test]
    fn options_without_a_connection_or_a_timeout_are_refused() {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        for options in [
            AdminOptions {
                max_connections: 0,
                ..AdminOptions::default()
            },
            AdminOptions {
                request_timeout: Duration::ZERO,
                ..AdminOptions::default()
            },
        ] {
            let e = AdminServer::start_with(addr, options, Arc::new(Fixed))
                .err()
                .expect("refused");
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        }
    }
}
