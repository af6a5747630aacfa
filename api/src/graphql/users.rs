//! Partners, sessions and API tokens in GraphQL.

use std::collections::HashMap;

use async_graphql::dataloader::Loader;
use async_graphql::{Context, InputObject, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};

use super::{actor, auth, datetime, id_arg, service};
use crate::error::ServiceError;
use crate::service::{ApiToken, Service, User};

/// Loads product owners in one query per request, however many products are shown.
pub struct OwnerLoader(pub Service);

impl Loader<i64> for OwnerLoader {
    type Value = User;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[i64]) -> Result<HashMap<i64, User>, Self::Error> {
        Ok(self.0.users_by_ids(keys).await?)
    }
}

/// A partner as GraphQL shows it (described on the `Object` impl below).
#[derive(Clone, Debug)]
pub struct UserNode(pub User);

/// A partner: a stall owner who sells in the canteen. Anyone may see a product's owner
/// (id, username, createdAt); only the partner may see their `apiTokens`.
#[Object(name = "User")]
impl UserNode {
    /// The partner's id: a decimal integer as a string.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    /// The login name, lower-case.
    async fn username(&self) -> &str {
        &self.0.username
    }

    /// When the partner registered (UTC, RFC 3339).
    async fn created_at(&self) -> DateTime<Utc> {
        datetime(self.0.created_at)
    }

    /// This partner's API tokens, newest first, revoked ones included. Only the partner
    /// may see them: FORBIDDEN for anyone else.
    #[graphql(
        cache_control(private, no_cache),
        complexity = "super::QUERY_COST + child_complexity"
    )]
    async fn api_tokens(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ApiTokenNode>> {
        let tokens = service(ctx)?.api_tokens(&actor(ctx)?, self.0.id).await?;
        Ok(tokens.into_iter().map(ApiTokenNode).collect())
    }
}

/// An API token as GraphQL shows it (described on the `Object` impl below).
#[derive(Clone, Debug)]
pub struct ApiTokenNode(pub ApiToken);

/// A named, revocable credential for an integrator, sent as `Authorization: Bearer`.
/// Its secret is shown only once, by `createApiToken`; this type never carries it.
/// Only the partner who made it may see it.
#[Object(name = "ApiToken")]
impl ApiTokenNode {
    /// The token's id, for `revokeApiToken`.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    /// What the partner called it, 1–60 characters.
    async fn name(&self) -> &str {
        &self.0.name
    }

    /// When it was created (UTC, RFC 3339).
    async fn created_at(&self) -> DateTime<Utc> {
        datetime(self.0.created_at)
    }

    /// When a request last used it (UTC; updated at most once a minute), or null when
    /// it was never used.
    async fn last_used_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_used_at.map(datetime)
    }

    /// When it was revoked (UTC), or null while it still works.
    async fn revoked_at(&self) -> Option<DateTime<Utc>> {
        self.0.revoked_at.map(datetime)
    }
}

/// A token just created, with its secret: store it now, it is never shown again.
#[derive(SimpleObject)]
pub struct CreatedApiToken {
    /// Send as `Authorization: Bearer <token>`.
    token: String,
    /// The token's record, as `apiTokens` lists it.
    api_token: ApiTokenNode,
}

/// A new partner account. A username already taken is CONFLICT; one out of bounds is
/// BAD_USER_INPUT naming the field.
#[derive(InputObject)]
pub struct RegisterInput {
    /// 3–32 characters of a-z, 0-9, '_', '.', '-' (letters are lower-cased).
    username: String,
    /// 8–128 characters.
    password: String,
}

#[derive(Default)]
pub struct UserQuery;

#[Object]
impl UserQuery {
    /// The partner behind this request, or null when not logged in.
    #[graphql(
        cache_control(private, no_cache),
        complexity = "super::QUERY_COST + child_complexity"
    )]
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<UserNode>> {
        let Some(actor) = auth(ctx)?.actor else {
            return Ok(None);
        };
        Ok(service(ctx)?.user(actor.user_id).await?.map(UserNode))
    }
}

#[derive(Default)]
pub struct UserMutation;

#[Object]
impl UserMutation {
    /// Creates a partner account. It does not log in.
    async fn register(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The username and password.")] input: RegisterInput,
    ) -> async_graphql::Result<UserNode> {
        let user = service(ctx)?
            .register(&input.username, &input.password, None)
            .await?;
        Ok(UserNode(user))
    }

    /// Logs in: sets a session cookie under a fresh session id.
    async fn login(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The partner's username (any case).")] username: String,
        #[graphql(desc = "The partner's password. A wrong username or password is \
                          UNAUTHENTICATED, the same for both; after five failures \
                          (by default) TOO_MANY_REQUESTS, with `extensions.retryAfter` in \
                          seconds.")]
        password: String,
    ) -> async_graphql::Result<UserNode> {
        let session = auth(ctx)?.session.clone().ok_or_else(|| {
            ServiceError::Internal(anyhow::anyhow!("login executed without an HTTP session"))
        })?;
        let login = service(ctx)?.login(&username, &password).await?;
        session
            .log_in(login.user.id, login.password_version)
            .await?;
        Ok(UserNode(login.user))
    }

    /// Changes the logged-in partner's password. `current` is checked as a login is and
    /// throttled with the same count: a wrong one is BAD_USER_INPUT on
    /// `currentPassword`, and after five failures TOO_MANY_REQUESTS. `new` is 8–128
    /// characters (BAD_USER_INPUT on `newPassword`). Every other session of the partner
    /// ends on every replica; this one is kept under a new id (a new cookie). API tokens
    /// are kept. Needs a session: FORBIDDEN with an API token.
    async fn change_password(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The password now, checked as a login is.")] current: String,
        #[graphql(desc = "The new password, 8–128 characters.")] new: String,
    ) -> async_graphql::Result<bool> {
        let actor = actor(ctx)?;
        let session = auth(ctx)?.session.clone().ok_or_else(|| {
            ServiceError::Internal(anyhow::anyhow!(
                "changePassword executed without an HTTP session"
            ))
        })?;
        let version = service(ctx)?
            .change_password(&actor, &current, &new)
            .await?;
        session.renew(version).await?;
        Ok(true)
    }

    /// Ends the session on every replica. True when there was a session to end.
    async fn logout(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        let auth = auth(ctx)?;
        let Some(session) = auth.session.clone() else {
            return Ok(false);
        };
        let had_session = auth
            .actor
            .is_some_and(|a| a.method == crate::service::AuthMethod::Session);
        session.log_out().await?;
        Ok(had_session)
    }

    /// Creates an API token for integrators (needs a logged-in session).
    async fn create_api_token(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "What to call it, 1–60 characters, e.g. the till it is for.")]
        name: String,
    ) -> async_graphql::Result<CreatedApiToken> {
        let actor = actor(ctx)?;
        let (token, secret) = service(ctx)?.create_api_token(&actor, &name, None).await?;
        Ok(CreatedApiToken {
            token: secret,
            api_token: ApiTokenNode(token),
        })
    }

    /// Revokes an API token: it stops working at once, on every replica.
    async fn revoke_api_token(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The token's id: one of the caller's (NOT_FOUND otherwise).")] id: ID,
    ) -> async_graphql::Result<ApiTokenNode> {
        let actor = actor(ctx)?;
        let id = id_arg("id", &id)?;
        Ok(ApiTokenNode(
            service(ctx)?.revoke_api_token(&actor, id, None).await?,
        ))
    }
}
