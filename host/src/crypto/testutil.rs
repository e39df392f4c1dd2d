//! Fixtures shared by the crypto module's unit tests: RSA keys are slow to
//! generate, so a few are made once per test binary and shared.

use std::sync::OnceLock;

use super::keys::NodeKey;

/// Key size for keys generated in tests (3072 is too slow for every test).
pub(crate) const TEST_BITS: usize = 2048;

/// The TEST-ONLY private key of the published test vectors.
pub(crate) const VECTOR_KEY_PEM: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/vectors/test-key.pem"
));

/// The vector key, parsed.
pub(crate) fn vector_key() -> NodeKey {
    NodeKey::from_pem(VECTOR_KEY_PEM, None, "tests/vectors/test-key.pem", None)
        .expect("the test vector key parses")
}

/// Four distinct keys: the vector key and three generated ones.
pub(crate) fn shared_keys() -> &'static [NodeKey; 4] {
    static KEYS: OnceLock<[NodeKey; 4]> = OnceLock::new();
    KEYS.get_or_init(|| {
        let generate = || NodeKey::generate(TEST_BITS).expect("2048-bit key generation");
        [vector_key(), generate(), generate(), generate()]
    })
}
