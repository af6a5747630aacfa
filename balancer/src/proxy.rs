//! The proxy: pingora's `ProxyHttp` phases, in the order a request meets them.
//!
//! # Retries, and why they never apply a write twice
//!
//! - A failed *connect* is retried on another replica whatever the method: pingora
//!   guarantees nothing was sent.
//! - A failure *after* sending is retried only for GET and HEAD, and for the REST
//!   writes under `/ecanteen/` that carry an `Idempotency-Key` header (the replica
//!   answers a repeat with the first result), and only while pingora still holds the
//!   whole body in its retry buffer. Any other write (every GraphQL mutation, with the
//!   header or without: `/graphql` ignores it) that may have reached a replica is never
//!   replayed; GraphQL clients that need safe retries put an idempotency key in the
//!   mutation's input and retry themselves.
//! - At most `max_tries` attempts, never twice on the same replica.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::Method;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::limits::{self, Limits};
use crate::metrics::Metrics;
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
}

pub struct Balancer {
    pub pool: Arc<Pool>,
    pub metrics: Arc<Metrics>,
    pub limits: Arc<Limits>,
    pub settings: Settings,
    /// Requests waiting for room now.
    pub queued: AtomicUsize,
}

/// The error of a request that found every replica at its cap, and no room in time.
const AT_CAPACITY: ErrorType = ErrorType::Custom("every replica is at capacity");

/// Per-request state.
pub struct Ctx {
    /// The replica this attempt holds (released at the end, or when a retry moves on).
    lease: Option<Lease>,
    /// Replicas this request has been sent to.
    tried: Vec<SocketAddr>,
    attempts: usize,
    started: Instant,
    body_bytes: usize,
    upgrade: bool,
    request_id: String,
    /// A keyed hash of the request's credential, for the per-partner rate limit.
    credential: Option<u64>,
}

const REQUEST_ID: &str = "x-request-id";

/// A request id unique across processes and restarts: this process's start time and
/// pid, fixed once, then a counter. Nothing per request but the counter and the format.
fn new_request_id() -> String {
    use std::sync::atomic::AtomicU64;
    use std::sync::OnceLock;
    static PREFIX: OnceLock<String> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("{started:016x}-{:08x}", std::process::id())
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{n:x}")
}

/// A JSON error in the shape the replicas use, so clients parse one shape.
fn error_body(code: &str, message: &str) -> Bytes {
    Bytes::from(
        serde_json::json!({ "errors": [{ "message": message, "extensions": { "code": code } }] })
            .to_string(),
    )
}

async fn respond_json(
    session: &mut Session,
    status: u16,
    body: Bytes,
    retry_after: Option<u64>,
) -> Result<()> {
    let mut header = ResponseHeader::build(status, Some(4))?;
    header.insert_header("Content-Type", "application/json")?;
    header.insert_header("Content-Length", body.len().to_string())?;
    header.insert_header("Cache-Control", "no-store")?;
    if let Some(seconds) = retry_after {
        header.insert_header("Retry-After", seconds.to_string())?;
    }
    session.set_keepalive(None);
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(Some(body), true).await
}

