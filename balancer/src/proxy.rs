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
//! # What a request may hold, and when
//!
//! A connection is admitted under the connection caps ([`crate::connections`]) and
//! every phase of it has a deadline: the whole first header
//! (`--client-header-timeout-secs`), the wait for the next request on a kept-alive
//! connection, its header included (`--keepalive-timeout-secs`), the body
//! (`--client-body-timeout-secs`), each write of the answer
//! (`--client-send-timeout-secs`). A lease on a replica is taken only once the request
//! is ready to send: a JSON body is read whole first, within its route's bound
//! ([`crate::routes`]), so a client that dawdles holds a socket, never a replica's slot.
//! Uploads (pictures) are streamed, within their own bound.
//!
//! # Retries, and why they never apply a write twice
//!
//! Whether a failed attempt goes to another replica is one pure function,
//! [`crate::retry::retry`], whose module says the rules: after a request went out, any
//! method is sent again only when the replica's kernel acknowledged none of it (the
//! idle-close race); otherwise only what may be repeated (GET, HEAD, a keyed REST
//! write), so a replica that dies holding a mutation never gets it applied twice.
//! Only what was read is replayed:
//! a JSON body is in memory, an upload is replayed only when all of it was kept.
//!
//! # A client that goes away
//!
//! While the replica works on a request, the client's side is watched: a client that
//! closes its connection then has the replica's connection closed too, as nginx does
//! (`proxy_ignore_client_abort off`), so the replica sees the hang-up and stops.
//!
//! # WebSockets
//!
//! Only `GET /graphql/ws` is upgraded. A `101 Switching Protocols` turns both
//! connections into a tunnel: bytes are copied each way, in the same task, until either
//! side closes. A tunnel is not work in flight: its lease on the replica ends at the
//! `101`, and it holds a place in the WebSocket budget instead (`--max-websockets`, in
//! all and per client address). The read deadline is lifted only then.

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

use crate::client_addr::TrustedProxies;
use crate::connections::AddressCaps;
use crate::forwarding::{self, Framing};
use crate::keepalive::{self, Keepalive};
use crate::limits::{self, Limits};
use crate::metrics::Metrics;
use crate::refusal::Refusal;
use crate::retry::{self, Attempt, Phase};
use crate::routes::{self, BodyKind, BodyLimits, Envelope};
use crate::tracecontext::{Exporter, HopSpan, TraceContext};
use crate::upstream::{Lease, Pool, Upstream};

/// How long a replica that failed to take a body is given to say why (its early answer).
const EARLY_ANSWER_WAIT: Duration = Duration::from_secs(1);

/// How soon after a request is written the close of its reused connection may be the
/// race with the replica closing it while idle: the replica's reset to a request that
/// came after its close arrives within a round trip. (With none of the request
/// acknowledged besides: see [`crate::retry`].)
const IDLE_RACE_WINDOW: Duration = Duration::from_millis(100);

/// Answers up to this long are read whole from the replica before the client is written
/// to, so the replica's slot is given back before a slow client reads them.
const ANSWER_BUFFER: usize = 1024 * 1024;

