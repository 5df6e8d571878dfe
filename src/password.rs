//! Password hashes: how they are made, checked, written down, and how many are computed at
//! once.
//!
//! This module owns the `PasswordHash` record (PBKDF2-HMAC-SHA256, a random 16-byte salt, and
//! the iteration count stored with each hash so the default can be raised without breaking
//! old accounts) and the `Hasher` that runs the key derivation. Hashing is deliberately slow,
//! so it must never run under the registry lock, and the `Hasher` lets at most one hash per
//! CPU core run at a time: a storm of sign-ins waits its turn instead of starving the threads
//! that relay chat.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::sync::{Condvar, Mutex, PoisonError};

use crate::crypto::{constant_time_eq, from_hex, pbkdf2_hmac_sha256, to_hex};

const SALT_LEN: usize = 16;
const HASH_LEN: usize = 32;
const SCHEME: &str = "pbkdf2-sha256";

/// A stored password: `pbkdf2-sha256$ITERATIONS$SALT_HEX$HASH_HEX` in text form.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash {
    iterations: u32,
    salt: [u8; SALT_LEN],
    hash: [u8; HASH_LEN],
}

/// Printing a hash in a debug log would leak it; show only the scheme and cost.
impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PasswordHash({SCHEME}, {} iterations)", self.iterations)
    }
}

impl fmt::Display for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (salt, hash) = (to_hex(&self.salt), to_hex(&self.hash));
        write!(f, "{SCHEME}${}${salt}${hash}", self.iterations)
    }
}

impl PasswordHash {
    /// Parses the text form; `None` if it is not exactly that.
    pub fn parse(text: &str) -> Option<PasswordHash> {
        let mut parts = text.split('$');
        if parts.next()? != SCHEME {
            return None;
        }
        let iterations: u32 = parts.next()?.parse().ok().filter(|&n| n > 0)?;
        let salt = from_hex(parts.next()?)?.try_into().ok()?;
        let hash = from_hex(parts.next()?)?.try_into().ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(PasswordHash {
            iterations,
            salt,
            hash,
        })
    }

    fn derive(password: &str, salt: [u8; SALT_LEN], iterations: u32) -> PasswordHash {
        let mut hash = [0; HASH_LEN];
        pbkdf2_hmac_sha256(password.as_bytes(), &salt, iterations, &mut hash);
        PasswordHash {
            iterations,
            salt,
            hash,
        }
    }

    fn matches(&self, password: &str) -> bool {
        let candidate = PasswordHash::derive(password, self.salt, self.iterations);
        constant_time_eq(&candidate.hash, &self.hash)
    }

    /// A cheap fixed hash for unit tests that need an account but not a password.
    #[cfg(test)]
    pub fn for_tests() -> PasswordHash {
        PasswordHash::derive("test", [7; SALT_LEN], 1)
    }
}

/// Reads a fresh random salt from the kernel.
fn random_salt() -> io::Result<[u8; SALT_LEN]> {
    let mut salt = [0; SALT_LEN];
    File::open("/dev/urandom")?.read_exact(&mut salt)?;
    Ok(salt)
}

/// Computes password hashes, at most `permits` at a time.
pub struct Hasher {
    iterations: u32,
    free_permits: Mutex<usize>,
    permit_returned: Condvar,
}

impl Hasher {
    /// A hasher using `iterations` for new hashes, running as many hashes at once as the
    /// machine has cores.
    pub fn new(iterations: u32) -> Hasher {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Hasher {
            iterations,
            free_permits: Mutex::new(cores),
            permit_returned: Condvar::new(),
        }
    }

    /// Hashes a new password with a fresh salt and the configured cost.
    pub fn hash(&self, password: &str) -> io::Result<PasswordHash> {
        let salt = random_salt()?;
        Ok(self.with_permit(|| PasswordHash::derive(password, salt, self.iterations)))
    }

    /// Whether `password` matches `stored`, in time independent of where they differ.
    pub fn verify(&self, stored: &PasswordHash, password: &str) -> bool {
        self.with_permit(|| stored.matches(password))
    }

    /// Runs `work` holding one of the permits (a counting semaphore built from a mutex and
    /// a condition variable; std has none).
    fn with_permit<T>(&self, work: impl FnOnce() -> T) -> T {
        {
            let mut free = self
                .free_permits
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            while *free == 0 {
                free = self
                    .permit_returned
                    .wait(free)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            *free -= 1;
        }
        // Returned by a guard so a panic inside `work` cannot leak the permit.
        struct Permit<'a>(&'a Hasher);
        impl Drop for Permit<'_> {
            fn drop(&mut self) {
                let hasher = self.0;
                *hasher
                    .free_permits
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) += 1;
                hasher.permit_returned.notify_one();
            }
        }
        let _permit = Permit(self);
        work()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_verifies_only_its_password() {
        let hasher = Hasher::new(10);
        let stored = hasher.hash("correct horse").expect("urandom");
        assert!(hasher.verify(&stored, "correct horse"));
        assert!(!hasher.verify(&stored, "correct hors"));
        assert!(!hasher.verify(&stored, ""));
    }

    #[test]
    fn salts_differ_so_equal_passwords_hash_differently() {
        let hasher = Hasher::new(1);
        let a = hasher.hash("same").expect("urandom");
        let b = hasher.hash("same").expect("urandom");
        assert_ne!(a, b);
    }

    #[test]
    fn text_form_round_trips_and_keeps_its_iteration_count() {
        let stored = Hasher::new(3).hash("pw").expect("urandom");
        let text = stored.to_string();
        assert!(text.starts_with("pbkdf2-sha256$3$"), "{text}");
        let parsed = PasswordHash::parse(&text).expect("own output parses");
        assert_eq!(parsed, stored);
        // A hasher with another default still verifies old hashes at their own cost.
        assert!(Hasher::new(1000).verify(&parsed, "pw"));
    }

    #[test]
    fn malformed_text_is_rejected() {
        let good = PasswordHash::for_tests().to_string();
        let rows = [
            String::new(),
            "pbkdf2-sha256".into(),
            good.replace("pbkdf2-sha256", "md5"),
            good.replace("$1$", "$0$"),
            good.replace("$1$", "$x$"),
            format!("{good}$extra"),
            good[..good.len() - 2].to_string(),
        ];
        for text in rows {
            assert_eq!(PasswordHash::parse(&text), None, "{text:?}");
        }
    }

    #[test]
    fn debug_output_hides_the_hash() {
        let shown = format!("{:?}", PasswordHash::for_tests());
        assert_eq!(shown, "PasswordHash(pbkdf2-sha256, 1 iterations)");
    }
}
