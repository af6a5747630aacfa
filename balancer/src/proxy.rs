//! The request path: an HTTP/1 reverse proxy on pingora-core's public API.
//!
//! # Why not pingora-proxy's `ProxyHttp`
//!
//! pingora-proxy 0.9 runs every HTTP/1 request as two futures (one per side) that pass
//! the header and each body chunk to each other through two bounded channels, joined
//! per request. That pipeline was most of the balancer's CPU per request, 1.6 times
//! nginx's (docs/BENCHMARKS.md). Here one task does what nginx does in one pass: read
//! the request header, lease a replica, take an idle connection to it kept by this
//! thread (or open one; [`crate::keepalive`]), write the request and stream its body,
//! read the answer and stream it back, and keep the connection for the next request.
//! No channel, no second task.
//!
//! # Retries, and why they never apply a write twice
//!
//! - A failed *connect* is retried on another replica whatever the method: nothing was
//!   sent.
//! - A failure *after* sending is retried only for GET and HEAD, and for the REST
//!   writes under `/ecanteen/` that carry an `Idempotency-Key` header (the replica
//!   answers a repeat with the first result), and only when the whole body was read and
//!   kept (pingora keeps up to 64 KiB of it; when the replica fails before the body has
//!   all come, the rest is read first). Any other write (every GraphQL mutation,
//!   with the header or without: `/graphql` ignores it) that may have reached a replica
//!   is never replayed; GraphQL clients that need safe retries put an idempotency key in
//!   the mutation's input and retry themselves.
//! - At most `max_tries` attempts, never twice on the same replica.
//!
//! # A client that goes away
//!
//! While the replica works on a request, the client's side is watched: a client that
//! closes its connection then has the replica's connection closed too, as nginx does
//! (`proxy_ignore_client_abort off`), so the replica sees the hang-up and stops.
//!
//! # WebSockets
//!
//! A `101 Switching Protocols` turns both connections into a tunnel: bytes are copied
//! each way, in the same task, until either side closes. The lease is held until then.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use http::Method;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::protocols::http::v1::client::HttpSession as UpstreamSession;
use pingora::protocols::http::v1::common::is_expect_continue_req;
use pingora::protocols::http::v1::server::HttpSession as DownstreamSession;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use pingora::{Error, ErrorType};

use crate::forwarding;
use crate::keepalive::Keepalive;
use crate::limits::{self, Limits};
use crate::metrics::Metrics;
use crate::tracecontext::{Exporter, HopSpan, TraceContext};
use crate::upstream::{Lease, Pool, Upstream};

/// Knobs of the proxy.
#[derive(Clone, Debug)]
pub struct Settings {
    pub max_tries: usize,
    pub body_limit: usize,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub idle_timeout: Duration,
    /// How long a request waits for room on a replica at its cap.
    pub queue_wait: Duration,
    /// Most requests waiting for room at once.
    pub max_queued: usize,
    /// One request in this many gets an access line (0: none).
    pub access_log_every: u64,
}

pub struct Balancer {
    pub pool: Arc<Pool>,
    pub metrics: Arc<Metrics>,
    pub limits: Arc<Limits>,
    pub settings: Settings,
    /// Requests waiting for room now.
    pub queued: AtomicUsize,
    /// Connections to the replicas, idle ones kept per worker thread.
    pub keepalive: Keepalive,
    /// Requests seen, for the access log's sampling.
    pub seen: AtomicU64,
    /// Each request's span, over OTLP, with `--otlp-endpoint`.
    pub traces: Option<Arc<Exporter>>,
}

/// What names one request in the logs of the balancer and of its replica.
struct RequestIds {
    /// `X-Request-Id`: the client's, or a new one.
    request_id: String,
    /// The W3C trace it belongs to, with the balancer's span.
    trace: TraceContext,
    /// The hop's span, when spans are exported.
    hop: Option<HopSpan>,
}

/// How far a request got, for its access line and span.
#[derive(Default)]
struct Progress {
    /// Attempts on replicas so far.
    attempts: usize,
    /// The replica last tried.
    replica: Option<SocketAddr>,
}

