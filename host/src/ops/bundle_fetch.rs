//! Where a bundle comes from, and its bytes from there: a file, an http(s)
//! URL (conditionally on the ETag it last served) or an OCI reference (a
//! tag re-resolved to the manifest it names now). What comes back is only
//! bytes: `policy_bundle` puts them through every check before anything
//! is activated.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::bundle::MAX_BUNDLE_BYTES;
use crate::oci::{self, OciError, OciReference};

use super::OpsError;

/// A bundle's address as `policy install` takes it.
#[derive(Clone, Debug)]
pub enum BundleLocation {
    File(PathBuf),
    Url(String),
    Oci(OciReference),
}

impl BundleLocation {
    /// Whether `policy update` follows it: URLs, and OCI tags that no
    /// digest pins.
    pub(super) fn followed(&self) -> bool {
        match self {
            BundleLocation::File(_) => false,
            BundleLocation::Url(_) => true,
            BundleLocation::Oci(reference) => reference.digest().is_none(),
        }
    }
}

impl FromStr for BundleLocation {
    type Err = OciError;

    /// `oci://…` and `http(s)://…` by their scheme, anything else a path.
    fn from_str(text: &str) -> Result<BundleLocation, OciError> {
        if text.starts_with(oci::SCHEME) {
            return text.parse().map(BundleLocation::Oci);
        }
        if text.starts_with("http://") || text.starts_with("https://") {
            return Ok(BundleLocation::Url(text.to_string()));
        }
        Ok(BundleLocation::File(PathBuf::from(text)))
    }
}

impl fmt::Display for BundleLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BundleLocation::File(path) => write!(f, "{}", path.display()),
            BundleLocation::Url(url) => f.write_str(url),
            BundleLocation::Oci(reference) => write!(f, "{reference}"),
        }
    }
}

/// How far a bundle download has got.
#[derive(Clone, Copy, Debug)]
pub struct Download<'a> {
    /// The URL or reference being downloaded.
    pub source: &'a str,
    pub done: u64,
    /// In all, when the server says.
    pub total: Option<u64>,
}

/// Where download progress goes (the command line draws a bar with it).
pub type Progress<'a> = &'a mut dyn FnMut(Download<'_>);

pub(super) enum Fetched {
    /// The server answered 304, or the tag still names the same manifest.
    NotModified,
    Body {
        bytes: Vec<u8>,
        /// What the source will be asked about next time: the ETag, or
        /// for an OCI tag the manifest digest.
        validator: Option<String>,
        /// Where the bytes came from, as the bundle revision records it:
        /// for OCI the reference pinned to the manifest digest it named.
        source: String,
    },
}

/// The bytes at `location`; `validator` is what it served last time (then
/// an unchanged source gives [`Fetched::NotModified`]).
pub(super) fn fetch(
    location: &BundleLocation,
    validator: Option<&str>,
    progress: Progress<'_>,
) -> Result<Fetched, OpsError> {
    match location {
        BundleLocation::File(path) => Ok(Fetched::Body {
            bytes: read_bundle_file(path)?,
            validator: None,
            source: location.to_string(),
        }),
        BundleLocation::Url(url) => fetch_url(url, validator, progress),
        BundleLocation::Oci(reference) => fetch_oci(reference, validator, progress),
    }
}

/// Reads a bundle file, refusing one over the size cap before reading it.
pub(super) fn read_bundle_file(path: &Path) -> Result<Vec<u8>, OpsError> {
    let read_err = |source| OpsError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_BUNDLE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_BUNDLE_BYTES {
        return Err(OpsError::InvalidInput {
            what: format!(
                "{} is larger than {} MiB; that is not a policy bundle",
                path.display(),
                MAX_BUNDLE_BYTES >> 20
            ),
        });
    }
    Ok(bytes)
}

/// A tag is resolved first: when it still names the manifest `last`
/// served, nothing is pulled. Otherwise the manifest it names now is pulled
/// by digest, so what is installed is exactly what was resolved.
fn fetch_oci(
    reference: &OciReference,
    last: Option<&str>,
    progress: Progress<'_>,
) -> Result<Fetched, OpsError> {
    let runtime = super::context::runtime()?;
    let label = reference.to_string();
    runtime.block_on(async {
        let target = match last {
            Some(last) => {
                let now = oci::resolve(reference).await?;
                if now == last {
                    return Ok(Fetched::NotModified);
                }
                reference.pinned(&now)
            }
            None => reference.clone(),
        };
        let pulled = oci::pull(&target, MAX_BUNDLE_BYTES, &mut |done, total| {
            progress(Download {
                source: &label,
                done,
                total: Some(total),
            })
        })
        .await?;
        Ok(Fetched::Body {
            bytes: pulled.bytes,
            source: reference.pinned(&pulled.manifest_digest).to_string(),
            validator: Some(pulled.manifest_digest),
        })
    })
}

/// GETs `url`, conditionally on `etag`, with the body capped at the bundle
/// size limit. Redirects are followed a few times; the scheme is the
/// user's choice (HTTPS is expected in production; the bundle's signatures,
/// not the transport, are what make it trustworthy).
fn fetch_url(url: &str, etag: Option<&str>, progress: Progress<'_>) -> Result<Fetched, OpsError> {
    let fail = |detail: String| OpsError::Fetch {
        url: url.to_string(),
        detail,
    };
    let too_big = || {
        fail(format!(
            "the bundle is over the {} MiB cap",
            MAX_BUNDLE_BYTES >> 20
        ))
    };
    let runtime = super::context::runtime()?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .user_agent(concat!("claude-max-market/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let mut request = client.get(url);
        if let Some(etag) = etag {
            request = request.header(reqwest::header::IF_NONE_MATCH, etag);
        }
        let mut response = request.send().await.map_err(|e| fail(format!("{e:#}")))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_MODIFIED && etag.is_some() {
            return Ok(Fetched::NotModified);
        }
        if status != reqwest::StatusCode::OK {
            return Err(fail(format!("the server answered {status}")));
        }
        let total = response.content_length();
        if total.is_some_and(|n| n > MAX_BUNDLE_BYTES) {
            return Err(too_big());
        }
        let validator = response
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| fail(format!("{e:#}")))? {
            if (bytes.len() + chunk.len()) as u64 > MAX_BUNDLE_BYTES {
                return Err(too_big());
            }
            bytes.extend_from_slice(&chunk);
            progress(Download {
                source: url,
                done: bytes.len() as u64,
                total,
            });
        }
        Ok(Fetched::Body {
            bytes,
            validator,
            source: url.to_string(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_told_apart_by_scheme_and_only_moving_ones_are_followed() {
        let parse = |text: &str| text.parse::<BundleLocation>().unwrap();
        assert!(matches!(parse("./acme.cmmpol"), BundleLocation::File(_)));
        assert!(matches!(parse("oci.cmmpol"), BundleLocation::File(_)));
        assert!(matches!(
            parse("https://example.com/a.cmmpol"),
            BundleLocation::Url(_)
        ));
        let tag = parse("oci://127.0.0.1:5000/acme:stable");
        assert!(matches!(tag, BundleLocation::Oci(_)));
        assert!(tag.followed());
        let digest = format!("oci://127.0.0.1:5000/acme@sha256:{}", "a".repeat(64));
        assert!(!parse(&digest).followed());
        assert!(!parse("acme.cmmpol").followed());
        assert!(
            "oci://127.0.0.1:5000/acme"
                .parse::<BundleLocation>()
                .is_err()
        );
    }
}
