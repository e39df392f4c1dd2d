//! The owner's Anthropic API key: where it comes from and how it is kept out
//! of sight. Job containers never see the key; only the gateway holds it, and
//! only to set the upstream `x-api-key` header. [`ApiKey`] therefore prints as
//! `ApiKey(<redacted>)`, cannot be serialized, and hands out its text only
//! inside this crate.
//!
//! A key file is read only when it is private to the user running the host
//! (regular file, owned by them, no group/other permission bits), the same
//! rule `ssh` applies to private keys: a key other users can read is already
//! leaked, and one they can write lets them swap in their own account.

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use reqwest::header::HeaderValue;

/// Every Anthropic credential starts so: API keys (`sk-ant-api03-…`), OAuth
/// tokens from a subscription (`sk-ant-oat01-…`), admin keys. What follows is
/// a long run of URL-safe characters, which is what tells a credential from
/// a mention of the prefix.
pub const CREDENTIAL_PREFIX: &[u8] = b"sk-ant-";
const CREDENTIAL_MIN_TAIL: usize = 20;

/// Counts credential-shaped strings in `bytes`: the prefix followed by a
/// long run of URL-safe characters.
pub fn credentials_in(bytes: &[u8]) -> usize {
    let tail_char = |b: &u8| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_';
    let mut found = 0;
    let mut at = 0;
    while let Some(offset) = bytes[at..]
        .windows(CREDENTIAL_PREFIX.len())
        .position(|w| w == CREDENTIAL_PREFIX)
    {
        let tail_start = at + offset + CREDENTIAL_PREFIX.len();
        let tail = bytes[tail_start..]
            .iter()
            .take_while(|b| tail_char(b))
            .count();
        if tail >= CREDENTIAL_MIN_TAIL {
            found += 1;
        }
        at = tail_start + tail;
    }
    found
}

/// The environment variable the caller reads and passes to [`load_api_key`].
pub const API_KEY_ENV: &str = "ANTHROPIC_API_KEY";

/// Real keys are ~100 bytes; anything past this is not a key file.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

/// An Anthropic API key. Debug and Display never show it. Held as the
/// header value it will be sent as, marked sensitive so that `http`'s own
/// Debug output of a header map hides it too.
#[derive(Clone)]
pub struct ApiKey(HeaderValue);

impl ApiKey {
    /// Wraps a key after trimming surrounding whitespace. Refuses an empty
    /// key, and one that could not be sent as an HTTP header value (the
    /// upstream request would otherwise fail on every call).
    pub fn new(value: &str) -> Result<ApiKey, CredentialError> {
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return Err(CredentialError::Empty);
        }
        let mut value =
            HeaderValue::from_str(trimmed).map_err(|_| CredentialError::NotHeaderSafe)?;
        value.set_sensitive(true);
        Ok(ApiKey(value))
    }

    /// The key as the upstream `x-api-key` header value; its only use.
    pub(crate) fn header_value(&self) -> HeaderValue {
        self.0.clone()
    }

    /// Whether this is a Claude subscription's OAuth token (`sk-ant-oat…`)
    /// rather than an API key: such a token is for the owner's own use, so
    /// compliance refuses it for jobs from others. Only the shape is read.
    pub fn is_subscription_token(&self) -> bool {
        self.0.as_bytes().starts_with(b"sk-ant-oat")
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Where the key in use came from, so the host can say so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    Env,
    File(PathBuf),
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Env => write!(f, "the {API_KEY_ENV} environment variable"),
            KeySource::File(path) => write!(f, "the key file {}", path.display()),
        }
    }
}

