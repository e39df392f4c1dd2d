//! Measures streaming encryption and decryption throughput.
//!
//! `cargo run --release -p claude-max-market --example crypt_cipher -- [MiB]` writes MiB (default
//! 1024) of pseudo-random data to a temporary file, encrypts it from that
//! file into a discarding sink, then decrypts a ciphertext file into a
//! discarding sink, and prints MB/s for each (1 MB = 10^6 bytes). The input
//! files are freshly written, so they are read from the page cache.

use std::error::Error;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::time::Instant;

use claude_max_market::crypto::{
    DEFAULT_KEY_BITS, DEFAULT_SEGMENT_SIZE, NodeKey, decrypt, encrypt,
};

fn main() -> Result<(), Box<dyn Error>> {
    let mib: u64 = match std::env::args().nth(1) {
        Some(arg) => arg
            .parse()
            .map_err(|err| format!("the argument must be a number of MiB: {err}"))?,
        None => 1024,
    };
    let bytes = mib * 1024 * 1024;
    let dir = tempfile::tempdir()?;
    let plain_path = dir.path().join("plain.bin");
    let sealed_path = dir.path().join("sealed.cmmenc");
    write_pseudo_random(&plain_path, bytes)?;

    let key = NodeKey::generate(DEFAULT_KEY_BITS)?;
    let recipients = [key.public().clone()];

    let start = Instant::now();
    let summary = encrypt(
        File::open(&plain_path)?,
        io::sink(),
        &recipients,
        DEFAULT_SEGMENT_SIZE,
    )?;
    report("encrypt (file -> sink)", summary.plaintext_bytes, start);

    encrypt(
        File::open(&plain_path)?,
        File::create(&sealed_path)?,
        &recipients,
        DEFAULT_SEGMENT_SIZE,
    )?;
    let start = Instant::now();
    let summary = decrypt(File::open(&sealed_path)?, io::sink(), &[key])?;
    report("decrypt (file -> sink)", summary.bytes, start);
    Ok(())
}

fn report(what: &str, bytes: u64, start: Instant) {
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "{what}: {bytes} bytes in {seconds:.3} s = {:.0} MB/s",
        bytes as f64 / seconds / 1e6
    );
}

/// Writes `len` bytes of xorshift64 output to `path`.
fn write_pseudo_random(path: &std::path::Path, len: u64) -> io::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut block = [0u8; 8];
    for _ in 0..len / 8 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        block.copy_from_slice(&state.to_le_bytes());
        out.write_all(&block)?;
    }
    // `len % 8` is below 8, so the cast cannot truncate.
    out.write_all(&block[..(len % 8) as usize])?;
    out.flush()
}
