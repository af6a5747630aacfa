//! Names the partner a request was authenticated as in an `X-Ecanteen-Partner` response
//! header, for the balancer's per-partner rate limit (which removes the header before
//! the answer leaves). A partner's id is not a secret: `me` returns it.
//!
//! The id is noted where credentials are resolved ([`crate::http::auth::resolve`]),
//! deep inside a handler; a task-local slot carries it back out to this middleware.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

pub const PARTNER_HEADER: &str = "x-ecanteen-partner";

tokio::task_local! {
    static PARTNER: Arc<AtomicI64>;
}

/// Records that the current request is `user_id`'s (no-op outside a request).
pub fn note(user_id: i64) {
    let _ = PARTNER.try_with(|slot| slot.store(user_id, Ordering::Relaxed));
}

/// The middleware: runs the request with a slot, then names its partner if one was
/// noted.
pub async fn tag(request: Request, next: Next) -> Response {
    let slot = Arc::new(AtomicI64::new(0));
    let mut response = PARTNER.scope(slot.clone(), next.run(request)).await;
    let user_id = slot.load(Ordering::Relaxed);
    if user_id > 0 {
        response
            .headers_mut()
            .insert(PARTNER_HEADER, HeaderValue::from(user_id));
    }
    response
}
