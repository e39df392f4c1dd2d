//! The bundle file: a ustar archive of `manifest.json`, the components and
//! `signatures.json`, flat, regular files only.
//!
//! Reading is strict because the file comes from outside: every entry must
//! be one the manifest accounts for, nothing may appear twice, sizes are
//! capped before anything is read into memory, and the archive must end
//! with tar's two zero blocks, so a file cut short is reported as truncated
//! instead of read as a smaller bundle.

use std::collections::BTreeMap;
use std::io::{Cursor, Read};

use sha2::{Digest, Sha256};

use super::error::BundleError;
use super::manifest::{Manifest, RoleEntry, is_reserved, valid_file_name};
use super::signatures::{SignatureEntry, SignatureFile};

/// Largest bundle file accepted, before it is opened.
pub const MAX_BUNDLE_BYTES: u64 = 128 << 20;
/// Largest component inside a bundle (the same cap as `policy set`).
const MAX_COMPONENT_BYTES: u64 = 32 << 20;
/// Largest `manifest.json` or `signatures.json`.
const MAX_METADATA_BYTES: u64 = 1 << 20;

const MANIFEST: &str = "manifest.json";
const SIGNATURES: &str = "signatures.json";
const BLOCK: usize = 512;

/// A bundle whose structure has been checked: the manifest parsed and
/// canonical, every component present and accounted for. Signatures and
/// digests are not yet checked.
#[derive(Clone, Debug)]
pub struct Bundle {
    pub manifest: Manifest,
    pub manifest_bytes: Vec<u8>,
    pub signatures: Vec<SignatureEntry>,
    components: BTreeMap<String, Vec<u8>>,
}

impl Bundle {
    /// Assembles an unsigned bundle (what `build` does after reading files).
    pub fn new(manifest: Manifest, components: BTreeMap<String, Vec<u8>>) -> Bundle {
        Bundle {
            manifest_bytes: manifest.canonical_bytes(),
            manifest,
            signatures: Vec::new(),
            components,
        }
    }

    /// Reads and checks the structure of a bundle file's bytes.
    pub fn read(bytes: &[u8]) -> Result<Bundle, BundleError> {
        let corrupt = |detail: String| BundleError::Corrupt { detail };
        if bytes.len() < 2 * BLOCK {
            return Err(corrupt(format!(
                "{} bytes is too short for a bundle file",
                bytes.len()
            )));
        }
        // A tar file is whole 512-byte blocks; anything else was cut short
        // (or is not a tar file, which the parse below would also say).
        if !bytes.len().is_multiple_of(BLOCK) {
            return Err(BundleError::Truncated {
                detail: format!(
                    "{} bytes is not a whole number of 512-byte tar blocks",
                    bytes.len()
                ),
            });
        }
        let mut archive = tar::Archive::new(Cursor::new(bytes));
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut end = 0usize;
        let entries = archive
            .entries()
            .map_err(|e| corrupt(format!("not a tar archive ({e})")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| read_error(&e))?;
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            // The format is plain ustar: a PAX or GNU extension header could
            // give an entry another name (or size) than its own header says,
            // so that what a reader of the headers sees is not what is read.
            let extended = entry
                .pax_extensions()
                .map_err(|e| read_error(&e))?
                .is_some()
                || entry.header().as_ustar().is_none()
                || entry.path_bytes() != entry.header().path_bytes();
            if extended {
                return Err(corrupt(format!(
                    "'{name}' is not a plain ustar entry (a PAX or GNU extension, or another \
                     tar format); a bundle is ustar regular files only"
                )));
            }
            if entry.header().entry_type() != tar::EntryType::Regular {
                return Err(corrupt(format!(
                    "'{name}' is not a regular file; a bundle holds only flat files"
                )));
            }
            if !valid_file_name(&name) {
                return Err(BundleError::UnknownFile { name });
            }
            let size = entry.size();
            let cap = if is_reserved(&name) {
                MAX_METADATA_BYTES
            } else {
                MAX_COMPONENT_BYTES
            };
            if size > cap {
                return Err(corrupt(format!(
                    "'{name}' is {size} bytes, over the {cap} byte cap"
                )));
            }
            let mut data = Vec::with_capacity(size as usize);
            entry
                .by_ref()
                .take(size)
                .read_to_end(&mut data)
                .map_err(|e| read_error(&e))?;
            if data.len() as u64 != size {
                return Err(BundleError::Truncated {
                    detail: format!("'{name}' ends after {} of {size} bytes", data.len()),
                });
            }
            end = entry.raw_file_position() as usize + (size as usize).div_ceil(BLOCK) * BLOCK;
            if files.insert(name.clone(), data).is_some() {
                return Err(BundleError::DuplicateFile { name });
            }
        }
        check_end(&bytes[end.min(bytes.len())..])?;
        Self::assemble(files)
    }

