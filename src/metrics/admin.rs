//! The admin listener: `GET /metrics` (Prometheus text) and `GET /health`, served by a small
//! `mio` event loop on its own thread, off the hot path.

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
/// Requests larger than this are refused: the admin port serves two small GETs.
const MAX_REQUEST: usize = 8192;

/// What the listener serves.
pub trait AdminSource: Send + Sync + 'static {
    /// The `/metrics` body.
    fn metrics(&self) -> String;
    /// `Ok` when healthy, or the reason it is not (served as 503).
    fn health(&self) -> Result<(), String>;
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
    /// `source` until dropped.
    pub fn start(addr: SocketAddr, source: Arc<dyn AdminSource>) -> io::Result<AdminServer> {
        let mut listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("kairos-admin".into())
            .spawn(move || serve(poll, listener, source, stop2))?;
        Ok(AdminServer {
            addr,
            waker,
            stop,
            thread: Some(thread),
        })
    }

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

struct Conn {
    stream: TcpStream,
    request: Vec<u8>,
    response: Vec<u8>,
    written: usize,
}

fn serve(
    mut poll: Poll,
    listener: TcpListener,
    source: Arc<dyn AdminSource>,
    stop: Arc<AtomicBool>,
) {
    let mut events = Events::with_capacity(64);
    let mut conns: HashMap<Token, Conn> = HashMap::new();
    let mut next = 2usize;
    while !stop.load(Ordering::Acquire) {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            tracing::error!(error = %e, "admin listener stopped");
            return;
        }
        for ev in events.iter() {
            match ev.token() {
                WAKER => {}
                LISTENER => loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let token = Token(next);
                            next += 1;
                            if poll
                                .registry()
                                .register(
                                    &mut stream,
                                    token,
                                    Interest::READABLE | Interest::WRITABLE,
                                )
                                .is_ok()
                            {
                                conns.insert(
                                    token,
                                    Conn {
                                        stream,
                                        request: Vec::new(),
                                        response: Vec::new(),
                                        written: 0,
                                    },
                                );
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => break,
                    }
                },
                token => {
                    let done = match conns.get_mut(&token) {
                        Some(c) => drive(c, &*source),
                        None => false,
                    };
                    if done {
                        if let Some(mut c) = conns.remove(&token) {
                            let _ = poll.registry().deregister(&mut c.stream);
                        }
                    }
                }
            }
        }
    }
}

/// Reads the request, answers it, and returns true when the connection is finished.
fn drive(c: &mut Conn, source: &dyn AdminSource) -> bool {
    if c.response.is_empty() {
        let mut buf = [0u8; 1024];
        loop {
            match c.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(n) => {
                    c.request.extend_from_slice(&buf[..n]);
                    if c.request.len() > MAX_REQUEST {
                        c.response = response(413, "text/plain", "request too large\n");
                        break;
                    }
                    if memchr::memmem::find(&c.request, b"\r\n\r\n").is_some() {
                        c.response = answer(&c.request, source);
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return true,
            }
        }
    }
    while c.written < c.response.len() {
        match c.stream.write(&c.response[c.written..]) {
            Ok(n) => c.written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
    true
}

fn answer(request: &[u8], source: &dyn AdminSource) -> Vec<u8> {
    let line = request.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    if method != b"GET" {
        return response(405, "text/plain", "only GET is served\n");
    }
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
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        _ => "Service Unavailable",
    };
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
