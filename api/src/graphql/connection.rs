//! Long-lived connections (a WebSocket) check their credential for every operation.
//!
//! An HTTP request proves who it is each time it is sent. A WebSocket proves it once,
//! at `connection_init`, and may then live for hours: a token revoked, or a session
//! logged out or expired, in that time must not keep acting. So the transport does not
//! put a fixed [`RequestAuth`] in the connection's data; it puts a [`ConnectionAuth`],
//! and [`CheckedPerOperation`] asks it again before each operation starts. Only what it
//! answers now becomes the operation's actor.
//!
//! Operations over connections are budgeted per partner ([`OperationBudget`]): a
//! connection is one HTTP request to the balancer, whose rate limits never see the
//! subscribes sent over it, so a replica keeps the count itself, across all of the
//! partner's sockets on it, and refuses past it with TOO_MANY_REQUESTS.
//!
//! A connection carries subscriptions only. Queries and mutations over it would escape
//! what HTTP gives them: the balancer's rate limits, the request timeout, and the
//! request's own credential. They are refused with `BAD_USER_INPUT`, and a client sends
//! them over HTTP.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextPrepareRequest,
};
use async_graphql::parser::types::{ExecutableDocument, OperationType};
use async_graphql::{Request, ServerError, ServerResult, Variables};

use super::RequestAuth;
use crate::error::{ServiceError, ServiceResult};
use crate::service::Actor;

/// A credential a connection was opened with, and how to check it again.
#[async_trait::async_trait]
pub trait ConnectionCredential: Send + Sync {
    /// Who the credential stands for now: UNAUTHENTICATED once it was revoked, logged
    /// out or expired.
    async fn check(&self) -> ServiceResult<Actor>;
}

/// The connection's credential, in its data (put there at `connection_init`).
#[derive(Clone)]
pub struct ConnectionAuth(pub Arc<dyn ConnectionCredential>);

/// Operations each partner may start over its connections on one replica: a steady
/// `per_sec`, with a burst of twice as many (a client that opens its screens' dozen
/// subscriptions at once is never refused). Token buckets, one per partner, dropped
/// once full again.
#[derive(Clone)]
pub struct OperationBudget {
    per_sec: f64,
    burst: f64,
    buckets: Arc<Mutex<HashMap<i64, (f64, Instant)>>>,
}

impl OperationBudget {
    pub fn new(per_sec: u32) -> Self {
        let per_sec = f64::from(per_sec.max(1));
        Self {
            per_sec,
            burst: per_sec * 2.0,
            buckets: Arc::default(),
        }
    }

    /// Takes one operation from `partner`'s budget, or says how long until one is
    /// there.
    pub fn take(&self, partner: i64) -> Result<(), Duration> {
        let now = Instant::now();
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        if buckets.len() > 10_000 {
            // Buckets that have filled up again are the same as no bucket.
            let (per_sec, burst) = (self.per_sec, self.burst);
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * per_sec < burst
            });
        }
        let (tokens, at) = buckets.entry(partner).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.per_sec).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.per_sec))
        }
    }
}

/// The refusal of a query or mutation sent over a connection.
pub const SUBSCRIPTIONS_ONLY: &str =
    "this connection carries subscriptions only; send queries and mutations over HTTP (POST /graphql)";

/// The schema extension of the module docs. Requests without a [`ConnectionAuth`] (HTTP,
/// tests, benches) pass untouched.
pub struct CheckedPerOperation;

impl ExtensionFactory for CheckedPerOperation {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(CheckedPerOperation)
    }
}

/// A service error as a request-level GraphQL error; `ErrorCodes` reads the source back
/// and gives it its code.
fn request_error(err: ServiceError) -> ServerError {
    let mut error = ServerError::new(err.to_string(), None);
    error.source = Some(Arc::new(err));
    error
}

fn only_subscriptions(doc: &ExecutableDocument) -> bool {
    super::limits::operations(doc).all(|op| op.node.ty == OperationType::Subscription)
}

#[async_trait::async_trait]
impl Extension for CheckedPerOperation {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        if let Some(ConnectionAuth(credential)) = ctx.data_opt::<ConnectionAuth>() {
            let actor = credential.check().await.map_err(request_error)?;
            if let Some(budget) = ctx.data_opt::<OperationBudget>() {
                budget.take(actor.user_id).map_err(|wait| {
                    request_error(ServiceError::TooManyRequests {
                        retry_after: wait.max(Duration::from_secs(1)),
                    })
                })?;
            }
            // The request's own data is read before the connection's.
            request.data.insert(RequestAuth {
                actor: Some(actor),
                session: None,
            });
        }
        next.run(ctx, request).await
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next.run(ctx, query, variables).await?;
        if ctx.data_opt::<ConnectionAuth>().is_some() && !only_subscriptions(&doc) {
            return Err(ServerError::new(SUBSCRIPTIONS_ONLY, None));
        }
        Ok(doc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partner_gets_its_burst_then_its_rate_and_others_their_own() {
        let budget = OperationBudget::new(10);
        for n in 0..20 {
            assert!(budget.take(1).is_ok(), "operation {n} of the burst");
        }
        let wait = budget.take(1).unwrap_err();
        assert!(wait <= Duration::from_millis(101), "{wait:?}");
        assert!(
            budget.take(2).is_ok(),
            "another partner has a budget of its own"
        );
    }
}