/// What the balancer answers itself, and why. Each is one JSON error in the replicas'
/// shape, and closes the client's connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    Malformed,
    MethodNotAllowed,
    TooLarge,
    TooManyRequests(u64),
    NoneReady,
    AtCapacity,
    /// The replica took the request and did not answer in time.
    Slow,
    /// The replica failed (refused, reset, or sent nonsense).
    Failed,
}

impl Refusal {
    fn status(self) -> u16 {
        match self {
            Self::Malformed => 400,
            Self::MethodNotAllowed => 405,
            Self::TooLarge => 413,
            Self::TooManyRequests(_) => 429,
            Self::NoneReady | Self::AtCapacity | Self::Slow => 503,
            Self::Failed => 502,
        }
    }

    fn retry_after(self) -> Option<u64> {
        match self {
            Self::TooManyRequests(seconds) => Some(seconds),
            Self::NoneReady | Self::AtCapacity | Self::Slow | Self::Failed => Some(1),
            Self::Malformed | Self::MethodNotAllowed | Self::TooLarge => None,
        }
    }

    fn body(self, body_limit: usize) -> Bytes {
        let (code, message) = match self {
            Self::Malformed => ("BAD_USER_INPUT", "malformed request".to_owned()),
            Self::MethodNotAllowed => ("BAD_USER_INPUT", "method not allowed".to_owned()),
            Self::TooLarge => (
                "BAD_USER_INPUT",
                format!("the request body is larger than {body_limit} bytes"),
            ),
            Self::TooManyRequests(_) => (
                "TOO_MANY_REQUESTS",
                "too many requests; please slow down".to_owned(),
            ),
            Self::NoneReady => ("INTERNAL", "no replica is ready; please retry".to_owned()),
            Self::AtCapacity => (
                "INTERNAL",
                "every replica is at capacity; please retry".to_owned(),
            ),
            Self::Slow => (
                "INTERNAL",
                "the replica is slow to answer; please retry".to_owned(),
            ),
            Self::Failed => (
                "INTERNAL",
                "the replica failed to answer; please retry".to_owned(),
            ),
        };
        Bytes::from(
            serde_json::json!({ "errors": [{ "message": message, "extensions": { "code": code } }] })
                .to_string(),
        )
    }
}

/// How one attempt on a replica went wrong.
enum Fault {
    /// Nothing reached the replica: another may be tried, whatever the method.
    Connect,
    /// The replica may have the request. `slow`: it did not answer in time.
    AfterSend { slow: bool },
    /// The client's side failed (it went away, or sent a broken body): nobody to
    /// answer.
    Client,
    /// The balancer refuses the request itself (a body over the limit).
    Refused(Refusal),
}

/// The outcome of a request, for the downstream connection.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reuse {
    /// The client's connection can take another request.
    KeepAlive,
    Close,
}

#[async_trait]
impl HttpServerApp for Balancer {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        // No h2c is configured: every session is HTTP/1.
        let ServerSession::H1(downstream) = &mut session else {
            return None;
        };
        let mut stopping = shutdown.clone();
        let read = tokio::select! {
            // A request already buffered is served before the shutdown is looked at.
            biased;
            read = downstream.read_request() => read,
            // Draining: an idle keep-alive connection is closed, not kept waiting.
            _ = stopping.wait_for(|stop| *stop) => return None,
        };
        match read {
            Ok(Some(_)) => {}
            Ok(None) => return None,
            Err(e) => {
                if *e.etype() == ErrorType::InvalidHTTPHeader {
                    self.refuse(downstream, Refusal::Malformed).await;
                }
                return None;
            }
        }
        if *shutdown.borrow() {
            downstream.set_server_keepalive(None);
        }
        let started = Instant::now();
        let header = downstream.req_header();
        let mut ids = RequestIds {
            request_id: forwarding::client_request_id(header)
                .map_or_else(forwarding::new_request_id, str::to_owned),
            trace: TraceContext::continue_or_start(
                header.headers.get("traceparent").map(|v| v.as_bytes()),
            ),
            hop: None,
        };
        let mut progress = Progress::default();
        if let Some(traces) = &self.traces {
            let method = downstream.req_header().method.as_str().to_owned();
            ids.hop = Some(traces.open(&mut ids.trace, &method, SystemTime::now()));
        }
        let traceparent = ids.trace.traceparent();
        let reuse = self
            .serve(downstream, &ids.request_id, &traceparent, &mut progress)
            .await;
        let elapsed = started.elapsed();
        self.metrics.observe(elapsed);
        self.log_access(downstream, &ids, &progress, elapsed);
        if let Some(hop) = ids.hop.take() {
            let status = downstream
                .response_written()
                .map_or(0, |r| r.status.as_u16());
            hop.close(
                status,
                progress.attempts,
                progress.replica.map(|a| a.to_string()),
            );
        }
        if reuse == Reuse::Close {
            return None;
        }
        let settings = HttpPersistentSettings::for_session(&session);
        match session.finish().await {
            Ok(Some(stream)) => Some(ReusedHttpStream::from_reusable_stream(stream, settings)),
            _ => None,
        }
    }
}

