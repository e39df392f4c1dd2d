//! `oci://HOST[:PORT]/REPOSITORY(:TAG|@sha256:DIGEST)`: where a bundle lives
//! in a registry, parsed strictly and never completed with Docker's
//! defaults (no implied `docker.io`, `library/` or `latest`), so the
//! reference a node remembers and follows is exactly the one its owner
//! wrote.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

use super::OciError;

pub const SCHEME: &str = "oci://";

/// A parsed `oci://` reference. It names a tag, a digest, or both (then the
/// digest is what is fetched and the tag only says where it came from).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OciReference {
    host: String,
    port: Option<u16>,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl OciReference {
    /// `HOST[:PORT]` as the registry's address.
    pub fn registry(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            Some(port) => format!("{host}:{port}"),
            None => host,
        }
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The manifest digest (`sha256:…`) when the reference pins one.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// The same repository and tag, pinned to the manifest `digest`.
    pub fn pinned(&self, digest: &str) -> OciReference {
        OciReference {
            digest: Some(digest.to_string()),
            ..self.clone()
        }
    }

    /// Whether the registry is spoken to over plain HTTP: only on this
    /// machine's loopback, where there is no network to tamper with the
    /// traffic. Every other registry gets HTTPS. (A bundle's signatures, not
    /// the transport, make it trustworthy; HTTPS keeps what a node follows
    /// private and stops a network from serving it stale manifests.)
    pub fn plain_http(&self) -> bool {
        if self.host.eq_ignore_ascii_case("localhost") {
            return true;
        }
        self.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    pub(super) fn to_client(&self) -> oci_client::Reference {
        let (registry, repository) = (self.registry(), self.repository.clone());
        match (&self.tag, &self.digest) {
            (Some(tag), Some(digest)) => oci_client::Reference::with_tag_and_digest(
                registry,
                repository,
                tag.clone(),
                digest.clone(),
            ),
            (None, Some(digest)) => {
                oci_client::Reference::with_digest(registry, repository, digest.clone())
            }
            (Some(tag), None) => oci_client::Reference::with_tag(registry, repository, tag.clone()),
            (None, None) => unreachable!("parsing requires a tag or a digest"),
        }
    }
}

impl fmt::Display for OciReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}/{}", self.registry(), self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for OciReference {
    type Err = OciError;

    fn from_str(text: &str) -> Result<OciReference, OciError> {
        let bad = |reason: &str| OciError::Reference {
            reference: text.to_string(),
            reason: reason.to_string(),
        };
        let rest = text
            .strip_prefix(SCHEME)
            .ok_or_else(|| bad("it does not start with oci://"))?;
        let (address, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("there is no repository after the registry"))?;
        let (host, port) = parse_address(address).map_err(bad)?;
        let (path, digest) = match path.split_once('@') {
            Some((path, digest)) => (path, Some(parse_digest(digest).map_err(bad)?)),
            None => (path, None),
        };
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repository, tag)) => (repository, Some(parse_tag(tag).map_err(bad)?)),
            None => (path, None),
        };
        if !valid_repository(repository) {
            return Err(bad(
                "the repository must be lowercase letters and digits in /-separated parts, \
                 joined inside a part by '.', '_', '__' or dashes",
            ));
        }
        if tag.is_none() && digest.is_none() {
            return Err(bad("it names no tag (:TAG) or digest (@sha256:…)"));
        }
        Ok(OciReference {
            host,
            port,
            repository: repository.to_string(),
            tag,
            digest,
        })
    }
}

/// `HOST[:PORT]`, where HOST is a DNS name, an IPv4 address or a bracketed
/// IPv6 address.
fn parse_address(address: &str) -> Result<(String, Option<u16>), &'static str> {
    let (host, port) = if let Some(inner) = address.strip_prefix('[') {
        let (ip, after) = inner
            .split_once(']')
            .ok_or("an IPv6 address needs its closing ']'")?;
        ip.parse::<Ipv6Addr>()
            .map_err(|_| "the bracketed host is not an IPv6 address")?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or("junk after the IPv6 address")?,
            ),
        };
        (ip, port)
    } else {
        match address.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (address, None),
        }
    };
    if !host.contains(':') && !valid_host_name(host) {
        return Err("the registry host is not a host name or an IP address");
    }
    let port = port
        .map(|p| {
            p.parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or("the registry port is not a number from 1 to 65535")
        })
        .transpose()?;
    Ok((host.to_ascii_lowercase(), port))
}

fn valid_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// The distribution spec's repository grammar: components of `[a-z0-9]+`
/// joined by `.`, `_`, `__` or runs of `-`, separated by `/`.
fn valid_repository(repository: &str) -> bool {
    !repository.is_empty() && repository.len() <= 255 && repository.split('/').all(valid_component)
}

