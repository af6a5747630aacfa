//! Partners: registration, login, and login throttling kept in the database.

use std::collections::HashMap;
use std::time::Duration;

use crate::db::now_ms;
use crate::domain::{IdempotencyKey, Password, Username};
use crate::error::{ServiceError, ServiceResult};
use crate::service::idempotency::{claim_key, record_key, stored_result, Idempotency};
use crate::service::password::Admitted;
use crate::service::{duration_ms, Service};
use crate::{with_db, write_tx};

/// A partner account. The password hash never leaves [`Service`].
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub created_at: i64,
}

const WRONG_CREDENTIALS: &str = "wrong username or password";

/// The first key of the per-username advisory lock that serialises login attempts on
/// PostgreSQL (the second is the username's hash); a two-key lock never collides with
/// the one-key feed lock.
const LOGIN_LOCK: i32 = 7_236_002;

impl Service {
    /// Creates a partner account. A taken username (in any letter case) is a CONFLICT,
    /// detected by the unique constraint rather than a racy pre-check.
    ///
    /// With an idempotency key (scoped to the account it creates), a retry of a
    /// registration that succeeded answers with the same account instead of CONFLICT.
    /// The answer holds nothing secret (id and username), and the retry logs no one in,
    /// so the password is not checked: that would make it an unthrottled oracle.
    pub async fn register(
        &self,
        username: &str,
        password: &str,
        idempotency_key: Option<&IdempotencyKey>,
    ) -> ServiceResult<User> {
        let username = Username::parse("username", username)?;
        let password = Password::parse("password", password)?;
        let hash = self.hasher.hash(&password).await?;
        let idempotency =
            idempotency_key.map(|key| Idempotency::new(key.clone(), &[username.as_str()]));
        let service = self.clone();
        self.detached(async move { service.insert_user(username, hash, idempotency).await })
            .await
    }

    /// The write half of [`Service::register`], once the password is hashed.
    async fn insert_user(
        &self,
        username: Username,
        hash: String,
        idempotency: Option<Idempotency>,
    ) -> ServiceResult<User> {
        let now = now_ms();
        let created: Option<User> = write_tx!(&self.db, tx => {
            let user = sqlx::query_as::<_, User>(
                "insert into users (username, password_hash, created_at) values ($1, $2, $3)
                 on conflict do nothing returning id, username, created_at",
            )
            .bind(username.as_str())
            .bind(&hash)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            if let (Some(user), Some(idem)) = (&user, &idempotency) {
                claim_key!(tx, user.id, "register", idem, now)?;
                record_key!(tx, user.id, idem, user)?;
            }
            Ok::<_, ServiceError>(user)
        })?;
        if let Some(user) = created {
            return Ok(user);
        }
        if let Some(idem) = &idempotency {
            let first: Option<String> = with_db!(&self.db, pool => {
                sqlx::query_scalar(
                    "select k.response from idempotency_keys k join users u on u.id = k.user_id
                     where u.username = $1 and k.key = $2 and k.operation = 'register'
                       and k.request_hash = $3",
                )
                .bind(username.as_str())
                .bind(idem.key.as_str())
                .bind(idem.fingerprint.as_str())
                .fetch_optional(pool)
                .await?
            });
            if let Some(first) = first {
                return stored_result(&first);
            }
        }
        Err(ServiceError::conflict("username: is already taken", None))
    }

    /// Checks credentials. After `max_failures` failed attempts on one username within
    /// the throttle window, attempts are refused with TOO_MANY_REQUESTS, even with the
    /// right password, until the oldest of those failures leaves the window.
    ///
    /// An unknown or malformed username answers exactly as a wrong password does, after
    /// the same argon2 work, so accounts cannot be discovered by probing.
    ///
    /// The count and the attempt are one step: each attempt is recorded as a failure
    /// before its password is checked ([`Service::reserve_login_attempt`]), and a success
    /// clears the username's failures. Counted after the check instead, concurrent
    /// guesses all read "no failures yet" and all get through. Password admission comes
    /// first, so an attempt refused as BUSY is not counted against the account.
    pub async fn login(&self, username: &str, password: &str) -> ServiceResult<User> {
        let admitted = self.hasher.admit().await?;
        // From here on the attempt is counted, so it runs to its end on a task of its
        // own: a client that goes away mid-login with the right password must not leave
        // a failure behind (five dropped connections would lock the partner out).
        let (service, username, password) =
            (self.clone(), username.to_owned(), password.to_owned());
        self.detached(async move { service.check_login(admitted, &username, &password).await })
            .await
    }

