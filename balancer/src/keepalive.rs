//! Keep-alive connections to the replicas: one pool per worker thread.
//!
//! # Why not pingora-core's connection pool
//!
//! pingora-core 0.9's pool (`TransportConnector`) hands an idle connection to a
//! watcher task, spawned on a random worker thread, that holds it behind an
//! `Arc<Mutex<_>>`. Taking the connection back waits for that lock, then needs
//! `Arc::try_unwrap`; when the watcher's thread is preempted between releasing the lock
//! and dropping its `Arc` (the kernel often runs the woken thread first), the unwrap
//! fails, pingora logs "failed to acquire reusable stream", drops the connection and
//! opens a new one. On this two-core machine, with the stack tests' load, that happened
//! on a large share of reuses (issue #20's CI run: five connections for thirty
//! sequential requests). Each release also spawned a task and each reuse paid a
//! `getpeername` (docs/BENCHMARKS.md).
//!
//! The balancer runs pingora's no-steal runtime: each worker thread is its own
//! current-thread runtime, and a client's connection stays on the thread that accepted
//! it. So the idle connections are kept per thread too: a connection is only ever used
//! on the thread that opened it, nothing is locked, no wakeup crosses threads, and
//! nothing is spawned.
//!
//! # What an idle connection may have become
//!
//! - Closed by the replica (it restarted, or timed the connection out): a read that
//!   does not wait sees the close (or stray bytes) when the connection is next taken,
//!   and it is dropped then, as pingora does.
//! - Idle for longer than `idle_timeout`: closed by the thread's sweep, which runs on a
//!   timer (every half `idle_timeout`, on the thread itself, started with its first
//!   kept connection), so a thread with no traffic does not keep sockets open, and
//!   closed by their replicas, for long; and dropped when next looked at, whichever
//!   comes first.
//! - More than `max_idle` per replica on one thread: the oldest are closed.
//!
//! Opening connections is pingora-core's (`TransportConnector::new_stream`, with the
//! peer's timeouts), and so is the HTTP/1 session on it.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::Future as _;
use std::net::SocketAddr;
use std::pin::pin;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use pingora::connectors::{ConnectorOptions, TransportConnector};
use pingora::prelude::HttpPeer;
use pingora::protocols::http::v1::client::HttpSession;
use pingora::protocols::l4::ext::get_tcp_info;
use pingora::protocols::{Stream, UniqueID};
use tokio::io::AsyncReadExt as _;

/// An idle connection, and since when.
struct Idle {
    stream: Stream,
    since: Instant,
}

/// One thread's idle connections, by replica, most recently used last.
#[derive(Default)]
struct ThreadPool {
    idle: HashMap<SocketAddr, VecDeque<Idle>>,
    /// The thread's sweep, while it runs (it ends with the thread's runtime).
    sweeper: Option<tokio::task::AbortHandle>,
}

impl ThreadPool {
    /// Closes what has been idle for `timeout` or more, or that its replica closed.
    fn sweep(&mut self, now: Instant, timeout: Duration) {
        self.idle.retain(|_, queue| {
            queue.retain_mut(|idle| {
                now.saturating_duration_since(idle.since) < timeout && still_open(&mut idle.stream)
            });
            !queue.is_empty()
        });
    }
}

/// How many bytes sent on the connection the replica's TCP stack has acknowledged
/// (Linux `TCP_INFO`, `tcpi_bytes_acked`); `None` where the kernel does not say. A
/// replica's process can only have read bytes its kernel acknowledged, and the FIN a
/// closing (or killed) process's kernel sends acknowledges everything it received
/// before the close is seen here; see [`crate::retry`].
pub fn bytes_acked(connection: &impl UniqueID) -> Option<u64> {
    get_tcp_info(connection.id())
        .ok()
        .map(|info| info.tcpi_bytes_acked)
        .filter(|_| cfg!(target_os = "linux"))
}

thread_local! {
    static POOL: RefCell<ThreadPool> = RefCell::default();
}

/// Connections to the replicas: new ones from pingora-core, reused ones from the
/// calling thread's pool.
pub struct Keepalive {
    transport: TransportConnector,
    idle_timeout: Duration,
    max_idle: usize,
}

impl Keepalive {
    /// `max_idle`: most idle connections kept per replica on each thread.
    pub fn new(options: ConnectorOptions, idle_timeout: Duration, max_idle: usize) -> Self {
        Self {
            transport: TransportConnector::new(Some(options)),
            idle_timeout,
            max_idle,
        }
    }

    /// A session on an idle connection to `addr` kept by this thread, or else on a new
    /// one. The flag says whether the connection was reused.
    pub async fn session(
        &self,
        peer: &HttpPeer,
        addr: SocketAddr,
    ) -> pingora::Result<(HttpSession, bool)> {
        if let Some(stream) = self.take(addr) {
            return Ok((HttpSession::new_with_options(stream, peer), true));
        }
        let stream = self.transport.new_stream(peer).await?;
        Ok((HttpSession::new_with_options(stream, peer), false))
    }

