//! API tokens: named, revocable bearer credentials for integrators.
//!
//! A token's secret is 32 random bytes, shown once at creation as `ect_` followed by 64
//! hex digits. Only its SHA-256 is stored; every request looks the hash up, so a revoked
//! token stops working on every replica at once.

use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

use crate::db::{now_ms, Class, Sql};
use crate::domain::{IdempotencyKey, TokenName};
use crate::error::{ServiceError, ServiceResult};
use crate::service::idempotency::{stored_result, Idempotency};
use crate::service::{Actor, AuthMethod, Service};

/// An API token as its owner may see it (never the secret, never the hash).
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow, serde::Serialize, serde::Deserialize)]
pub struct ApiToken {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

const TOKEN_PREFIX: &str = "ect_";
const COLUMNS: &str = "id, user_id, name, created_at, last_used_at, revoked_at";
/// `last_used_at` is advanced at most this often, so a busy integrator does not turn
/// every read into a write.
const LAST_USED_RESOLUTION_MS: i64 = 60_000;

fn token_hash(secret: &str) -> String {
    format!("{:x}", Sha256::digest(secret.as_bytes()))
}

/// API tokens cannot manage API tokens: only a partner logged in with a session creates
/// or revokes them. Otherwise a stolen token could mint more, outliving its own
/// revocation, and revoke the owner's real ones. The rule is here, so it holds for
/// GraphQL and REST alike.
fn managing_tokens(actor: &Actor) -> ServiceResult<()> {
    match actor.method {
        AuthMethod::Session => Ok(()),
        AuthMethod::Token(_) => Err(ServiceError::Forbidden(
            "API tokens cannot manage API tokens; log in instead",
        )),
    }
}

impl Service {
    /// Creates a token and returns it with its secret, which is never available again.
    ///
    /// A retry with the same idempotency key creates no second token. Since the secret
    /// is not kept, it cannot be shown again: the retry is a CONFLICT naming the token
    /// (`current` is its id), to be revoked and replaced if the secret was lost.
    pub async fn create_api_token(
        &self,
        actor: &Actor,
        name: &str,
        key: Option<IdempotencyKey>,
    ) -> ServiceResult<(ApiToken, String)> {
        managing_tokens(actor)?;
        let name = TokenName::parse("name", name)?;
        let idempotency = key.map(|key| Idempotency::new(key, &["createApiToken", name.as_str()]));
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let secret = format!(
            "{TOKEN_PREFIX}{}",
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let secret_hash = token_hash(&secret);
        let (service, actor) = (self.clone(), *actor);
        let token = self
            .detached(async move {
                service
                    .insert_api_token(&actor, &name, &secret_hash, idempotency.as_ref())
                    .await
            })
            .await?;
        Ok((token, secret))
    }

    async fn insert_api_token(
        &self,
        actor: &Actor,
        name: &TokenName,
        secret_hash: &str,
        idempotency: Option<&Idempotency>,
    ) -> ServiceResult<ApiToken> {
        let now = now_ms();
        let mut tx = self.db.begin_write().await?;
        if let Some(idem) = idempotency {
            if let Some(first) = tx
                .claim_key(actor.user_id, "createApiToken", idem, now)
                .await?
            {
                let first: ApiToken = stored_result(&first)?;
                return Err(ServiceError::conflict(
                    format!(
                        "API token {} was already created with this Idempotency-Key, and its \
                         secret is shown only once; revoke it and create another if it was lost",
                        first.id
                    ),
                    Some(first.id),
                ));
            }
        }
        let token: ApiToken = tx
            .fetch_one(
                &Sql::new(format!(
                    "insert into api_tokens (user_id, name, token_hash, created_at)
                     values ($1, $2, $3, $4) returning {COLUMNS}"
                ))
                .arg(actor.user_id)
                .arg(name.as_str())
                .arg(secret_hash)
                .arg(now),
            )
            .await?;
        if let Some(idem) = idempotency {
            tx.record_key(actor.user_id, idem, &token).await?;
        }
        tx.commit().await?;
        Ok(token)
    }

    /// Revokes one of the actor's tokens. Revoking a revoked token is a no-op.
    pub async fn revoke_api_token(
        &self,
        actor: &Actor,
        id: i64,
        key: Option<IdempotencyKey>,
    ) -> ServiceResult<ApiToken> {
        managing_tokens(actor)?;
        let idempotency =
            key.map(|key| Idempotency::new(key, &["revokeApiToken".to_owned(), id.to_string()]));
        let (service, actor) = (self.clone(), *actor);
        self.detached(async move {
            service
                .try_revoke_api_token(&actor, id, idempotency.as_ref())
                .await
        })
        .await
    }

    async fn try_revoke_api_token(
        &self,
        actor: &Actor,
        id: i64,
        idempotency: Option<&Idempotency>,
    ) -> ServiceResult<ApiToken> {
        let now = now_ms();
        let mut tx = self.db.begin_write().await?;
        if let Some(idem) = idempotency {
            if let Some(first) = tx
                .claim_key(actor.user_id, "revokeApiToken", idem, now)
                .await?
            {
                return stored_result(&first);
            }
        }
        let token: Option<ApiToken> = tx
            .fetch_optional(
                &Sql::new(format!("select {COLUMNS} from api_tokens where id = $1")).arg(id),
            )
            .await?;
        let revoked = match token {
            Some(t) if t.user_id != actor.user_id => {
                return Err(ServiceError::NotFound("API token"))
            }
            None => return Err(ServiceError::NotFound("API token")),
            Some(t) if t.revoked_at.is_some() => t,
            Some(_) => {
                tx.fetch_one(
                    &Sql::new(format!(
                        "update api_tokens set revoked_at = $1 where id = $2 returning {COLUMNS}"
                    ))
                    .arg(now)
                    .arg(id),
                )
                .await?
            }
        };
        if let Some(idem) = idempotency {
            tx.record_key(actor.user_id, idem, &revoked).await?;
        }
        tx.commit().await?;
        Ok(revoked)
    }

    /// A partner's tokens, newest first, revoked ones included. Only the partner may
    /// list them (FORBIDDEN for anyone else), on every transport.
    pub async fn api_tokens(&self, actor: &Actor, user_id: i64) -> ServiceResult<Vec<ApiToken>> {
        if actor.user_id != user_id {
            return Err(ServiceError::Forbidden(
                "only the partner may see its API tokens",
            ));
        }
        Ok(self
            .db
            .fetch_all(
                &Sql::new(format!(
                    "select {COLUMNS} from api_tokens where user_id = $1 order by id desc"
                ))
                .arg(user_id),
            )
            .await?)
    }

    /// The partner of a token that authenticated earlier, checked again: a long-lived
    /// connection asks before each operation (see `graphql::connection`). Read-only.
    pub async fn recheck_token(&self, token_id: i64) -> ServiceResult<Actor> {
        let user_id: Option<i64> = self
            .db
            .scalar_optional(
                &Sql::new("select user_id from api_tokens where id = $1 and revoked_at is null")
                    .arg(token_id),
            )
            .await?;
        let user_id = user_id.ok_or(ServiceError::Unauthenticated("the API token was revoked"))?;
        Ok(Actor {
            user_id,
            method: AuthMethod::Token(token_id),
        })
    }

    /// Resolves a bearer secret to its partner. Unknown and revoked tokens are
    /// UNAUTHENTICATED.
    pub async fn authenticate_token(&self, secret: &str) -> ServiceResult<Actor> {
        const REFUSED: ServiceError = ServiceError::Unauthenticated("invalid or revoked API token");
        if !secret.starts_with(TOKEN_PREFIX) || secret.len() > 128 {
            return Err(REFUSED);
        }
        let hash = token_hash(secret);
        let now = now_ms();
        let found: Option<(i64, i64, Option<i64>)> = self
            .db
            .fetch_optional(
                &Sql::new(
                    "select id, user_id, last_used_at from api_tokens
                     where token_hash = $1 and revoked_at is null",
                )
                .arg(&hash),
            )
            .await?;
        let stale = |used: Option<i64>| used.is_none_or(|t| t < now - LAST_USED_RESOLUTION_MS);
        // Written only when it is stale: an UPDATE, even of no row, takes SQLite's write
        // lock, and a busy till would queue behind every stock change.
        // Bookkeeping, not the request's work: on the session lane, and a failure (a busy
        // database) leaves the earlier time, to be written at the next use, rather than
        // failing a read the token may make.
        if let Some((id, _, _)) = found.filter(|f| stale(f.2)) {
            let noted = self
                .db
                .execute_in(
                    Class::Session,
                    &Sql::new(
                        "update api_tokens set last_used_at = $1
                         where id = $2 and (last_used_at is null or last_used_at < $3)",
                    )
                    .arg(now)
                    .arg(id)
                    .arg(now - LAST_USED_RESOLUTION_MS),
                )
                .await;
            if let Err(e) = noted {
                tracing::warn!(error = %e, "a token's last use was not written");
            }
        }
        let found = found.map(|(id, user_id, _)| (id, user_id));
        let (id, user_id) = found.ok_or(REFUSED)?;
        Ok(Actor {
            user_id,
            method: AuthMethod::Token(id),
        })
    }
}