/// Knobs of the proxy.
#[derive(Clone, Debug)]
pub struct Settings {
    pub max_tries: usize,
    /// The bounds on request bodies, by route.
    pub bodies: BodyLimits,
    /// The longest a JSON body may take to arrive, from the end of its header; for an
    /// upload, the longest wait for each piece of it.
    pub client_body_timeout: Duration,
    /// The longest a new connection may take to send its whole first header.
    pub client_header_timeout: Duration,
    /// The longest a kept-alive connection may wait for its next request, whole header
    /// included.
    pub keepalive_timeout: Duration,
    /// The longest one write of an answer may wait for the client to read.
    pub client_send_timeout: Duration,
    /// The longest an upload may take, from its header; below the replicas'
    /// `--request-timeout-secs`, so the balancer answers a dawdling upload, not a
    /// replica's 504.
    pub upload_timeout: Duration,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
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
    /// Whose `X-Forwarded-For` names the client.
    pub trusted: Arc<TrustedProxies>,
    /// WebSocket tunnels, in all and per client address (`--max-websockets…`).
    pub websockets: Arc<AddressCaps>,
    /// Requests in flight per client address (`--max-in-flight-per-address`).
    pub in_flight_per_address: AddressCaps,
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

/// How one attempt on a replica went wrong.
enum Fault {
    /// The replica may have the request, or nothing reached it (`Phase::Connect`).
    /// `slow`: it did not answer in time.
    Replica { phase: Phase, slow: bool },
    /// The client's side failed (it went away, or sent a broken body): nobody to
    /// answer.
    Client,
    /// The balancer refuses the request itself (a body over the limit).
    Refused(Refusal),
}

/// A request's body, as the attempts send it.
enum Body {
    None,
    /// A JSON body, read whole before a replica was leased: every attempt sends it all.
    Whole(Bytes),
    /// An upload, streamed from the client as it comes (pingora keeps up to 64 KiB for
    /// a replay).
    Streamed,
}

/// How an exchange with a replica ended well.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Answered {
    /// After the whole request was sent.
    Fully,
    /// Before the replica had taken the whole body (it refused it: a 413, a 401): the
    /// answer is relayed, and both connections are closed, with the rest unsent.
    Early,
}

