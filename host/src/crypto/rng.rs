//! Operating-system randomness for the crypto module.
//!
//! Everything random here (RSA key generation, OAEP padding, content keys,
//! nonce prefixes, PBKDF2 salts) comes from ring's `SystemRandom`, which
//! reads the kernel CSPRNG. `rsa` 0.9 wants a `rand_core` 0.6 generator, so
//! [`OsRandom`] adapts `SystemRandom` to that trait instead of pulling in a
//! second randomness stack.

use std::num::NonZeroU32;

use ring::rand::{SecureRandom, SystemRandom};
use rsa::rand_core::{self, CryptoRng, RngCore};

/// The operating system's random number generator failed. This is not
/// recoverable by retrying with other input; the machine is misconfigured.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error(
    "the operating system's random number generator failed; check that /dev/urandom (getrandom) is available"
)]
pub struct RngError;

/// Fills `dest` with random bytes from the kernel CSPRNG.
pub(crate) fn fill(dest: &mut [u8]) -> Result<(), RngError> {
    SystemRandom::new().fill(dest).map_err(|_| RngError)
}

/// Returns `N` random bytes.
pub(crate) fn random_array<const N: usize>() -> Result<[u8; N], RngError> {
    let mut out = [0u8; N];
    fill(&mut out)?;
    Ok(out)
}

/// Error code reported through `rand_core`; codes from `CUSTOM_START` up are
/// reserved for generator implementations.
const RNG_FAILURE: NonZeroU32 = NonZeroU32::MIN.saturating_add(rand_core::Error::CUSTOM_START - 1);

/// `rand_core` 0.6 adapter over ring's `SystemRandom`, for the `rsa` crate.
pub(crate) struct OsRandom;

impl RngCore for OsRandom {
    fn next_u32(&mut self) -> u32 {
        rand_core::impls::next_u32_via_fill(self)
    }

    fn next_u64(&mut self) -> u64 {
        rand_core::impls::next_u64_via_fill(self)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        // `RngCore::fill_bytes` cannot return an error. Continuing with
        // predictable bytes would silently produce weak keys, so a broken
        // kernel RNG aborts the operation instead (as rand's own OsRng does).
        if let Err(err) = fill(dest) {
            panic!("{err}");
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        fill(dest).map_err(|_| rand_core::Error::from(RNG_FAILURE))
    }
}

impl CryptoRng for OsRandom {}