/// Why no usable key could be loaded. No variant carries the key's text.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error(
        "no Anthropic API key: set {API_KEY_ENV}, or put the key in a file with mode 0600 and run `claude-max-market config --set security.apiKeyFile=PATH`"
    )]
    Missing,
    #[error(
        "the API key file {} does not exist; create it with mode 0600, or point `claude-max-market config --set security.apiKeyFile=PATH` at the right file",
        path.display()
    )]
    FileNotFound { path: PathBuf },
    #[error("cannot read the API key file {}: {source}; check that it exists and that you can read it", path.display())]
    FileUnreadable { path: PathBuf, source: io::Error },
    #[error("the API key file {} is not a regular file; point security.apiKeyFile at the file that holds the key", path.display())]
    NotRegularFile { path: PathBuf },
    #[error(
        "the API key file {} is owned by uid {file_uid}, not by you (uid {current_uid}); run `chown {current_uid} {}` so that only you control it",
        path.display(),
        path.display()
    )]
    WrongOwner {
        path: PathBuf,
        file_uid: u32,
        current_uid: u32,
    },
    #[error(
        "the API key file {} has mode {mode:04o}, which lets other users read or replace the key; run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("the API key file {} is larger than {MAX_KEY_FILE_BYTES} bytes, so it does not hold just a key; put only the key in it", path.display())]
    FileTooLarge { path: PathBuf },
    #[error("the API key file {} is not UTF-8 text; put only the key in it", path.display())]
    NotText { path: PathBuf },
    #[error("the API key file {} is empty; put the key in it", path.display())]
    EmptyFile { path: PathBuf },
    #[error("the API key is empty; set it to the key from the Anthropic console")]
    Empty,
    #[error(
        "the API key contains characters that cannot be sent in an HTTP header (control characters or non-ASCII); copy the key again from the Anthropic console"
    )]
    NotHeaderSafe,
}

/// Loads the owner's key. `env_value` is the caller's read of
/// `ANTHROPIC_API_KEY` and wins when it is set; a blank value counts as unset,
/// so a stray `export ANTHROPIC_API_KEY=` does not mask a configured key file.
pub fn load_api_key(
    env_value: Option<String>,
    key_file: Option<&Path>,
) -> Result<(ApiKey, KeySource), CredentialError> {
    if let Some(value) = env_value.filter(|v| !v.trim().is_empty()) {
        return Ok((ApiKey::new(&value)?, KeySource::Env));
    }
    match key_file {
        Some(path) => Ok((read_key_file(path)?, KeySource::File(path.to_owned()))),
        None => Err(CredentialError::Missing),
    }
}