    fn assemble(mut files: BTreeMap<String, Vec<u8>>) -> Result<Bundle, BundleError> {
        let manifest_bytes = files.remove(MANIFEST).ok_or_else(|| BundleError::Corrupt {
            detail: format!("it holds no {MANIFEST}"),
        })?;
        let signatures = match files.remove(SIGNATURES) {
            Some(bytes) => SignatureFile::parse(&bytes)?,
            None => Vec::new(),
        };
        Self::from_parts(manifest_bytes, signatures, files)
    }

    /// Reassembles a bundle from its parts (a stored revision): the same
    /// checks as reading a file, minus the tar framing.
    pub fn from_parts(
        manifest_bytes: Vec<u8>,
        signatures: Vec<SignatureEntry>,
        mut files: BTreeMap<String, Vec<u8>>,
    ) -> Result<Bundle, BundleError> {
        let manifest = Manifest::parse(&manifest_bytes)?;
        let mut components = BTreeMap::new();
        for entry in &manifest.roles {
            let data = files
                .remove(&entry.file)
                .ok_or_else(|| BundleError::MissingFile {
                    role: entry.role.clone(),
                    name: entry.file.clone(),
                })?;
            components.insert(entry.file.clone(), data);
        }
        if let Some(name) = files.into_keys().next() {
            return Err(BundleError::UnknownFile { name });
        }
        Ok(Bundle {
            manifest,
            manifest_bytes,
            signatures,
            components,
        })
    }

    /// The bundle file's bytes: manifest, components in manifest order,
    /// signatures; fixed modes and times, so the same bundle always gives
    /// the same file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut append = |name: &str, data: &[u8]| {
            let mut header = tar::Header::new_ustar();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_uid(0);
            header.set_gid(0);
            builder
                .append_data(&mut header, name, data)
                .expect("writing to a Vec cannot fail");
        };
        append(MANIFEST, &self.manifest_bytes);
        for entry in &self.manifest.roles {
            append(&entry.file, &self.components[&entry.file]);
        }
        append(SIGNATURES, &SignatureFile::to_bytes(&self.signatures));
        builder.into_inner().expect("writing to a Vec cannot fail")
    }

    /// Adds `signature`, replacing an earlier one by the same key.
    pub fn add_signature(&mut self, signature: SignatureEntry) {
        self.signatures.retain(|s| s.key_id != signature.key_id);
        self.signatures.push(signature);
    }

    /// The component for a manifest entry.
    pub fn component(&self, entry: &RoleEntry) -> &[u8] {
        &self.components[&entry.file]
    }

    /// Checks each component against the digest the manifest gives it.
    pub fn check_digests(&self) -> Result<(), BundleError> {
        for entry in &self.manifest.roles {
            let actual = hex::encode(Sha256::digest(self.component(entry)));
            if actual != entry.sha256 {
                return Err(BundleError::Digest {
                    role: entry.role.clone(),
                    file: entry.file.clone(),
                    expected: entry.sha256.clone(),
                    actual,
                });
            }
        }
        Ok(())
    }
}

fn read_error(e: &std::io::Error) -> BundleError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        BundleError::Truncated {
            detail: e.to_string(),
        }
    } else {
        BundleError::Corrupt {
            detail: format!("its tar structure is damaged ({e})"),
        }
    }
}

