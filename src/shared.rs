//! `Shared`: what every client thread holds a reference to.
//!
//! This module owns nothing but the bundle itself: the registry behind its mutex, the store,
//! the password hasher, the sign-in throttle and the configuration. Each part has its own
//! module and its own lock; keeping them in one struct only saves passing five arguments.

use std::sync::{Arc, Mutex};

use crate::config::Config;
use crate::password::Hasher;
use crate::registry::{Registry, SharedRegistry};
use crate::store::Store;
use crate::throttle::LoginThrottle;

/// State shared by all client threads. Lock order: `store` before `registry`.
pub struct Shared {
    pub registry: SharedRegistry,
    pub store: Store,
    pub hasher: Hasher,
    pub throttle: LoginThrottle,
    pub config: Config,
}

impl Shared {
    /// Bundles a loaded store and its registry with the rest of the shared state.
    pub fn new(config: Config, store: Store, registry: Registry) -> Shared {
        Shared {
            registry: Arc::new(Mutex::new(registry)),
            store,
            hasher: Hasher::new(config.kdf_iterations),
            throttle: LoginThrottle::new(),
            config,
        }
    }
}