/// The mark a kept-alive connection carries from one request to the next.
struct KeptAlive;

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
        // A connection that served a request before carries a mark to the next one.
        let kept_alive = session.take_connection_user_context().is_some();
        // No h2c is configured: every session is HTTP/1.
        let ServerSession::H1(downstream) = &mut session else {
            return None;
        };
        // The whole header within one deadline, however it trickles in: a fresh
        // connection's, or a kept-alive one's wait for its next request.
        let deadline = if kept_alive {
            self.settings.keepalive_timeout
        } else {
            self.settings.client_header_timeout
        };
        downstream.set_write_timeout(Some(self.settings.client_send_timeout));
        let mut stopping = shutdown.clone();
        let read = tokio::select! {
            // A request already buffered is served before the shutdown is looked at.
            biased;
            read = tokio::time::timeout(deadline, downstream.read_request()) => match read {
                Ok(read) => read,
                Err(_) => {
                    self.metrics.client_timeouts.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
            },
            // Draining: an idle keep-alive connection is closed, not kept waiting.
            _ = stopping.wait_for(|stop| *stop) => return None,
        };
        match read {
            Ok(Some(_)) => {}
            Ok(None) => return None,
            Err(e) => {
                if *e.etype() == ErrorType::InvalidHTTPHeader {
                    // No route is known: the GraphQL envelope, the default.
                    self.refuse(downstream, Envelope::GraphQl, Refusal::Malformed)
                        .await;
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
        let mut settings = HttpPersistentSettings::for_session(&session);
        settings.set_user_context(Box::new(KeptAlive));
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
        let peer = peer_ip(downstream);
        let client = self.trusted.client(
            peer,
            downstream
                .req_header()
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .map(|v| v.as_bytes()),
        );
        let header = downstream.req_header();
        let route = routes::classify(
            &header.method,
            header.uri.path(),
            header
                .headers
                .get(http::header::CONTENT_TYPE)
                .map(|v| v.as_bytes()),
        );
        let envelope = route.envelope;
        let mut credential = None;
        if self.limits.enabled() {
            credential = self.limits.credential(&downstream.req_header().headers);
            if let Err(wait) = self.limits.check(client, credential) {
                self.metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
                let seconds = limits::retry_after_secs(wait);
                return self
                    .refuse(downstream, envelope, Refusal::TooManyRequests(seconds))
                    .await;
            }
        }
        if downstream.req_header().method == Method::CONNECT {
            return self
                .refuse(downstream, envelope, Refusal::MethodNotAllowed)
                .await;
        }
        let limit = self.settings.bodies.of(route.body);
        let declared = downstream
            .req_header()
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|len| len > limit) {
            return self
                .refuse(downstream, envelope, Refusal::TooLarge(limit))
                .await;
        }
        if !self.pool.any_ready() {
            return self.refuse(downstream, envelope, Refusal::NoneReady).await;
        }
        // Only `GET /graphql/ws` becomes a WebSocket; an `Upgrade` elsewhere is dropped
        // with the other hop-by-hop fields, and the request is an ordinary one.
        let upgrade = route.websocket && forwarding::is_websocket(downstream.req_header());
        // A tunnel's place in the WebSocket budget, held until it closes.
        let _tunnel = if upgrade {
            match self.websockets.admit(client) {
                Some(place) => Some(place),
                None => {
                    self.metrics
                        .websockets_refused
                        .fetch_add(1, Ordering::Relaxed);
                    return self.refuse(downstream, envelope, Refusal::AtCapacity).await;
                }
            }
        } else {
            None
        };
        // Each read of the body waits at most this long (a JSON body also has a deadline
        // for the whole of it).
        downstream.set_read_timeout(Some(self.settings.client_body_timeout));
        let body = if downstream.is_body_empty() {
            Body::None
        } else if route.body == BodyKind::Json {
            // Read whole before a replica is leased: a client that sends slowly, or
            // never finishes, holds no replica's slot while it does.
            match self.read_whole_body(downstream, limit).await {
                Ok(bytes) => Body::Whole(bytes),
                Err(Fault::Refused(refusal)) => {
                    return self.refuse(downstream, envelope, refusal).await
                }
                Err(_) => return Reuse::Close,
            }
        } else {
            // Kept (up to 64 KiB) so that a request that may be replayed can be.
            downstream.enable_retry_buffering();
            Body::Streamed
        };
        let request = downstream.req_header();
        let safe = request.method == Method::GET || request.method == Method::HEAD;
        let framing = match &body {
            Body::None => Framing::None,
            Body::Whole(bytes) => Framing::Length(bytes.len()),
            Body::Streamed => Framing::Streamed,
        };
        // A client's place among its address's requests in flight, held to the end of
        // the answer: one address cannot take every replica's slots. (A WebSocket holds
        // a place in the WebSocket budget instead, for its whole life.)
        let _in_flight = if upgrade {
            None
        } else {
            match self.in_flight_per_address.admit(client) {
                Some(place) => Some(place),
                None => {
                    self.metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
                    return self
                        .refuse(downstream, envelope, Refusal::TooManyRequests(1))
                        .await;
                }
            }
        };
        let started = Instant::now();

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
                Err(refusal) => return self.refuse(downstream, envelope, refusal).await,
            };
            let replica = lease.upstream().clone();
            tried.push(replica.addr);
            progress.replica = Some(replica.addr);
            let request = match forwarding::upstream_request(
                downstream.req_header(),
                framing,
                upgrade,
                peer,
                client,
                request_id,
                traceparent,
            ) {
                Ok(request) => request,
                Err(_) => return self.refuse(downstream, envelope, Refusal::Malformed).await,
            };
            // Keyed as the replica will see it (a `Connection` header may have named
            // the key away).
            let keyed = route.honours_key && request.headers.contains_key("idempotency-key");
            let peer = self.peer(replica.addr);
            let (fault, reused, unread) = match self.keepalive.session(&peer, replica.addr).await {
                Err(_) => (
                    Fault::Replica {
                        phase: Phase::Connect,
                        slow: false,
                    },
                    false,
                    true,
                ),
                Ok((mut upstream, reused)) => {
                    if !upgrade {
                        upstream.read_timeout = Some(self.settings.read_timeout);
                        upstream.write_timeout = Some(self.settings.read_timeout);
                    }
                    let acked = keepalive::bytes_acked(&upstream);
                    let sending = Instant::now();
                    match self
                        .exchange(downstream, &mut upstream, request, &body, limit, started)
                        .await
                    {
                        Ok(answered) => {
                            return self
                                .answer(
                                    downstream,
                                    upstream,
                                    lease,
                                    request_id,
                                    credential,
                                    answered,
                                    matches!(body, Body::Streamed),
                                )
                                .await;
                        }
                        // Read after the failure: a kernel that acknowledged nothing
                        // of the request has handed none of it to the replica.
                        Err(fault) => {
                            let race = reused
                                && sending.elapsed() < IDLE_RACE_WINDOW
                                && unacknowledged(acked, &upstream);
                            (fault, reused, race)
                        }
                    }
                }
            };
            let (phase, slow) = match fault {
                Fault::Replica { phase, slow } => (phase, slow),
                Fault::Client => return Reuse::Close,
                Fault::Refused(refusal) => return self.refuse(downstream, envelope, refusal).await,
            };
            // Nor does a failure while an upload was still coming in: the client chose
            // its pace.
            let uploading = matches!(body, Body::Streamed) && !downstream.is_body_done();
            if retry::counts_against_replica(phase, reused) && !uploading {
                replica.record_outcome(false, &self.pool.policy);
            }
            let mut attempt = Attempt {
                phase,
                safe,
                keyed,
                body_at_hand: self.body_at_hand(downstream, &body),
                unread,
                more: attempts < self.settings.max_tries,
            };
            if !attempt.body_at_hand
                && attempt.more
                && retry::retry(Attempt {
                    body_at_hand: true,
                    ..attempt
                })
            {
                // The replica failed before the whole upload had come: the rest is read
                // now, and kept (when it fits), so the next replica gets all of it.
                match self.read_rest_of_body(downstream, limit).await {
                    Ok(()) => attempt.body_at_hand = self.body_at_hand(downstream, &body),
                    Err(Fault::Refused(refusal)) => {
                        return self.refuse(downstream, envelope, refusal).await;
                    }
                    Err(_) => return Reuse::Close,
                }
            }
            if !retry::retry(attempt) {
                let refusal = if slow { Refusal::Slow } else { Refusal::Failed };
                return self.refuse(downstream, envelope, refusal).await;
            }
        }
    }

    /// Whether the body can be sent again whole: none, all of it in memory, or an
    /// upload of which nothing has been read yet or all was kept.
    fn body_at_hand(&self, downstream: &mut DownstreamSession, body: &Body) -> bool {
        match body {
            Body::None | Body::Whole(_) => true,
            Body::Streamed => {
                downstream.body_bytes_read() == 0
                    || (downstream.is_body_done() && !downstream.retry_buffer_truncated())
            }
        }
    }

    /// Sends the request to the replica and reads its answer's header. A streamed body
    /// of which some was read already (an earlier attempt sent it) is sent from what
    /// was kept; only what was read is replayed.
    async fn exchange(
        &self,
        downstream: &mut DownstreamSession,
        upstream: &mut UpstreamSession,
        request: Box<RequestHeader>,
        body: &Body,
        limit: usize,
        started: Instant,
    ) -> Result<Answered, Fault> {
        let sent = |e: Box<Error>| Fault::Replica {
            phase: match e.etype() {
                ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError => {
                    Phase::Closed
                }
                _ => Phase::NoAnswer,
            },
            slow: matches!(
                e.etype(),
                ErrorType::ReadTimedout | ErrorType::WriteTimedout
            ),
        };
        upstream.write_request_header(request).await.map_err(sent)?;
        let written = match body {
            Body::None => Ok(()),
            Body::Whole(bytes) if bytes.is_empty() => Ok(()),
            Body::Whole(bytes) => upstream.write_body(bytes).await.map(|_| ()),
            Body::Streamed => {
                let mut written = Ok(());
                if downstream.body_bytes_read() > 0 {
                    if let Some(kept) = downstream.get_retry_buffer() {
                        written = upstream.write_body(&kept).await.map(|_| ());
                    }
                }
                if written.is_ok() && !downstream.is_body_done() {
                    Self::continue_body(downstream).await?;
                    // The whole upload within its deadline, however it trickles: it
                    // holds a lease while it comes.
                    let deadline =
                        tokio::time::Instant::from_std(started + self.settings.upload_timeout);
                    loop {
                        let next = tokio::time::timeout_at(
                            deadline,
                            self.next_body_chunk(downstream, limit),
                        );
                        let chunk = match next.await {
                            Ok(chunk) => chunk?,
                            Err(_) => return Err(Fault::Refused(Refusal::TooSlow)),
                        };
                        let Some(chunk) = chunk else { break };
                        // An empty piece (a read that ended inside a chunk's framing)
                        // would be written as the end of a chunked body.
                        if chunk.is_empty() {
                            continue;
                        }
                        if let Err(e) = upstream.write_body(&chunk).await {
                            written = Err(e);
                            break;
                        }
                    }
                }
                written
            }
        };
        let written = match written {
            Ok(()) => upstream.finish_body().await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            // The replica may have stopped reading because it has answered already (a
            // 413, a 401): that answer is the client's.
            return match tokio::time::timeout(EARLY_ANSWER_WAIT, upstream.read_response()).await {
                Ok(Ok(_)) if upstream.get_status().is_some_and(|s| !s.is_informational()) => {
                    Ok(Answered::Early)
                }
                _ => Err(sent(e)),
            };
        }
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
                _ => return Ok(Answered::Fully),
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
    /// replay), within `limit`.
    async fn next_body_chunk(
        &self,
        downstream: &mut DownstreamSession,
        limit: usize,
    ) -> Result<Option<Bytes>, Fault> {
        match downstream.read_body_bytes().await {
            Ok(Some(_)) if downstream.body_bytes_read() > limit => {
                Err(Fault::Refused(Refusal::TooLarge(limit)))
            }
            Ok(chunk) => Ok(chunk),
            Err(e) if e.etype() == &ErrorType::ReadTimedout => {
                Err(Fault::Refused(Refusal::TooSlow))
            }
            Err(_) => Err(Fault::Client),
        }
    }

    /// A JSON body, whole, within `limit` and the body deadline
    /// (`--client-body-timeout-secs`, from the end of the header).
    async fn read_whole_body(
        &self,
        downstream: &mut DownstreamSession,
        limit: usize,
    ) -> Result<Bytes, Fault> {
        let read = async {
            Self::continue_body(downstream).await?;
            let mut body = bytes::BytesMut::new();
            while let Some(chunk) = self.next_body_chunk(downstream, limit).await? {
                body.extend_from_slice(&chunk);
            }
            Ok(body.freeze())
        };
        match tokio::time::timeout(self.settings.client_body_timeout, read).await {
            Ok(read) => read,
            Err(_) => Err(Fault::Refused(Refusal::TooSlow)),
        }
    }

    /// Reads what is left of an upload a failed replica did not take, so that the
    /// request can be replayed whole. Nothing is read when what was kept is already
    /// cut short.
    async fn read_rest_of_body(
        &self,
        downstream: &mut DownstreamSession,
        limit: usize,
    ) -> Result<(), Fault> {
        if downstream.retry_buffer_truncated() {
            return Ok(());
        }
        // The replica failed on the request's header: the client still waits to be
        // told to send the body.
        if downstream.body_bytes_read() == 0 {
            Self::continue_body(downstream).await?;
        }
        while self.next_body_chunk(downstream, limit).await?.is_some() {}
        Ok(())
    }

    /// Passes the replica's answer back to the client. An answer of up to
    /// [`ANSWER_BUFFER`] bytes is read whole first, and the lease and the connection to
    /// the replica are given back before the client is written to: a client that reads
    /// slowly holds a socket, not a replica's slot. A longer one (a picture, an export)
    /// is streamed, the lease held to its end. After an early answer (the body not all
    /// sent), both connections are closed.
    #[expect(
        clippy::too_many_arguments,
        reason = "the request's own facts, each needed to close it properly"
    )]
    async fn answer(
        &self,
        downstream: &mut DownstreamSession,
        mut upstream: UpstreamSession,
        lease: Lease,
        request_id: &str,
        credential: Option<u64>,
        answered: Answered,
        streamed: bool,
    ) -> Reuse {
        let Some(header) = upstream.resp_header() else {
            return Reuse::Close;
        };
        let mut header = Box::new(header.clone());
        let replica = lease.upstream().clone();
        let status = header.status.as_u16();
        // A 5xx to an upload says nothing of the replica: the client chose how long the
        // body took (a replica's 504 at its own deadline while the body trickled in).
        if !(streamed && status >= 500) {
            replica.record_outcome(!Upstream::counts_as_failure(status), &self.pool.policy);
        }
        if let (Some(partner), Some(credential)) = (
            forwarding::downstream_response(&mut header, request_id),
            credential,
        ) {
            self.limits.learn(credential, partner);
        }
        if answered == Answered::Early {
            downstream.set_server_keepalive(None);
        }
        if downstream.write_response_header(header).await.is_err() {
            return Reuse::Close;
        }
        if upstream.was_upgraded() && downstream.was_upgraded() {
            // A tunnel is no request in flight: it leaves the replica's cap.
            drop(lease);
            downstream.set_read_timeout(None);
            tunnel(downstream, &mut upstream).await;
            return Reuse::Close;
        }
        let mut lease = Some(lease);
        let mut upstream = Some(upstream);
        let mut kept = bytes::BytesMut::new();
        let mut whole = false;
        if let Some(up) = upstream.as_mut() {
            loop {
                match up.read_body_ref().await {
                    // An empty piece (a read that ended inside a chunk's framing) would
                    // be written as the end of a chunked answer.
                    Ok(Some([])) => {}
                    Ok(Some(chunk)) => {
                        kept.extend_from_slice(chunk);
                        if kept.len() > ANSWER_BUFFER {
                            break;
                        }
                    }
                    Ok(None) => {
                        whole = true;
                        break;
                    }
                    Err(_) => {
                        // The answer is cut short: the client learns it from the close.
                        replica.record_outcome(false, &self.pool.policy);
                        return Reuse::Close;
                    }
                }
            }
        }
        if whole && answered == Answered::Fully {
            if let Some(up) = upstream.take() {
                self.keepalive.release(up, replica.addr).await;
            }
            lease = None;
        }
        if !kept.is_empty() && downstream.write_body(&kept).await.is_err() {
            return Reuse::Close;
        }
        drop(kept);
        if !whole {
            let Some(up) = upstream.as_mut() else {
                return Reuse::Close;
            };
            loop {
                match up.read_body_ref().await {
                    Ok(Some([])) => {}
                    Ok(Some(chunk)) => {
                        if downstream.write_body(chunk).await.is_err() {
                            return Reuse::Close;
                        }
                    }
                    Ok(None) => break,
                    Err(_) => {
                        replica.record_outcome(false, &self.pool.policy);
                        return Reuse::Close;
                    }
                }
            }
        }
        if downstream.finish_body().await.is_err() || answered == Answered::Early {
            return Reuse::Close;
        }
        if let Some(up) = upstream.take() {
            self.keepalive.release(up, replica.addr).await;
        }
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
    fn peer(&self, addr: SocketAddr) -> HttpPeer {
        let mut peer = HttpPeer::new(addr, false, String::new());
        // Only what pingora-core's connector reads on this path: the connect deadlines.
        // The read and write timeouts are set on each session (`serve`), and idle
        // connections are this balancer's own to time out ([`crate::keepalive`]).
        let options = &mut peer.options;
        options.connection_timeout = Some(self.settings.connect_timeout);
        options.total_connection_timeout = Some(self.settings.connect_timeout);
        peer
    }

    /// Answers the request itself, in the route's envelope, and closes the connection
    /// (an unread body may follow the header).
    async fn refuse(
        &self,
        downstream: &mut DownstreamSession,
        envelope: Envelope,
        refusal: Refusal,
    ) -> Reuse {
        match refusal {
            Refusal::TooLarge(_) => {
                self.metrics.too_large.fetch_add(1, Ordering::Relaxed);
            }
            Refusal::NoneReady | Refusal::AtCapacity | Refusal::Slow => {
                self.metrics.unavailable.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        // A `100 Continue` sent before does not stop the refusal; a final answer does.
        if downstream
            .response_written()
            .is_some_and(|r| !r.status.is_informational())
        {
            return Reuse::Close;
        }
        let body = refusal.body(envelope);
        if let Err(e) = write_json(downstream, refusal.status(), body, refusal.retry_after()).await
        {
            tracing::debug!(error = %e, "could not send the error response");
        }
        Reuse::Close
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
/// Whether the replica's kernel acknowledged none of the request's bytes: its count of
/// acknowledged bytes is what it was before the request (and both could be read).
fn unacknowledged(before: Option<u64>, upstream: &UpstreamSession) -> bool {
    before.is_some() && keepalive::bytes_acked(upstream) == before
}

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

/// The connection's peer: appended to `X-Forwarded-For`, and the client's address
/// unless the peer is a trusted proxy ([`TrustedProxies::client`]).
fn peer_ip(downstream: &DownstreamSession) -> Option<IpAddr> {
    downstream
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(SocketAddr::ip)
}
