//! Test fixtures: identities are slow to generate, so each test binary makes each one once.

use std::sync::OnceLock;

use quip_proto::ids::UserName;
use rsa::PrivateKey;

use super::identity::{DEFAULT_KEY_BITS, Identity, MIN_KEY_BITS};
use super::secrets::Secrets;

/// A valid user name.
pub(crate) fn name(raw: &str) -> UserName {
    UserName::new(raw).expect("valid test user name")
}

macro_rules! identity_fixture {
    ($($(#[$doc:meta])* $fn:ident = $make:expr;)*) => {$(
        $(#[$doc])*
        pub(crate) fn $fn() -> &'static Identity {
            static CELL: OnceLock<Identity> = OnceLock::new();
            CELL.get_or_init(|| $make)
        }
    )*};
}

identity_fixture! {
    /// Alice, 2048-bit keys.
    alice = Identity::generate(MIN_KEY_BITS).expect("generate alice");
    /// Bob, 2048-bit keys.
    bob = Identity::generate(MIN_KEY_BITS).expect("generate bob");
    /// Carol, 2048-bit keys.
    carol = Identity::generate(MIN_KEY_BITS).expect("generate carol");
    /// An identity of the default size (3072 bits).
    default_size = Identity::generate(DEFAULT_KEY_BITS).expect("generate 3072");
    /// A 4096-bit identity; one key serves as both halves to halve the generation time.
    bits_4096 = {
        let key = PrivateKey::new(&mut rand::rng(), 4096).expect("generate 4096");
        Identity::from_private_keys(key.clone(), key).expect("4096 identity")
    };
}

/// The deployment the fixtures' secrets are bound to.
pub(crate) const DEPLOYMENT: super::Deployment = super::Deployment([0x5a; 32]);

/// Alice's secrets for the password "alice's password" (Argon2id once per binary).
pub(crate) fn alice_secrets() -> &'static Secrets {
    static CELL: OnceLock<Secrets> = OnceLock::new();
    CELL.get_or_init(|| {
        Secrets::derive(&name("alice"), "alice's password", &DEPLOYMENT).expect("derive")
    })
}