impl Balancer {
    /// Every ready replica is at its cap: waits, in a bounded queue, until one has room
    /// or the queue's wait runs out (then AT_CAPACITY, answered 503 with Retry-After).
    async fn wait_for_room(&self, ctx: &Ctx) -> Result<Lease> {
        let refuse = || Error::explain(AT_CAPACITY, "every replica is at capacity");
        if self.queued.fetch_add(1, Ordering::SeqCst) >= self.settings.max_queued {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(refuse());
        }
        // Counted out however the wait ends.
        let _queued = Queued(&self.queued);
        let deadline = tokio::time::Instant::now() + self.settings.queue_wait;
        loop {
            if !self.pool.wait_for_room(deadline).await {
                return Err(refuse());
            }
            if let Some(lease) = self.pool.select(&ctx.tried) {
                return Ok(lease);
            }
        }
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

#[async_trait]
impl ProxyHttp for Balancer {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            lease: None,
            tried: Vec::new(),
            attempts: 0,
            started: Instant::now(),
            body_bytes: 0,
            upgrade: false,
            request_id: String::new(),
            credential: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        ctx.request_id = session
            .req_header()
            .headers
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128)
            .map_or_else(new_request_id, str::to_owned);
        if self.limits.enabled() {
            ctx.credential = self.limits.credential(&session.req_header().headers);
            let ip = session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip());
            if let Err(wait) = self.limits.check(ip, ctx.credential) {
                self.metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
                let body = error_body("TOO_MANY_REQUESTS", "too many requests; please slow down");
                let seconds = limits::retry_after_secs(wait);
                respond_json(session, 429, body, Some(seconds)).await?;
                return Ok(true);
            }
        }
        let declared = session
            .req_header()
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|len| len > self.settings.body_limit) {
            self.metrics.too_large.fetch_add(1, Ordering::Relaxed);
            let message = format!(
                "the request body is larger than {} bytes",
                self.settings.body_limit
            );
            respond_json(session, 413, error_body("BAD_USER_INPUT", &message), None).await?;
            return Ok(true);
        }
        if !self.pool.any_ready() {
            self.metrics.unavailable.fetch_add(1, Ordering::Relaxed);
            let body = error_body("INTERNAL", "no replica is ready; please retry");
            respond_json(session, 503, body, Some(1)).await?;
            return Ok(true);
        }
        if session.is_upgrade_req() {
            // A WebSocket may stay quiet for long; its end, not a timer, ends it.
            ctx.upgrade = true;
            session.set_read_timeout(None);
        }
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(chunk) = body {
            ctx.body_bytes += chunk.len();
            if ctx.body_bytes > self.settings.body_limit {
                self.metrics.too_large.fetch_add(1, Ordering::Relaxed);
                return Err(Error::explain(
                    ErrorType::HTTPStatus(413),
                    "request body too large",
                ));
            }
        }
        Ok(())
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        // A retry: the previous attempt's lease ends here, not at the end of the request.
        ctx.lease = None;
        if ctx.attempts >= self.settings.max_tries {
            return Err(Error::explain(
                ErrorType::HTTPStatus(502),
                "every attempt failed",
            ));
        }
        if ctx.attempts > 0 {
            self.metrics.retries.fetch_add(1, Ordering::Relaxed);
        }
        ctx.attempts += 1;
        let lease = match self.pool.select(&ctx.tried) {
            Some(lease) => lease,
            None if self.pool.any_ready_besides(&ctx.tried) => self.wait_for_room(ctx).await?,
            None => {
                return Err(Error::explain(
                    ErrorType::HTTPStatus(503),
                    "no replica is ready",
                ))
            }
        };
        let addr = lease.upstream().addr;
        ctx.tried.push(addr);
        ctx.lease = Some(lease);
        let mut peer = HttpPeer::new(addr, false, String::new());
        let options = &mut peer.options;
        options.connection_timeout = Some(self.settings.connect_timeout);
        options.total_connection_timeout = Some(self.settings.connect_timeout);
        options.idle_timeout = Some(self.settings.idle_timeout);
        if ctx.upgrade {
            options.read_timeout = None;
            options.write_timeout = None;
        } else {
            options.read_timeout = Some(self.settings.read_timeout);
            options.write_timeout = Some(self.settings.read_timeout);
        }
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(client) = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip().to_string())
        {
            let forwarded = match upstream_request
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
            {
                Some(previous) if !previous.is_empty() => format!("{previous}, {client}"),
                _ => client,
            };
            upstream_request.insert_header("X-Forwarded-For", forwarded)?;
        }
        upstream_request.insert_header("X-Forwarded-Proto", "http")?;
        if let Some(host) = session
            .req_header()
            .headers
            .get(http::header::HOST)
            .cloned()
        {
            upstream_request.insert_header("X-Forwarded-Host", host)?;
        }
        upstream_request.insert_header("X-Request-Id", ctx.request_id.as_str())?;
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(lease) = &ctx.lease {
            lease.upstream().record_outcome(
                !Upstream::counts_as_failure(upstream_response.status.as_u16()),
                &self.pool.policy,
            );
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        upstream_response.insert_header("X-Request-Id", ctx.request_id.as_str())?;
        // The replica's note of who the partner was is for the balancer only.
        if let Some(partner) = upstream_response.remove_header(limits::PARTNER_HEADER) {
            let partner = partner.to_str().ok().and_then(|v| v.parse::<i64>().ok());
            if let (Some(credential), Some(partner)) = (ctx.credential, partner) {
                self.limits.learn(credential, partner);
            }
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(lease) = &ctx.lease {
            lease.upstream().record_outcome(false, &self.pool.policy);
        }
        // Nothing was sent: safe to try elsewhere, whatever the method.
        if ctx.attempts < self.settings.max_tries {
            e.set_retry(true);
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        _client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer: {peer}"));
        if e.esource() == &ErrorSource::Upstream {
            if let Some(lease) = &ctx.lease {
                lease.upstream().record_outcome(false, &self.pool.policy);
            }
        }
        let retry = Self::can_retry_after_send(session.req_header())
            && !session.as_ref().retry_buffer_truncated()
            && !ctx.upgrade
            && ctx.attempts < self.settings.max_tries;
        e.set_retry(retry);
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, _ctx: &mut Ctx) -> FailToProxy {
        // What the balancer says is never a 500, and a replica that is alive but slow
        // (it took the request and did not answer in time) is not a 502: both are 503
        // with Retry-After, which clients retry.
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            ErrorType::Custom(_) if *e.etype() == AT_CAPACITY => 503,
            ErrorType::ReadTimedout | ErrorType::WriteTimedout
                if e.esource() == &ErrorSource::Upstream =>
            {
                503
            }
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 503,
            },
        };
        let (error_code, message, retry_after) = match code {
            413 => (
                "BAD_USER_INPUT",
                format!(
                    "the request body is larger than {} bytes",
                    self.settings.body_limit
                ),
                None,
            ),
            503 => (
                "INTERNAL",
                match e.etype() {
                    ErrorType::HTTPStatus(_) => "no replica is ready; please retry",
                    _ if *e.etype() == AT_CAPACITY => "every replica is at capacity; please retry",
                    ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
                        "the replica is slow to answer; please retry"
                    }
                    _ => "the request could not be completed; please retry",
                }
                .to_owned(),
                Some(1),
            ),
            502 | 504 => (
                "INTERNAL",
                "the replica failed to answer; please retry".to_owned(),
                Some(1),
            ),
            400 => ("BAD_USER_INPUT", "malformed request".to_owned(), None),
            _ => ("INTERNAL", "internal error".to_owned(), None),
        };
        if code == 503 {
            self.metrics.unavailable.fetch_add(1, Ordering::Relaxed);
        }
        if code > 0 {
            if let Err(err) =
                respond_json(session, code, error_body(error_code, &message), retry_after).await
            {
                tracing::debug!(error = %err, "could not send the error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, _session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        self.metrics.observe(ctx.started.elapsed());
        // The end of the request (or of the WebSocket tunnel) ends its lease.
        ctx.lease = None;
    }
}

/// Counts a queued request out when dropped.
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::new_request_id;

    #[test]
    fn request_ids_share_the_process_prefix_and_never_repeat() {
        let ids: Vec<String> = (0..1000).map(|_| new_request_id()).collect();
        let prefix = |id: &str| id.rsplit_once('-').map(|(p, _)| p.to_owned());
        let first = prefix(&ids[0]).expect("an id has a prefix and a counter");
        assert!(first.ends_with(&format!("-{:08x}", std::process::id())));
        assert!(ids
            .iter()
            .all(|id| prefix(id).as_deref() == Some(first.as_str())));
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
    }
}
