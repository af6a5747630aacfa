//! Long-lived connections (a WebSocket) check their credential for every operation.
//!
//! An HTTP request proves who it is each time it is sent. A WebSocket proves it once,
//! at `connection_init`, and may then live for hours: a token revoked, or a session
//! logged out or expired, in that time must not keep acting. So the transport does not
//! put a fixed [`RequestAuth`] in the connection's data; it puts a [`ConnectionAuth`],
//! and [`CheckedPerOperation`] asks it again before each operation starts. Only what it
//! answers now becomes the operation's actor.
//!
//! A connection carries subscriptions only. Queries and mutations over it would escape
//! what HTTP gives them: the balancer's rate limits, the request timeout, and the
//! request's own credential. They are refused with `BAD_USER_INPUT`, and a client sends
//! them over HTTP.

use std::sync::Arc;

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
