//! Password hashing with argon2id, always off the async runtime.
//!
//! Hashing costs tens of milliseconds of CPU by design, so it runs on tokio's blocking
//! pool and never stalls the threads that serve other requests. Logging in as an
//! unknown user verifies against a dummy hash of the same cost, so an attacker cannot
//! tell a missing account from a wrong password by timing.

use std::fmt;
use std::sync::Arc;

use anyhow::anyhow;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::domain::Password;
use crate::error::{ServiceError, ServiceResult};

/// The OWASP minimum for argon2id: 19 MiB, 2 passes, 1 lane.
pub const OWASP_MEMORY_KIB: u32 = 19_456;
pub const OWASP_ITERATIONS: u32 = 2;
pub const OWASP_PARALLELISM: u32 = 1;

/// Argon2id with fixed parameters, and a dummy hash made with them.
#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    dummy_hash: Arc<str>,
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
        })
    }

    /// Hashes a password into a PHC string (algorithm, parameters and salt included).
    pub async fn hash(&self, password: &Password) -> ServiceResult<String> {
        let params = self.params.clone();
        let password = password.clone();
        tokio::task::spawn_blocking(move || hash_with(&params, password.expose()))
            .await
            .map_err(|e| ServiceError::Internal(e.into()))?
            .map_err(|e| ServiceError::Internal(anyhow!("argon2 hashing failed: {e}")))
    }

    /// Checks a password against a stored hash, or against the dummy hash when there is
    /// no account (`None`), which always fails but takes as long.
    pub async fn verify(&self, password: &Password, stored: Option<&str>) -> ServiceResult<bool> {
        let known = stored.is_some();
        let hash = stored.map_or_else(|| self.dummy_hash.to_string(), str::to_owned);
        let password = password.clone();
        let matches = tokio::task::spawn_blocking(move || {
            let parsed = PasswordHash::new(&hash).map_err(|e| {
                ServiceError::Internal(anyhow!("stored password hash is malformed: {e}"))
            })?;
            Ok::<_, ServiceError>(
                Argon2::default()
                    .verify_password(password.expose().as_bytes(), &parsed)
                    .is_ok(),
            )
        })
        .await
        .map_err(|e| ServiceError::Internal(e.into()))??;
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

    #[test]
    fn parameters_below_owasp_are_refused() {
        assert!(PasswordHasher::new(4096, 2, 1).is_err());
        assert!(PasswordHasher::new(OWASP_MEMORY_KIB, 1, 1).is_err());
    }
}