fn valid_component(component: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = component.as_bytes();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    // Between alphanumeric runs: one '.', one or two '_', or any dashes.
    let mut separator = String::new();
    for &b in bytes {
        if alnum(b) {
            let allowed = separator.is_empty()
                || separator == "."
                || separator == "_"
                || separator == "__"
                || separator.bytes().all(|s| s == b'-');
            if !allowed {
                return false;
            }
            separator.clear();
        } else if matches!(b, b'.' | b'_' | b'-') {
            separator.push(b as char);
        } else {
            return false;
        }
    }
    true
}

/// `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
fn parse_tag(tag: &str) -> Result<String, &'static str> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && !tag.starts_with(['.', '-'])
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(tag.to_string())
    } else {
        Err(
            "the tag must be up to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
        )
    }
}

/// `sha256:` and 64 lowercase hex digits: the one algorithm this tool
/// checks content with.
fn parse_digest(digest: &str) -> Result<String, &'static str> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or("the digest must be sha256:…")?;
    if hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(digest.to_string())
    } else {
        Err("a sha256 digest is 64 lowercase hex digits")
    }
}

/// Whether `digest` is a `sha256:` digest as references and descriptors
/// must carry.
pub(super) fn is_sha256_digest(digest: &str) -> bool {
    parse_digest(digest).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:4c9d0b6bd1a4a1b1bbdd6b0cd38e24a3b1bb7b84a2ab3cbfd1e4ab93e3a5f2c1";

    fn parse(text: &str) -> OciReference {
        text.parse()
            .unwrap_or_else(|e| panic!("{text} should parse: {e}"))
    }

    fn reason(text: &str) -> String {
        match text.parse::<OciReference>() {
            Ok(r) => panic!("{text} parsed as {r:?}"),
            Err(OciError::Reference { reason, .. }) => reason,
            Err(e) => panic!("{text}: unexpected {e}"),
        }
    }

    #[test]
    fn tags_digests_and_ports_round_trip() {
        for text in [
            "oci://127.0.0.1:5000/acme/policy:stable",
            "oci://registry.example.com/acme:v1.2-rc_3",
            &format!("oci://localhost:5000/a.b/c__d/e--f@{DIGEST}"),
            &format!("oci://[::1]:5000/acme:stable@{DIGEST}"),
        ] {
            assert_eq!(parse(text).to_string(), text);
        }
        let r = parse("oci://Registry.Example.com:443/acme:1");
        assert_eq!(r.registry(), "registry.example.com:443");
        assert_eq!(r.tag(), Some("1"));
        assert_eq!(r.digest(), None);
        assert_eq!(r.pinned(DIGEST).digest(), Some(DIGEST));
    }

    #[test]
    fn plain_http_only_on_loopback() {
        for text in [
            "oci://127.0.0.1:5000/a:1",
            "oci://127.8.9.10/a:1",
            "oci://localhost/a:1",
            "oci://[::1]:5000/a:1",
        ] {
            assert!(parse(text).plain_http(), "{text}");
        }
        for text in [
            "oci://10.0.0.1:5000/a:1",
            "oci://registry.example.com/a:1",
            "oci://localhost.example.com/a:1",
            "oci://[::2]/a:1",
        ] {
            assert!(!parse(text).plain_http(), "{text}");
        }
    }

    #[test]
    fn malformed_references_say_what_is_wrong() {
        assert!(reason("https://host/a:1").contains("oci://"));
        assert!(reason("oci://host").contains("no repository"));
        assert!(reason("oci://host/acme").contains("no tag"));
        assert!(reason("oci://host/Acme:1").contains("lowercase"));
        assert!(reason("oci://host/acme/:1").contains("lowercase"));
        assert!(reason("oci://host/a..b:1").contains("lowercase"));
        assert!(reason("oci://host/a___b:1").contains("lowercase"));
        assert!(reason("oci://host/acme:").contains("tag"));
        assert!(reason("oci://host/acme:-x").contains("tag"));
        assert!(reason("oci://host/acme@sha256:abc").contains("64"));
        assert!(reason("oci://host/acme@md5:abc").contains("sha256"));
        assert!(reason("oci://host:0/acme:1").contains("port"));
        assert!(reason("oci://host:99999/acme:1").contains("port"));
        assert!(reason("oci://ho_st/acme:1").contains("host"));
        assert!(reason("oci://[::1/acme:1").contains("']'"));
        assert!(reason("oci://[zz]/acme:1").contains("IPv6"));
    }
}