/// After the last entry come at least two zero blocks and nothing else.
fn check_end(rest: &[u8]) -> Result<(), BundleError> {
    if rest.iter().any(|&b| b != 0) {
        return Err(BundleError::Corrupt {
            detail: "there is data after the end of the archive".into(),
        });
    }
    if rest.len() < 2 * BLOCK {
        return Err(BundleError::Truncated {
            detail: "the archive's end marker is missing".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::manifest::tests::sample;
    use super::*;

    /// A one-role bundle whose digest matches its component.
    pub(crate) fn bundle() -> Bundle {
        let wasm = b"\0asm component bytes".to_vec();
        let mut manifest = sample();
        manifest.roles[0].sha256 = hex::encode(Sha256::digest(&wasm));
        Bundle::new(manifest, BTreeMap::from([("approval.wasm".into(), wasm)]))
    }

    #[test]
    fn a_bundle_round_trips_and_is_deterministic() {
        let b = bundle();
        let bytes = b.to_bytes();
        assert_eq!(bytes, bundle().to_bytes());
        let back = Bundle::read(&bytes).unwrap();
        assert_eq!(back.manifest, b.manifest);
        assert_eq!(back.manifest_bytes, b.manifest_bytes);
        assert!(back.signatures.is_empty());
        back.check_digests().unwrap();
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = bundle().to_bytes();
        for cut in (0..bytes.len()).step_by(97) {
            let err = Bundle::read(&bytes[..cut]).expect_err("a cut file must not read");
            assert!(
                matches!(
                    err,
                    BundleError::Truncated { .. } | BundleError::Corrupt { .. }
                ),
                "cut at {cut}: {err}"
            );
        }
        let err = Bundle::read(&bytes[..bytes.len() - 512]).unwrap_err();
        assert!(matches!(err, BundleError::Truncated { .. }), "{err}");
    }

    #[test]
    fn trailing_data_and_garbage_are_corrupt() {
        let mut bytes = bundle().to_bytes();
        bytes.extend_from_slice(&[7u8; 512]);
        assert!(matches!(
            Bundle::read(&bytes),
            Err(BundleError::Corrupt { .. })
        ));
        let garbage = vec![0x5au8; 4096];
        assert!(matches!(
            Bundle::read(&garbage),
            Err(BundleError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_changed_component_fails_its_digest() {
        let mut bytes = bundle().to_bytes();
        let at = bytes
            .windows(4)
            .position(|w| w == b"\0asm")
            .expect("the component is stored uncompressed");
        bytes[at + 5] ^= 0x20;
        let read = Bundle::read(&bytes).unwrap();
        let err = read.check_digests().unwrap_err();
        assert!(matches!(err, BundleError::Digest { ref role, .. } if role == "approval"));
    }

    fn raw(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            builder.append_data(&mut ustar(data), name, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn pax_and_gnu_entries_are_refused() {
        let b = bundle();
        let m = b.manifest_bytes.clone();
        let wasm = b.component(&b.manifest.roles[0]).to_vec();

        // A PAX header renaming the next entry to the component's name.
        let mut builder = tar::Builder::new(Vec::new());
        builder
            .append_data(&mut ustar(&m), "manifest.json", &m[..])
            .unwrap();
        builder
            .append_pax_extensions([("path", &b"approval.wasm"[..])])
            .unwrap();
        builder
            .append_data(&mut ustar(&wasm), "other.wasm", &wasm[..])
            .unwrap();
        let pax = builder.into_inner().unwrap();
        let err = Bundle::read(&pax).unwrap_err();
        assert!(err.to_string().contains("not a plain ustar entry"), "{err}");

        // A GNU-format header.
        let mut builder = tar::Builder::new(Vec::new());
        let mut gnu = tar::Header::new_gnu();
        gnu.set_size(m.len() as u64);
        gnu.set_mode(0o644);
        builder
            .append_data(&mut gnu, "manifest.json", &m[..])
            .unwrap();
        let gnu = builder.into_inner().unwrap();
        let err = Bundle::read(&gnu).unwrap_err();
        assert!(err.to_string().contains("not a plain ustar entry"), "{err}");
    }

    fn ustar(data: &[u8]) -> tar::Header {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header
    }

    #[test]
    fn unknown_missing_and_duplicate_files_are_refused() {
        let b = bundle();
        let wasm = b.component(&b.manifest.roles[0]).to_vec();
        let m = b.manifest_bytes.clone();
        let extra = raw(&[
            ("manifest.json", &m),
            ("approval.wasm", &wasm),
            ("notes.txt", b"hi"),
        ]);
        assert!(
            matches!(Bundle::read(&extra), Err(BundleError::UnknownFile { ref name }) if name == "notes.txt")
        );
        let missing = raw(&[("manifest.json", &m)]);
        assert!(matches!(
            Bundle::read(&missing),
            Err(BundleError::MissingFile { .. })
        ));
        let twice = raw(&[
            ("manifest.json", &m),
            ("approval.wasm", &wasm),
            ("approval.wasm", &wasm),
        ]);
        assert!(matches!(
            Bundle::read(&twice),
            Err(BundleError::DuplicateFile { .. })
        ));
        let nested = raw(&[("manifest.json", &m), ("dir/approval.wasm", &wasm)]);
        assert!(matches!(
            Bundle::read(&nested),
            Err(BundleError::UnknownFile { .. })
        ));
        let none = raw(&[("approval.wasm", &wasm)]);
        assert!(
            Bundle::read(&none)
                .unwrap_err()
                .to_string()
                .contains("no manifest.json")
        );
    }
}