    async fn check_login(
        &self,
        admitted: Admitted,
        username: &str,
        password: &str,
    ) -> ServiceResult<User> {
        let key = username.to_ascii_lowercase();
        self.reserve_login_attempt(&key).await?;

        let parsed_user = Username::parse("username", username).ok();
        let parsed_password = Password::parse("password", password).ok();
        let stored = match &parsed_user {
            Some(name) => self.user_with_hash(name).await?,
            None => None,
        };
        let verified = match &parsed_password {
            Some(password) => {
                self.hasher
                    .verify_admitted(
                        admitted,
                        password,
                        stored.as_ref().map(|(_, hash)| hash.as_str()),
                    )
                    .await?
            }
            None => false,
        };

        match stored {
            Some((user, _)) if verified => {
                with_db!(&self.logins, pool => {
                    sqlx::query("delete from login_failures where username = $1")
                        .bind(&key)
                        .execute(pool)
                        .await?;
                });
                Ok(user)
            }
            // The attempt is already counted.
            _ => Err(ServiceError::Unauthenticated(WRONG_CREDENTIALS)),
        }
    }

    /// Counts the failures of `key` in the window and, below the limit, records this
    /// attempt as one more, in one transaction that no other attempt on the same
    /// username can interleave with (on SQLite the write lock of the login ledger's own
    /// file, never the main file's, see `Db::open_login_ledger`; a per-username advisory lock
    /// on PostgreSQL, whose concurrent transactions would otherwise count the same
    /// rows). At the limit, TOO_MANY_REQUESTS with the wait until the oldest counted
    /// failure leaves the window.
    async fn reserve_login_attempt(&self, key: &str) -> ServiceResult<()> {
        let window = duration_ms(self.throttle.window);
        let now = now_ms();
        let pg = self.logins.is_postgres();
        // On SQLite a file of its own, lock and gate: no turn taken from the stock
        // writer (see `Db::open_login_ledger`).
        write_tx!(&self.logins, tx => {
                if pg {
                    sqlx::query("select pg_advisory_xact_lock($1, hashtext($2))")
                        .bind(LOGIN_LOCK)
                        .bind(key)
                        .execute(&mut *tx)
                        .await?;
                }
                // The newest `max_failures` failures in the window; the oldest of them
                // decides when the lock lifts.
                let recent: Vec<i64> = sqlx::query_scalar(
                    "select failed_at from login_failures where username = $1 and failed_at > $2
                     order by failed_at desc limit $3",
                )
                .bind(key)
                .bind(now - window)
                .bind(self.throttle.max_failures)
                .fetch_all(&mut *tx)
                .await?;
                if i64::try_from(recent.len()).unwrap_or(i64::MAX) >= self.throttle.max_failures {
                    let oldest = recent.last().copied().unwrap_or(now - window);
                    let wait_ms = (oldest + window - now).max(1000);
                    return Err(ServiceError::TooManyRequests {
                        retry_after: Duration::from_millis(u64::try_from(wait_ms).unwrap_or(1000)),
                    });
                }
                sqlx::query("insert into login_failures (username, failed_at) values ($1, $2)")
                    .bind(key)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                Ok::<_, ServiceError>(())
        })
    }

    async fn user_with_hash(&self, username: &Username) -> ServiceResult<Option<(User, String)>> {
        let row: Option<(i64, String, i64, String)> = with_db!(&self.db, pool => {
            sqlx::query_as(
                "select id, username, created_at, password_hash from users where username = $1",
            )
            .bind(username.as_str())
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(|(id, username, created_at, hash)| {
            (
                User {
                    id,
                    username,
                    created_at,
                },
                hash,
            )
        }))
    }

    pub async fn user(&self, id: i64) -> ServiceResult<Option<User>> {
        Ok(with_db!(&self.db, pool => {
            sqlx::query_as::<_, User>("select id, username, created_at from users where id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?
        }))
    }

    pub async fn user_by_username(&self, username: &str) -> ServiceResult<Option<User>> {
        let Ok(name) = Username::parse("username", username) else {
            return Ok(None);
        };
        Ok(with_db!(&self.db, pool => {
            sqlx::query_as::<_, User>("select id, username, created_at from users where username = $1")
                .bind(name.as_str())
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Loads many users in one query (the GraphQL owner DataLoader's batch).
    pub async fn users_by_ids(&self, ids: &[i64]) -> ServiceResult<HashMap<i64, User>> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let mut sql =
            crate::db::Sql::new("select id, username, created_at from users where id in (");
        for (i, id) in ids.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.bind(crate::db::Arg::Int(*id));
        }
        sql.push(")");
        let users: Vec<User> = with_db!(&self.db, pool => {
            crate::bind_args!(sqlx::query_as::<_, User>(&sql.text), &sql.args)
                .fetch_all(pool)
                .await?
        });
        Ok(users.into_iter().map(|u| (u.id, u)).collect())
    }
}
