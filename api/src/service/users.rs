//! Partners: registration, login, and login throttling kept in the database.

use std::collections::HashMap;
use std::time::Duration;

use crate::db::{now_ms, Arg, Sql};
use crate::domain::{IdempotencyKey, Password, Username};
use crate::error::{ServiceError, ServiceResult};
use crate::service::idempotency::{stored_result, Idempotency};
use crate::service::password::Admitted;
use crate::service::{duration_ms, Actor, AuthMethod, Service};

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
const LOGIN_LOCK: i64 = 7_236_002;

/// A login that succeeded: the partner, and the version of the password it verified.
/// A session records the version, and is stored only while it is still the partner's
/// (`sessions::Store`), so a login that raced a password change stores nothing.
#[derive(Clone, Debug)]
pub struct Login {
    pub user: User,
    pub password_version: i64,
}

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
        let mut tx = self.db.begin_write().await?;
        let created: Option<User> = tx
            .fetch_optional(
                &Sql::new(
                    "insert into users (username, password_hash, created_at) values ($1, $2, $3)
                     on conflict do nothing returning id, username, created_at",
                )
                .arg(username.as_str())
                .arg(&hash)
                .arg(now),
            )
            .await?;
        if let (Some(user), Some(idem)) = (&created, &idempotency) {
            tx.claim_key(user.id, "register", idem, now).await?;
            tx.record_key(user.id, idem, user).await?;
        }
        tx.commit().await?;
        if let Some(user) = created {
            return Ok(user);
        }
        if let Some(idem) = &idempotency {
            let first: Option<String> = self
                .db
                .scalar_optional(
                    &Sql::new(
                        "select k.response from idempotency_keys k join users u on u.id = k.user_id
                         where u.username = $1 and k.key = $2 and k.operation = 'register'
                           and k.request_hash = $3",
                    )
                    .arg(username.as_str())
                    .arg(idem.key.as_str())
                    .arg(idem.fingerprint.as_str()),
                )
                .await?;
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
    pub async fn login(&self, username: &str, password: &str) -> ServiceResult<Login> {
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
    ) -> ServiceResult<Login> {
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
                        stored.as_ref().map(|(_, hash, _)| hash.as_str()),
                    )
                    .await?
            }
            None => false,
        };

        match stored {
            Some((user, _, password_version)) if verified => {
                self.logins
                    .execute(&Sql::new("delete from login_failures where username = $1").arg(&key))
                    .await?;
                Ok(Login {
                    user,
                    password_version,
                })
            }
            // The attempt is already counted.
            _ => Err(ServiceError::Unauthenticated(WRONG_CREDENTIALS)),
        }
    }

    /// Changes the actor's password. The current one is checked as a login is, and
    /// throttled with the same count (a wrong one is a failed login of the account).
    /// On success the new hash is stored and every stored session of the partner is
    /// ended on every replica, in one transaction; the caller keeps its own session
    /// under a new id (`PartnerSession::renew`). API tokens are kept: they are
    /// credentials of their own, revoked one by one.
    ///
    /// Only a logged-in session may change it: an API token is FORBIDDEN, as it is from
    /// managing tokens. Answers the password's new version (see [`Login`]).
    pub async fn change_password(
        &self,
        actor: &Actor,
        current: &str,
        new: &str,
    ) -> ServiceResult<i64> {
        if actor.method != AuthMethod::Session {
            return Err(ServiceError::Forbidden(
                "an API token cannot change the password; log in",
            ));
        }
        let new = Password::parse("newPassword", new)?;
        if new.expose() == current {
            return Err(ServiceError::invalid(
                "newPassword",
                "is the same as the current password",
            ));
        }
        let admitted = self.hasher.admit().await?;
        // From here on the attempt is counted and the write may follow: it runs to its
        // end on a task of its own, as a login does.
        let (service, actor, current) = (self.clone(), *actor, current.to_owned());
        self.detached(async move {
            let user = service
                .user(actor.user_id)
                .await?
                .ok_or(ServiceError::Unauthenticated(
                    "the partner no longer exists",
                ))?;
            match service
                .check_login(admitted, &user.username, &current)
                .await
            {
                Ok(_) => {}
                Err(ServiceError::Unauthenticated(_)) => {
                    return Err(ServiceError::invalid(
                        "currentPassword",
                        "is not your current password",
                    ))
                }
                Err(other) => return Err(other),
            }
            let hash = service.hasher.hash(&new).await?;
            let mut tx = service.db.begin_write().await?;
            let version: i64 = tx
                .scalar_one(
                    &Sql::new(
                        "update users set password_hash = $1, password_version = password_version + 1
                         where id = $2 returning password_version",
                    )
                    .arg(&hash)
                    .arg(actor.user_id),
                )
                .await?;
            tx.end_sessions_of(actor.user_id).await?;
            tx.commit().await?;
            Ok(version)
        })
        .await
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
        let mut tx = self.logins.begin_write().await?;
        if pg {
            tx.execute(
                &Sql::new("select pg_advisory_xact_lock(cast($1 as integer), hashtext($2))")
                    .arg(LOGIN_LOCK)
                    .arg(key),
            )
            .await?;
        }
        // The newest `max_failures` failures in the window; the oldest of them decides
        // when the lock lifts.
        let recent: Vec<(i64,)> = tx
            .fetch_all(
                &Sql::new(
                    "select failed_at from login_failures where username = $1 and failed_at > $2
                     order by failed_at desc limit $3",
                )
                .arg(key)
                .arg(now - window)
                .arg(self.throttle.max_failures),
            )
            .await?;
        if i64::try_from(recent.len()).unwrap_or(i64::MAX) >= self.throttle.max_failures {
            let oldest = recent.last().map_or(now - window, |r| r.0);
            let wait_ms = (oldest + window - now).max(1000);
            return Err(ServiceError::TooManyRequests {
                retry_after: Duration::from_millis(u64::try_from(wait_ms).unwrap_or(1000)),
            });
        }
        tx.execute(
            &Sql::new("insert into login_failures (username, failed_at) values ($1, $2)")
                .arg(key)
                .arg(now),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A partner, with the password's hash and version.
    async fn user_with_hash(
        &self,
        username: &Username,
    ) -> ServiceResult<Option<(User, String, i64)>> {
        let row: Option<(i64, String, i64, String, i64)> = self
            .db
            .fetch_optional(
                &Sql::new(
                    "select id, username, created_at, password_hash, password_version
                     from users where username = $1",
                )
                .arg(username.as_str()),
            )
            .await?;
        Ok(row.map(|(id, username, created_at, hash, version)| {
            (
                User {
                    id,
                    username,
                    created_at,
                },
                hash,
                version,
            )
        }))
    }

    pub async fn user(&self, id: i64) -> ServiceResult<Option<User>> {
        Ok(self
            .db
            .fetch_optional(
                &Sql::new("select id, username, created_at from users where id = $1").arg(id),
            )
            .await?)
    }

    pub async fn user_by_username(&self, username: &str) -> ServiceResult<Option<User>> {
        let Ok(name) = Username::parse("username", username) else {
            return Ok(None);
        };
        Ok(self
            .db
            .fetch_optional(
                &Sql::new("select id, username, created_at from users where username = $1")
                    .arg(name.as_str()),
            )
            .await?)
    }

    /// Loads many users in one query (the GraphQL owner DataLoader's batch).
    pub async fn users_by_ids(&self, ids: &[i64]) -> ServiceResult<HashMap<i64, User>> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let mut sql = Sql::new("select id, username, created_at from users where id in (");
        for (i, id) in ids.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.bind(Arg::from(*id));
        }
        sql.push(")");
        let users: Vec<User> = self.db.fetch_all(&sql).await?;
        Ok(users.into_iter().map(|u| (u.id, u)).collect())
    }
}