    /// Keeps the session's connection for the next request to `addr`, when its answer
    /// was read whole and both sides keep it alive; closes it otherwise.
    pub async fn release(&self, mut session: HttpSession, addr: SocketAddr) {
        session.respect_keepalive();
        if let Some(stream) = session.reuse().await {
            self.put(addr, stream, Instant::now());
        }
    }

    fn take(&self, addr: SocketAddr) -> Option<Stream> {
        let now = Instant::now();
        POOL.with_borrow_mut(|pool| {
            let queue = pool.idle.get_mut(&addr)?;
            while let Some(Idle { mut stream, since }) = queue.pop_back() {
                if now.saturating_duration_since(since) >= self.idle_timeout {
                    // The rest are older still.
                    queue.clear();
                    break;
                }
                if still_open(&mut stream) {
                    return Some(stream);
                }
            }
            None
        })
    }

    fn put(&self, addr: SocketAddr, stream: Stream, now: Instant) {
        if self.max_idle == 0 {
            return;
        }
        let timeout = self.idle_timeout;
        POOL.with_borrow_mut(|pool| {
            let queue = pool.idle.entry(addr).or_default();
            if queue.len() >= self.max_idle {
                queue.pop_front();
            }
            queue.push_back(Idle { stream, since: now });
            if pool
                .sweeper
                .as_ref()
                .is_none_or(tokio::task::AbortHandle::is_finished)
            {
                // On this thread's own runtime (pingora's no-steal flavour: one
                // current-thread runtime per worker), so it sees this thread's pool.
                let sweep = tokio::spawn(async move {
                    let period = (timeout / 2).max(Duration::from_millis(50));
                    let mut every = tokio::time::interval(period);
                    loop {
                        every.tick().await;
                        POOL.with_borrow_mut(|pool| pool.sweep(Instant::now(), timeout));
                    }
                });
                pool.sweeper = Some(sweep.abort_handle());
            }
        });
    }

    /// How many idle connections this thread keeps to `addr`.
    #[cfg(test)]
    fn idle_here(addr: SocketAddr) -> usize {
        POOL.with_borrow(|pool| pool.idle.get(&addr).map_or(0, VecDeque::len))
    }
}