fn read_key_file(path: &Path) -> Result<ApiKey, CredentialError> {
    let unreadable = |source: io::Error| {
        if source.kind() == io::ErrorKind::NotFound {
            CredentialError::FileNotFound {
                path: path.to_owned(),
            }
        } else {
            CredentialError::FileUnreadable {
                path: path.to_owned(),
                source,
            }
        }
    };
    // Checked before opening so that a FIFO or device is refused instead of
    // blocking or streaming forever.
    if !fs::metadata(path).map_err(unreadable)?.is_file() {
        return Err(CredentialError::NotRegularFile {
            path: path.to_owned(),
        });
    }
    let file = fs::File::open(path).map_err(unreadable)?;
    // Ownership and mode are checked on the opened file, so a swap of the path
    // between the checks and the read cannot slip another file in.
    let meta = file.metadata().map_err(unreadable)?;
    if !meta.is_file() {
        return Err(CredentialError::NotRegularFile {
            path: path.to_owned(),
        });
    }
    let current_uid = effective_uid();
    if meta.uid() != current_uid {
        return Err(CredentialError::WrongOwner {
            path: path.to_owned(),
            file_uid: meta.uid(),
            current_uid,
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(CredentialError::TooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    let mut raw = Vec::new();
    file.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_end(&mut raw)
        .map_err(unreadable)?;
    if raw.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(CredentialError::FileTooLarge {
            path: path.to_owned(),
        });
    }
    let text = String::from_utf8(raw).map_err(|_| CredentialError::NotText {
        path: path.to_owned(),
    })?;
    if text.trim().is_empty() {
        return Err(CredentialError::EmptyFile {
            path: path.to_owned(),
        });
    }
    ApiKey::new(&text)
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid takes no arguments, cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-ant-api03-secret-test-key-0123456789";

    fn key_file(mode: u32, contents: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("api-key");
        fs::write(&path, contents).expect("write key file");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
        (dir, path)
    }

    #[test]
    fn env_wins_over_file() {
        let (_dir, path) = key_file(0o600, "sk-from-file\n");
        let (key, source) =
            load_api_key(Some(format!("  {KEY}\n")), Some(&path)).expect("env key loads");
        assert_eq!(key.header_value(), KEY);
        assert_eq!(source, KeySource::Env);
    }

    #[test]
    fn blank_env_falls_back_to_file() {
        let (_dir, path) = key_file(0o600, &format!("\n{KEY}\n\n"));
        let (key, source) = load_api_key(Some("  ".into()), Some(&path)).expect("file key loads");
        assert_eq!(key.header_value(), KEY);
        assert_eq!(source, KeySource::File(path));
    }

    #[test]
    fn file_with_mode_0600_or_0400_is_read_and_trimmed() {
        for mode in [0o600, 0o400] {
            let (_dir, path) = key_file(mode, &format!(" {KEY} \n"));
            let (key, _) = load_api_key(None, Some(&path)).expect("private file loads");
            assert_eq!(key.header_value(), KEY, "mode {mode:o}");
        }
    }

    #[test]
    fn group_or_world_readable_file_is_refused_with_the_chmod_fix() {
        for mode in [0o644, 0o640, 0o604, 0o660] {
            let (_dir, path) = key_file(mode, KEY);
            let err = load_api_key(None, Some(&path)).expect_err("open file refused");
            assert!(matches!(err, CredentialError::TooOpen { .. }), "{err:?}");
            let message = err.to_string();
            assert!(
                message.contains(&format!("chmod 600 {}", path.display())),
                "{message}"
            );
            assert!(message.contains(&format!("{mode:04o}")), "{message}");
        }
    }

    #[test]
    fn missing_everywhere_says_how_to_provide_a_key() {
        let err = load_api_key(None, None).expect_err("no key");
        assert_eq!(
            err.to_string(),
            "no Anthropic API key: set ANTHROPIC_API_KEY, or put the key in a file with mode 0600 and run `claude-max-market config --set security.apiKeyFile=PATH`"
        );
    }

    #[test]
    fn missing_file_names_the_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("nope");
        let err = load_api_key(None, Some(&path)).expect_err("missing file");
        assert!(matches!(err, CredentialError::FileNotFound { .. }));
        assert!(err.to_string().contains(&path.display().to_string()));
    }

    #[test]
    fn empty_file_and_directory_are_refused() {
        let (_dir, path) = key_file(0o600, " \n\t\n");
        let err = load_api_key(None, Some(&path)).expect_err("empty file");
        assert!(matches!(err, CredentialError::EmptyFile { .. }), "{err:?}");

        let dir = tempfile::tempdir().expect("temp dir");
        let err = load_api_key(None, Some(dir.path())).expect_err("directory");
        assert!(
            matches!(err, CredentialError::NotRegularFile { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn key_with_header_breaking_characters_is_refused() {
        let (_dir, path) = key_file(0o600, "sk-one\nsk-two\n");
        let err = load_api_key(None, Some(&path)).expect_err("two lines");
        assert!(matches!(err, CredentialError::NotHeaderSafe), "{err:?}");
    }

    #[test]
    fn subscription_tokens_are_told_from_api_keys() {
        assert!(
            ApiKey::new("sk-ant-oat01-abc")
                .unwrap()
                .is_subscription_token()
        );
        assert!(
            !ApiKey::new("sk-ant-api03-abc")
                .unwrap()
                .is_subscription_token()
        );
    }

    #[test]
    fn key_never_shows_in_debug_display_or_errors() {
        let key = ApiKey::new(KEY).expect("valid key");
        assert_eq!(format!("{key}"), "ApiKey(<redacted>)");
        assert_eq!(format!("{key:?}"), "ApiKey(<redacted>)");
        assert_eq!(format!("{key:#?}"), "ApiKey(<redacted>)");

        let (_dir, path) = key_file(0o644, KEY);
        let err = load_api_key(None, Some(&path)).expect_err("open file refused");
        assert!(!format!("{err} {err:?}").contains(KEY));
        let err = ApiKey::new(&format!("{KEY}\u{7f}")).expect_err("control char");
        assert!(!format!("{err} {err:?}").contains(KEY));
    }

    #[test]
    fn credential_shapes_are_counted_and_mentions_are_not() {
        assert_eq!(
            credentials_in(b"x = \"sk-ant-api03-AAAAAAAAAAAAAAAAAAAAAAAAAAAA\""),
            1
        );
        assert_eq!(
            credentials_in(
                b"sk-ant-oat01-abcdefghij_KLMNOPQRST-uvw and sk-ant-api03-0123456789abcdefghijk"
            ),
            2
        );
        assert_eq!(credentials_in(b"keys start with sk-ant- and then more"), 0);
        assert_eq!(credentials_in(b"sk-ant-short"), 0);
        assert_eq!(credentials_in(b""), 0);
    }
}
