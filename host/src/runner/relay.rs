//! The relay this binary carries inside itself: the static musl build of
//! `docker/relay/` that `build.rs` compiled. The host copies it into each
//! command job's gateway folder, where the container runs it read-only as
//! its entrypoint, so it works in any image and needs nothing from one.

/// The relay's executable.
pub const RELAY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cmm-relay"));