/// Whether an idle connection can take a request: a read that does not wait finds
/// nothing. A close, an error or bytes nobody asked for all mean it cannot.
fn still_open(stream: &mut Stream) -> bool {
    let mut byte = [0u8; 1];
    // Unconstrained: tokio's cooperative budget must not make a ready read look pending.
    let read = pin!(tokio::task::unconstrained(stream.read(&mut byte)));
    read.poll(&mut Context::from_waker(Waker::noop()))
        .is_pending()
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::AsyncWriteExt as _;
    use tokio::net::TcpListener;

    /// A replica that answers every request on a connection with an empty 200, and
    /// counts the connections it accepted.
    async fn replica() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted, counted) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let _ = accepted.send(());
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let mut seen = Vec::new();
                    loop {
                        match socket.read(&mut buf).await {
                            Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
                            _ => return,
                        }
                        while let Some(at) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..at + 4);
                            let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                            if socket.write_all(ok).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, counted)
    }

    fn keepalive(idle_timeout: Duration, max_idle: usize) -> Keepalive {
        Keepalive::new(ConnectorOptions::new(8), idle_timeout, max_idle)
    }

    async fn get(keepalive: &Keepalive, addr: SocketAddr) -> bool {
        let peer = HttpPeer::new(addr, false, String::new());
        let (mut session, reused) = keepalive.session(&peer, addr).await.unwrap();
        let request = pingora::http::RequestHeader::build("GET", b"/", None).unwrap();
        session
            .write_request_header(Box::new(request))
            .await
            .unwrap();
        session.finish_body().await.unwrap();
        session.read_response().await.unwrap();
        while session.read_body_ref().await.unwrap().is_some() {}
        keepalive.release(session, addr).await;
        reused
    }

    /// A replica whose accepted connections are handled by `replica` (the socket, once
    /// accepted), and a session on a new connection to it.
    async fn session_to<F, Fut>(replica: F) -> HttpSession
    where
        F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            if let Ok((socket, _)) = listener.accept().await {
                replica(socket).await;
            }
        });
        let peer = HttpPeer::new(addr, false, String::new());
        let (session, _) = keepalive(Duration::from_secs(60), 4)
            .session(&peer, addr)
            .await
            .unwrap();
        session
    }

    /// Sends a POST on the session and waits for the answer that never comes. The
    /// bytes acknowledged before it and after.
    async fn post_unanswered(session: &mut HttpSession) -> (Option<u64>, Option<u64>) {
        let before = bytes_acked(session);
        let mut request = pingora::http::RequestHeader::build("POST", b"/graphql", None).unwrap();
        request.insert_header("content-length", "2").unwrap();
        let _ = session.write_request_header(Box::new(request)).await;
        let _ = session.write_body(b"{}").await;
        let _ = session.finish_body().await;
        assert!(session.read_response().await.is_err(), "no answer");
        (before, bytes_acked(session))
    }

    /// The idle-close race: the replica let the connection go before the request came.
    /// Its kernel answers the request with a reset and acknowledges none of it.
    #[tokio::test(flavor = "current_thread")]
    async fn a_request_sent_on_a_connection_the_replica_closed_is_not_acknowledged() {
        let mut session = session_to(|socket| async move { drop(socket) }).await;
        // The replica's FIN has come; the request is written after it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (before, after) = post_unanswered(&mut session).await;
        assert!(before.is_some());
        assert_eq!(before, after, "not a byte of the request acknowledged");
    }

    /// A replica killed as it works on a request it read: its kernel's FIN
    /// acknowledges the request, so it is not taken for the race.
    #[tokio::test(flavor = "current_thread")]
    async fn a_request_the_replica_read_before_it_died_is_acknowledged() {
        let mut session = session_to(|mut socket| async move {
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            // The header and the two bytes of body, then gone without a word.
            while !seen.ends_with(b"\r\n\r\n{}") {
                match socket.read(&mut buf).await {
                    Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
                    _ => return,
                }
            }
        })
        .await;
        let (before, after) = post_unanswered(&mut session).await;
        assert!(
            after > before,
            "acknowledged by the close: {before:?} → {after:?}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn sequential_requests_share_one_connection() {
        let (addr, mut accepted) = replica().await;
        let keepalive = keepalive(Duration::from_secs(60), 4);
        assert!(!get(&keepalive, addr).await, "the first connection is new");
        for _ in 0..20 {
            assert!(get(&keepalive, addr).await, "reused");
        }
        assert_eq!(accepted.recv().await, Some(()));
        assert!(accepted.try_recv().is_err(), "one connection in all");
        assert_eq!(Keepalive::idle_here(addr), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_connection_the_replica_closed_is_not_reused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Answers one request per connection, keep-alive, then closes it.
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                let _ = socket.write_all(ok).await;
                drop(socket);
            }
        });
        let keepalive = keepalive(Duration::from_secs(60), 4);
        assert!(!get(&keepalive, addr).await);
        // The close reaches the balancer's side of the socket.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !get(&keepalive, addr).await,
            "a closed connection is dropped, and a new one opened"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_idle_connection_past_its_timeout_is_dropped() {
        let (addr, _accepted) = replica().await;
        let keepalive = keepalive(Duration::from_millis(50), 4);
        assert!(!get(&keepalive, addr).await);
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(!get(&keepalive, addr).await, "expired, so not reused");
    }

    /// With no further traffic on the thread, its sweep closes an idle connection once
    /// its timeout has passed: the replica sees the close.
    #[tokio::test(flavor = "current_thread")]
    async fn an_idle_connection_is_closed_on_a_timer_without_traffic() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (closed, mut seen_closed) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
            let _ = socket.write_all(ok).await;
            // The next read ends when the balancer closes its side.
            let _ = socket.read(&mut buf).await;
            let _ = closed.send(());
        });
        let keepalive = keepalive(Duration::from_millis(100), 4);
        assert!(!get(&keepalive, addr).await);
        assert_eq!(Keepalive::idle_here(addr), 1);
        let close = tokio::time::timeout(Duration::from_secs(2), seen_closed.recv()).await;
        assert_eq!(
            close,
            Ok(Some(())),
            "the idle connection was closed by the sweep"
        );
        assert_eq!(Keepalive::idle_here(addr), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn at_most_max_idle_are_kept_per_replica() {
        let (addr, _accepted) = replica().await;
        let keepalive = keepalive(Duration::from_secs(60), 2);
        let peer = HttpPeer::new(addr, false, String::new());
        let mut streams = Vec::new();
        for _ in 0..3 {
            streams.push(keepalive.transport.new_stream(&peer).await.unwrap());
        }
        for stream in streams {
            keepalive.put(addr, stream, Instant::now());
        }
        assert_eq!(Keepalive::idle_here(addr), 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_sweep_closes_what_an_unused_replica_left_idle() {
        let (unused, _a) = replica().await;
        let (busy, _b) = replica().await;
        let keepalive = keepalive(Duration::from_millis(50), 4);
        assert!(!get(&keepalive, unused).await);
        assert!(!get(&keepalive, busy).await);
        tokio::time::sleep(Duration::from_millis(80)).await;
        // Requests to the busy replica only: the unused one's connection is swept.
        get(&keepalive, busy).await;
        assert_eq!(Keepalive::idle_here(unused), 0);
    }
}
