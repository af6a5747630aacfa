//! Password hashing with argon2id, always off the async runtime, and admitted.
//!
//! Hashing costs tens of milliseconds of CPU and 19 MiB by design, so it runs on threads
//! of its own, at the lowest priority, and never stalls the threads that serve other
//! requests. Logging in as
//! an unknown user verifies against a dummy hash of the same cost, so an attacker cannot
//! tell a missing account from a wrong password by timing.
//!
//! # Admission
//!
//! A sign-up or login storm must not take the cores from everyone else: unbounded, fifty
//! sign-ups and fifty logins a second need more than two cores. Password work is
//! admitted ([`crate::service::admission`]): one job per core by default, a short queue,
//! and BUSY past them, on threads that yield the cores to every other request.

use std::fmt;
use std::sync::Arc;

use anyhow::anyhow;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::domain::Password;
use crate::error::{ServiceError, ServiceResult};
pub use crate::service::admission::Admitted;
use crate::service::admission::{Admission, AdmissionPolicy};

/// The OWASP minimum for argon2id: 19 MiB, 2 passes, 1 lane.
pub const OWASP_MEMORY_KIB: u32 = 19_456;
pub const OWASP_ITERATIONS: u32 = 2;
pub const OWASP_PARALLELISM: u32 = 1;

/// How much password work may run and wait at once (see the module docs).
pub type PasswordAdmission = AdmissionPolicy;

/// Argon2id with fixed parameters, a dummy hash made with them, and the admission that
/// bounds how much of it runs at once.
#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    dummy_hash: Arc<str>,
    admission: Arc<Admission>,
}

impl fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("m_cost", &self.params.m_cost())
            .field("t_cost", &self.params.t_cost())
            .field("p_cost", &self.params.p_cost())
            .finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// Builds a hasher; parameters below the OWASP minimum are refused.
    pub fn new(memory_kib: u32, iterations: u32, parallelism: u32) -> anyhow::Result<Self> {
        anyhow::ensure!(
            memory_kib >= OWASP_MEMORY_KIB && iterations >= OWASP_ITERATIONS && parallelism >= 1,
            "argon2 parameters below the OWASP minimum (m={OWASP_MEMORY_KIB} KiB, t={OWASP_ITERATIONS}, p={OWASP_PARALLELISM})"
        );
        let params = Params::new(memory_kib, iterations, parallelism, None)
            .map_err(|e| anyhow!("invalid argon2 parameters: {e}"))?;
        let dummy_hash = hash_with(&params, "a password nobody has, for timing only")
            .map_err(|e| anyhow!("cannot compute the dummy hash: {e}"))?;
        Ok(Self {
            params,
            dummy_hash: dummy_hash.into(),
            admission: Arc::new(Admission::new("password", AdmissionPolicy::default())),
        })
    }

    /// The same hasher, admitting work as `policy` says.
    pub fn with_admission(self, policy: PasswordAdmission) -> Self {
        Self {
            admission: Arc::new(Admission::new("password", policy)),
            ..self
        }
    }

    /// Hashes a password into a PHC string (algorithm, parameters and salt included).
    pub async fn hash(&self, password: &Password) -> ServiceResult<String> {
        let params = self.params.clone();
        let password = password.clone();
        self.admission
            .run(move || hash_with(&params, password.expose()))
            .await?
            .map_err(|e| ServiceError::Internal(anyhow!("argon2 hashing failed: {e}")))
    }

    /// Checks a password against a stored hash, or against the dummy hash when there is
    /// no account (`None`), which always fails but takes as long.
    pub async fn verify(&self, password: &Password, stored: Option<&str>) -> ServiceResult<bool> {
        let admitted = self.admit().await?;
        self.verify_admitted(admitted, password, stored).await
    }

    /// A place among the password workers, taken before the work it is for, so a caller
    /// can be refused as BUSY before it does anything else.
    pub async fn admit(&self) -> ServiceResult<Admitted> {
        self.admission.admit().await
    }

    /// [`PasswordHasher::verify`], on a place already admitted.
    pub async fn verify_admitted(
        &self,
        admitted: Admitted,
        password: &Password,
        stored: Option<&str>,
    ) -> ServiceResult<bool> {
        let known = stored.is_some();
        let hash = stored.map_or_else(|| self.dummy_hash.to_string(), str::to_owned);
        let password = password.clone();
        let matches = self
            .admission
            .run_admitted(admitted, move || {
                let parsed = PasswordHash::new(&hash).map_err(|e| {
                    ServiceError::Internal(anyhow!("stored password hash is malformed: {e}"))
                })?;
                Ok::<_, ServiceError>(
                    Argon2::default()
                        .verify_password(password.expose().as_bytes(), &parsed)
                        .is_ok(),
                )
            })
            .await??;
        Ok(known && matches)
    }
}

fn hash_with(params: &Params, password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_unknown_users_never_match() -> anyhow::Result<()> {
        let hasher = PasswordHasher::new(OWASP_MEMORY_KIB, OWASP_ITERATIONS, OWASP_PARALLELISM)?;
        let password = Password::parse("password", "correct horse")?;
        let hash = hasher.hash(&password).await?;
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(hasher.verify(&password, Some(&hash)).await?);
        let wrong = Password::parse("password", "wrong horse!")?;
        assert!(!hasher.verify(&wrong, Some(&hash)).await?);
        assert!(!hasher.verify(&password, None).await?);
        Ok(())
    }

    /// One worker and a queue of one: a third concurrent job is refused at once, a
    /// waiting one is refused at its deadline, and the refusals cost no argon2 work.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn password_work_past_the_workers_and_the_queue_is_refused_as_busy() -> anyhow::Result<()>
    {
        let hasher = PasswordHasher::new(OWASP_MEMORY_KIB, OWASP_ITERATIONS, OWASP_PARALLELISM)?
            .with_admission(PasswordAdmission {
                workers: 1,
                queue: 1,
                max_wait: Duration::from_millis(150),
            });
        // Hold the worker, as a hash in progress would.
        let held = hasher.admission.admit().await?;
        let password = Password::parse("password", "correct horse")?;
        let queued = tokio::spawn({
            let (hasher, password) = (hasher.clone(), password.clone());
            async move { hasher.verify(&password, None).await }
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        // The queue is full: refused without waiting.
        let refused = hasher.hash(&password).await;
        assert!(
            matches!(refused, Err(ServiceError::Busy { .. })),
            "{refused:?}"
        );
        // The queued one runs out of patience, and says so.
        let timed_out = queued.await?;
        assert!(
            matches!(timed_out, Err(ServiceError::Busy { .. })),
            "{timed_out:?}"
        );
        assert_eq!(hasher.admission.waiting(), 0);
        // Once the worker is free, work is admitted again.
        drop(held);
        assert!(hasher.hash(&password).await?.starts_with("$argon2id$"));
        Ok(())
    }

    #[test]
    fn parameters_below_owasp_are_refused() {
        assert!(PasswordHasher::new(4096, 2, 1).is_err());
        assert!(PasswordHasher::new(OWASP_MEMORY_KIB, 1, 1).is_err());
    }
}
