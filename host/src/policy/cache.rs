//! The on-disk compile cache for plugins.
//!
//! Compiling a component takes tens of milliseconds; loading a precompiled
//! one takes tens of microseconds. But deserializing is `unsafe`: the bytes
//! become native code. So an entry is only trusted if it carries a MAC made
//! with this home's secret cache key, which only the host writes: a file
//! dropped into the folder by anyone else is discarded and recompiled, as is
//! a corrupt or incompatible entry. The MAC covers the entry's name, which
//! holds the digest of the wasm it was compiled from, so one genuine entry
//! copied over another cannot run under the other plugin's name.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;

use cap_std::fs::{Dir, OpenOptions};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use wasmtime::Engine;
use wasmtime::component::Component;

const KEY_FILE: &str = "cache.key";
const MAC_LEN: usize = 32;
/// Pinned with `=` in Cargo.toml; part of every entry name so entries from
/// another wasmtime never collide with ours.
const WASMTIME_VERSION: &str = "48.0.8";

/// A folder of precompiled components, keyed by the wasm's sha256, the
/// wasmtime version and the engine's code-generation settings.
pub struct CompileCache {
    dir: Dir,
    key: [u8; 32],
}

impl CompileCache {
    /// Opens the cache in `dir`, creating its secret key on first use.
    pub fn open(dir: Dir) -> io::Result<CompileCache> {
        let key = match dir.read(KEY_FILE) {
            Ok(bytes) if bytes.len() == 32 => bytes.try_into().expect("length checked"),
            Ok(_) | Err(_) => new_key(&dir)?,
        };
        Ok(CompileCache { dir, key })
    }

    /// Returns the compiled component for `wasm`, from the cache when a valid
    /// entry exists, compiling and storing it otherwise. A failure to write
    /// the cache is logged, not fatal: the compiled component is still good.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        sha256: &str,
        wasm: &[u8],
    ) -> wasmtime::Result<Component> {
        let name = entry_name(engine, sha256);
        if let Some(component) = self.load(engine, &name) {
            return Ok(component);
        }
        let component = Component::new(engine, wasm)?;
        if let Err(e) = self.store(&name, &component.serialize()?) {
            tracing::warn!(entry = %name, error = %e, "could not write the plugin compile cache");
        }
        Ok(component)
    }

    fn load(&self, engine: &Engine, name: &str) -> Option<Component> {
        let bytes = self.dir.read(name).ok()?;
        let verified = bytes
            .len()
            .checked_sub(MAC_LEN)
            .map(|split| bytes.split_at(split))
            .filter(|(payload, tag)| self.mac(name, payload).verify_slice(tag).is_ok());
        let Some((payload, _)) = verified else {
            tracing::warn!(
                entry = name,
                "discarding a compile cache entry this host did not write for this plugin"
            );
            let _ = self.dir.remove_file(name);
            return None;
        };
        // SAFETY: the MAC proves this host serialized these bytes with
        // `Component::serialize`; wasmtime still checks version and settings.
        match unsafe { Component::deserialize(engine, payload) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(entry = name, error = %e, "discarding an incompatible compile cache entry");
                let _ = self.dir.remove_file(name);
                None
            }
        }
    }

    fn store(&self, name: &str, payload: &[u8]) -> io::Result<()> {
        let tag = self.mac(name, payload).finalize().into_bytes();
        // Unique per writer: threads of one process may compile the same
        // plugin at once, and must not write into each other's temp file.
        let tmp = format!("{name}.tmp{:016x}", rand::random::<u64>());
        let mut bytes = Vec::with_capacity(payload.len() + MAC_LEN);
        bytes.extend_from_slice(payload);
        bytes.extend_from_slice(&tag);
        write_private(&self.dir, &tmp, &bytes)?;
        self.dir.rename(&tmp, &self.dir, name)
    }

    /// Over the entry name (length-prefixed, so no name and payload split
    /// the same bytes two ways) and the compiled bytes.
    fn mac(&self, name: &str, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(&(name.len() as u64).to_be_bytes());
        mac.update(name.as_bytes());
        mac.update(payload);
        mac
    }
}

fn entry_name(engine: &Engine, sha256: &str) -> String {
    let mut settings = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut settings);
    format!(
        "{sha256}-{WASMTIME_VERSION}-{:016x}.cwasm",
        settings.finish()
    )
}

fn new_key(dir: &Dir) -> io::Result<[u8; 32]> {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    // Entries made under an old key can no longer be verified; clear them.
    for entry in dir.entries()? {
        let name = entry?.file_name();
        if name.to_string_lossy().ends_with(".cwasm") {
            dir.remove_file(&name)?;
        }
    }
    write_private(dir, KEY_FILE, &key)?;
    Ok(key)
}

fn write_private(dir: &Dir, name: &str, bytes: &[u8]) -> io::Result<()> {
    use cap_std::fs::OpenOptionsExt;
    use std::io::Write;
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true).mode(0o600);
    let mut file = dir.open_with(name, &options)?;
    file.write_all(bytes)?;
    file.sync_all()
}