impl Balancer {
    /// One access line, for one request in `access_log_every`: what the replica's line
    /// for the same request can be found by (`request_id`, `trace_id`). No path: it
    /// carries ids and usernames, and the replica logs the route's template.
    fn log_access(
        &self,
        downstream: &DownstreamSession,
        ids: &RequestIds,
        progress: &Progress,
        elapsed: Duration,
    ) {
        let every = self.settings.access_log_every;
        if every == 0 || !tracing::enabled!(target: "access", tracing::Level::INFO) {
            return;
        }
        if every > 1
            && !self
                .seen
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(every)
        {
            return;
        }
        let status = downstream
            .response_written()
            .map_or(0, |r| r.status.as_u16());
        let duration_ms = (elapsed.as_secs_f64() * 10_000.0).round() / 10.0;
        tracing::info!(
            target: "access",
            method = %downstream.req_header().method,
            status,
            duration_ms,
            attempts = progress.attempts,
            request_id = %ids.request_id,
            trace_id = %ids.trace.trace_id_hex(),
            "access"
        );
    }

    /// One request, from its header (read) to the end of its answer.
    async fn serve(
        &self,
        downstream: &mut DownstreamSession,
        request_id: &str,
        traceparent: &str,
        progress: &mut Progress,
    ) -> Reuse {
        let client = client_ip(downstream);
        let mut credential = None;
        if self.limits.enabled() {
            credential = self.limits.credential(&downstream.req_header().headers);
            if let Err(wait) = self.limits.check(client, credential) {
                self.metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
                let seconds = limits::retry_after_secs(wait);
                return self
                    .refuse(downstream, Refusal::TooManyRequests(seconds))
                    .await;
            }
        }
        if downstream.req_header().method == Method::CONNECT {
            return self.refuse(downstream, Refusal::MethodNotAllowed).await;
        }
        let declared = downstream
            .req_header()
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|len| len > self.settings.body_limit) {
            return self.refuse(downstream, Refusal::TooLarge).await;
        }
        if !self.pool.any_ready() {
            return self.refuse(downstream, Refusal::NoneReady).await;
        }
        let upgrade = forwarding::is_websocket(downstream.req_header());
        if upgrade {
            // A WebSocket may stay quiet for long; its end, not a timer, ends it.
            downstream.set_read_timeout(None);
        }
        let has_body = !downstream.is_body_empty();
        if has_body {
            // Kept (up to 64 KiB) so that a request that may be replayed can be.
            downstream.enable_retry_buffering();
        }
        let replayable = Self::can_retry_after_send(downstream.req_header()) && !upgrade;

        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut attempts = 0;
        loop {
            attempts += 1;
            progress.attempts = attempts;
            if attempts > 1 {
                self.metrics.retries.fetch_add(1, Ordering::Relaxed);
            }
            let lease = match self.lease(&tried).await {
                Ok(lease) => lease,
                Err(refusal) => return self.refuse(downstream, refusal).await,
            };
            let replica = lease.upstream().clone();
            tried.push(replica.addr);
            progress.replica = Some(replica.addr);
            let request = match forwarding::upstream_request(
                downstream.req_header(),
                has_body,
                client,
                request_id,
                traceparent,
            ) {
                Ok(request) => request,
                Err(_) => return self.refuse(downstream, Refusal::Malformed).await,
            };
            let peer = self.peer(replica.addr, upgrade);
            let fault = match self.keepalive.session(&peer, replica.addr).await {
                Err(_) => Fault::Connect,
                Ok((mut upstream, _reused)) => {
                    if !upgrade {
                        upstream.read_timeout = Some(self.settings.read_timeout);
                        upstream.write_timeout = Some(self.settings.read_timeout);
                    }
                    match self
                        .exchange(downstream, &mut upstream, request, attempts > 1)
                        .await
                    {
                        Ok(()) => {
                            return self
                                .answer(downstream, upstream, lease, request_id, credential)
                                .await;
                        }
                        Err(fault) => fault,
                    }
                }
            };
            let more = attempts < self.settings.max_tries;
            match fault {
                Fault::Connect => {
                    replica.record_outcome(false, &self.pool.policy);
                    if !more {
                        return self.refuse(downstream, Refusal::Failed).await;
                    }
                }
                Fault::AfterSend { slow } => {
                    replica.record_outcome(false, &self.pool.policy);
                    if more && replayable && has_body && !downstream.is_body_done() {
                        // The replica failed before the whole body had come: the rest
                        // is read now, and kept, so the next replica gets all of it.
                        match self.read_rest_of_body(downstream).await {
                            Ok(()) => {}
                            Err(Fault::Refused(refusal)) => {
                                return self.refuse(downstream, refusal).await;
                            }
                            Err(_) => return Reuse::Close,
                        }
                    }
                    let body_kept = !has_body
                        || (downstream.is_body_done() && !downstream.retry_buffer_truncated());
                    if !(more && replayable && body_kept) {
                        let refusal = if slow { Refusal::Slow } else { Refusal::Failed };
                        return self.refuse(downstream, refusal).await;
                    }
                }
                Fault::Client => return Reuse::Close,
                Fault::Refused(refusal) => return self.refuse(downstream, refusal).await,
            }
        }
    }

    /// Sends the request to the replica and reads its answer's header. On a retry
    /// (`replay`), the body is the one kept from the first attempt.
    async fn exchange(
        &self,
        downstream: &mut DownstreamSession,
        upstream: &mut UpstreamSession,
        request: Box<RequestHeader>,
        replay: bool,
    ) -> Result<(), Fault> {
        let sent = |e: Box<Error>| Fault::AfterSend {
            slow: matches!(
                e.etype(),
                ErrorType::ReadTimedout | ErrorType::WriteTimedout
            ),
        };
        upstream.write_request_header(request).await.map_err(sent)?;
        if replay {
            if let Some(body) = downstream.get_retry_buffer() {
                upstream.write_body(&body).await.map_err(sent)?;
            }
        } else if !downstream.is_body_done() {
            Self::continue_body(downstream).await?;
            while let Some(chunk) = self.next_body_chunk(downstream).await? {
                upstream.write_body(&chunk).await.map_err(sent)?;
            }
        }
        upstream.finish_body().await.map_err(sent)?;
        loop {
            let read = tokio::select! {
                biased;
                read = upstream.read_response() => read,
                // The client hung up while the replica works: the replica's connection
                // is closed (dropped) so that it sees the hang-up too.
                _ = downstream.read_body_or_idle(true) => return Err(Fault::Client),
            };
            read.map_err(sent)?;
            match upstream.get_status() {
                // `100 Continue` and other interim answers were the balancer's to give.
                Some(status) if status.is_informational() && status != 101 => continue,
                _ => return Ok(()),
            }
        }
    }

    /// Tells a client that waits for `100 Continue` to send its body.
    async fn continue_body(downstream: &mut DownstreamSession) -> Result<(), Fault> {
        if is_expect_continue_req(downstream.req_header()) {
            downstream
                .write_continue_response()
                .await
                .map_err(|_| Fault::Client)?;
        }
        Ok(())
    }

    /// The next piece of the request's body (pingora keeps it, up to 64 KiB, for a
    /// replay), within the body limit.
    async fn next_body_chunk(
        &self,
        downstream: &mut DownstreamSession,
    ) -> Result<Option<Bytes>, Fault> {
        match downstream.read_body_bytes().await {
            Ok(Some(_)) if downstream.body_bytes_read() > self.settings.body_limit => {
                Err(Fault::Refused(Refusal::TooLarge))
            }
            Ok(chunk) => Ok(chunk),
            Err(_) => Err(Fault::Client),
        }
    }

    /// Reads what is left of a body a failed replica did not take, so that the request
    /// can be replayed whole. Nothing is read when what was kept is already cut short.
    async fn read_rest_of_body(&self, downstream: &mut DownstreamSession) -> Result<(), Fault> {
        if downstream.retry_buffer_truncated() {
            return Ok(());
        }
        // The replica failed on the request's header: the client still waits to be
        // told to send the body.
        if downstream.body_bytes_read() == 0 {
            Self::continue_body(downstream).await?;
        }
        while self.next_body_chunk(downstream).await?.is_some() {}
        Ok(())
    }

    /// Passes the replica's answer back to the client; the lease ends with it.
    async fn answer(
        &self,
        downstream: &mut DownstreamSession,
        mut upstream: UpstreamSession,
        lease: Lease,
        request_id: &str,
        credential: Option<u64>,
    ) -> Reuse {
        let Some(header) = upstream.resp_header() else {
            return Reuse::Close;
        };
        let mut header = Box::new(header.clone());
        let replica = lease.upstream();
        replica.record_outcome(
            !Upstream::counts_as_failure(header.status.as_u16()),
            &self.pool.policy,
        );
        if let (Some(partner), Some(credential)) = (
            forwarding::downstream_response(&mut header, request_id),
            credential,
        ) {
            self.limits.learn(credential, partner);
        }
        if downstream.write_response_header(header).await.is_err() {
            return Reuse::Close;
        }
        if upstream.was_upgraded() && downstream.was_upgraded() {
            tunnel(downstream, &mut upstream).await;
            return Reuse::Close;
        }
        loop {
            match upstream.read_body_ref().await {
                Ok(Some(chunk)) => {
                    if downstream.write_body(chunk).await.is_err() {
                        return Reuse::Close;
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    // The answer is cut short: the client learns it from the close.
                    replica.record_outcome(false, &self.pool.policy);
                    return Reuse::Close;
                }
            }
        }
        if downstream.finish_body().await.is_err() {
            return Reuse::Close;
        }
        self.keepalive.release(upstream, replica.addr).await;
        drop(lease);
        Reuse::KeepAlive
    }

    /// Leases a ready replica not yet tried. When every one is at its cap, waits for
    /// room in a bounded queue; when none is ready, refuses at once.
    async fn lease(&self, tried: &[SocketAddr]) -> Result<Lease, Refusal> {
        if let Some(lease) = self.pool.select(tried) {
            return Ok(lease);
        }
        if !self.pool.any_ready_besides(tried) {
            return Err(Refusal::NoneReady);
        }
        if self.queued.fetch_add(1, Ordering::SeqCst) >= self.settings.max_queued {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(Refusal::AtCapacity);
        }
        // Counted out however the wait ends.
        let _queued = Queued(&self.queued);
        let deadline = tokio::time::Instant::now() + self.settings.queue_wait;
        loop {
            if !self.pool.wait_for_room(deadline).await {
                return Err(Refusal::AtCapacity);
            }
            if let Some(lease) = self.pool.select(tried) {
                return Ok(lease);
            }
        }
    }

    /// The replica as pingora's connector knows it, with the timeouts to open and use a
    /// connection to it.
    fn peer(&self, addr: SocketAddr, upgrade: bool) -> HttpPeer {
        let mut peer = HttpPeer::new(addr, false, String::new());
        let options = &mut peer.options;
        options.connection_timeout = Some(self.settings.connect_timeout);
        options.total_connection_timeout = Some(self.settings.connect_timeout);
        options.idle_timeout = Some(self.settings.idle_timeout);
        if !upgrade {
            options.read_timeout = Some(self.settings.read_timeout);
            options.write_timeout = Some(self.settings.read_timeout);
        }
        peer
    }

    /// Answers the request itself, and closes the connection (an unread body may
    /// follow the header).
    async fn refuse(&self, downstream: &mut DownstreamSession, refusal: Refusal) -> Reuse {
        match refusal {
            Refusal::TooLarge => {
                self.metrics.too_large.fetch_add(1, Ordering::Relaxed);
            }
            Refusal::NoneReady | Refusal::AtCapacity | Refusal::Slow => {
                self.metrics.unavailable.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        if downstream.response_written().is_some() {
            return Reuse::Close;
        }
        let body = refusal.body(self.settings.body_limit);
        if let Err(e) = write_json(downstream, refusal.status(), body, refusal.retry_after()).await
        {
            tracing::debug!(error = %e, "could not send the error response");
        }
        Reuse::Close
    }

    /// Whether a request that may have reached a replica can be sent again: reads, and
    /// the REST writes under `/ecanteen/` that carry an `Idempotency-Key` (the replica
    /// answers a repeat with the first result instead of applying it again). Nothing
    /// else honours the header: `/graphql` reads its keys from the mutation's input, so
    /// a GraphQL mutation sent with the header alone would be applied twice.
    fn can_retry_after_send(request: &RequestHeader) -> bool {
        request.method == Method::GET
            || request.method == Method::HEAD
            || (request.uri.path().starts_with("/ecanteen/")
                && request.headers.contains_key("idempotency-key"))
    }
}

async fn write_json(
    downstream: &mut DownstreamSession,
    status: u16,
    body: Bytes,
    retry_after: Option<u64>,
) -> pingora::Result<()> {
    let mut header = ResponseHeader::build(status, Some(4))?;
    header.insert_header("Content-Type", "application/json")?;
    header.insert_header("Content-Length", body.len().to_string())?;
    header.insert_header("Cache-Control", "no-store")?;
    if let Some(seconds) = retry_after {
        header.insert_header("Retry-After", seconds.to_string())?;
    }
    downstream.set_server_keepalive(None);
    downstream.write_response_header(Box::new(header)).await?;
    downstream.write_body(&body).await?;
    downstream.finish_body().await?;
    Ok(())
}

/// Copies an upgraded connection's bytes both ways until either side closes or fails.
///
/// Both reads wait in one `select!`; the one that loses is dropped, which loses
/// nothing: pingora's body readers keep what they read in the session (pingora-proxy
/// relies on the same when it selects between them).
async fn tunnel(downstream: &mut DownstreamSession, upstream: &mut UpstreamSession) {
    enum Side {
        Client(pingora::Result<Option<Bytes>>),
        Replica(pingora::Result<Option<Bytes>>),
    }
    upstream.maybe_upgrade_body_writer();
    loop {
        let side = tokio::select! {
            read = downstream.read_body_bytes() => Side::Client(read),
            read = upstream.read_body_bytes() => Side::Replica(read),
        };
        let sent = match side {
            Side::Client(Ok(Some(bytes))) => upstream.write_body(&bytes).await.is_ok(),
            Side::Replica(Ok(Some(bytes))) => downstream.write_body(&bytes).await.is_ok(),
            Side::Client(_) | Side::Replica(_) => false,
        };
        if !sent {
            break;
        }
    }
    upstream.shutdown().await;
    downstream.shutdown().await;
}

/// Counts a queued request out when dropped.
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The client's address, for the rate limits and `X-Forwarded-For`.
fn client_ip(downstream: &DownstreamSession) -> Option<IpAddr> {
    downstream
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(SocketAddr::ip)
}
