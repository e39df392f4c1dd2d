//! Why a bundle could not be pushed to or pulled from a registry, with the
//! registry's own error sorted into what a user can act on.

use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};

const REFERENCE_FORMS: &str =
    "write oci://HOST[:PORT]/REPOSITORY:TAG or oci://HOST[:PORT]/REPOSITORY@sha256:DIGEST";

/// Every variant names the reference or registry; none leaves a bundle
/// half fetched: pulled bytes are returned whole and checked, or not at all.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("'{reference}' is not an OCI reference: {reason}; {REFERENCE_FORMS}")]
    Reference { reference: String, reason: String },
    #[error(
        "the registry {registry} asks for credentials; this tool reaches registries anonymously \
         only, so push to and install from a repository that allows anonymous access"
    )]
    Unauthorized { registry: String },
    #[error("{reference} is not in the registry (no such repository, tag or digest)")]
    NotFound { reference: String },
    #[error("{reference} is not a policy bundle artifact: {reason}")]
    NotABundle { reference: String, reason: String },
    #[error(
        "the {what} of {reference} does not match its digest: expected {expected}, the bytes \
         the registry sent are {actual}; it was not used"
    )]
    Digest {
        what: &'static str,
        reference: String,
        expected: String,
        actual: String,
    },
    #[error(
        "the registry sent {actual} bytes for the bundle layer of {reference}, whose manifest \
         says {expected}; it was not used"
    )]
    LayerSize {
        reference: String,
        expected: u64,
        actual: String,
    },
    #[error("cannot reach the registry {registry}: {detail}{}", https_hint(*.https))]
    Unreachable {
        registry: String,
        detail: String,
        https: bool,
    },
    #[error("the registry failed on {reference}: {detail}")]
    Registry { reference: String, detail: String },
}

fn https_hint(https: bool) -> &'static str {
    if https {
        " (registries are reached over HTTPS unless they are on this machine's loopback)"
    } else {
        ""
    }
}

/// Where an oci-client error happened, which is what it means to a user.
pub(super) struct During {
    pub reference: String,
    pub registry: String,
    pub https: bool,
    /// What a digest mismatch would be in: "manifest" or "bundle layer".
    pub what: &'static str,
}

impl During {
    /// Sorts an oci-client error into what a user can act on.
    pub(super) fn classify(&self, error: OciDistributionError) -> OciError {
        use OciDistributionError as E;
        match error {
            E::UnauthorizedError { .. } | E::AuthenticationFailure(_) => self.unauthorized(),
            E::ServerError {
                code: 401 | 403, ..
            } => self.unauthorized(),
            E::ServerError { code: 404, .. } => self.not_found(),
            E::RegistryError { envelope, .. } => {
                let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
                if codes
                    .iter()
                    .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
                {
                    self.unauthorized()
                } else if codes.iter().any(|c| {
                    matches!(
                        c,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::BlobUnknown
                            | OciErrorCode::NotFound
                    )
                }) {
                    self.not_found()
                } else {
                    self.registry(envelope.to_string())
                }
            }
            E::DigestError(e) => self.digest(e),
            E::RequestError(e) => self.request(&e),
            E::IoError(e) => self.io(e),
            other => self.registry(chain(&other)),
        }
    }

    /// Sorts an error from a blob's byte stream: the transport's, or the
    /// client's digest check at the end of the stream.
    pub(super) fn io(&self, error: std::io::Error) -> OciError {
        let Some(inner) = error.get_ref() else {
            return self.registry(error.to_string());
        };
        if let Some(e) = inner.downcast_ref::<DigestError>() {
            let (expected, actual) = match e {
                DigestError::VerificationError { expected, actual } => {
                    (expected.clone(), actual.clone())
                }
                other => (other.to_string(), String::new()),
            };
            return OciError::Digest {
                what: self.what,
                reference: self.reference.clone(),
                expected,
                actual,
            };
        }
        if let Some(e) = inner.downcast_ref::<reqwest::Error>() {
            return self.request(e);
        }
        self.registry(chain(&error))
    }

    fn digest(&self, error: DigestError) -> OciError {
        self.io(std::io::Error::other(error))
    }

    fn request(&self, error: &reqwest::Error) -> OciError {
        match error.status().map(|s| s.as_u16()) {
            Some(401 | 403) => self.unauthorized(),
            Some(404) => self.not_found(),
            _ if error.is_connect() || error.is_timeout() => OciError::Unreachable {
                registry: self.registry.clone(),
                detail: chain(error),
                https: self.https,
            },
            _ => self.registry(chain(error)),
        }
    }

    fn unauthorized(&self) -> OciError {
        OciError::Unauthorized {
            registry: self.registry.clone(),
        }
    }

    fn not_found(&self) -> OciError {
        OciError::NotFound {
            reference: self.reference.clone(),
        }
    }

    fn registry(&self, detail: String) -> OciError {
        OciError::Registry {
            reference: self.reference.clone(),
            detail,
        }
    }
}

/// An error and its sources on one line: reqwest's own text leaves out why
/// a connection failed.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}
