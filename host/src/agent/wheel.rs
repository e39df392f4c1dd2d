//! Python wheels that carry an agent's program: Claude Code's CLI ships
//! inside the `claude-agent-sdk` wheel on PyPI. A wheel is fetched from
//! PyPI's JSON API (checked against the sha256 PyPI lists for it) into a
//! cache, or taken from a file the owner names for machines without PyPI,
//! and one member is taken out of it.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// PyPI's JSON API.
pub const PYPI: &str = "https://pypi.org/pypi";

/// Why a wheel could not be had.
#[derive(Debug, thiserror::Error)]
pub enum WheelError {
    #[error(
        "cannot fetch {what} from PyPI: {reason}; on a machine without PyPI, download the wheel elsewhere and pass it with --wheel FILE"
    )]
    Fetch { what: String, reason: String },
    #[error("PyPI lists no {platform} wheel for {package} {version}")]
    NoWheel {
        package: String,
        version: String,
        platform: String,
    },
    #[error("the downloaded {file} has sha256 {found}, but PyPI lists {expected}; it was not kept")]
    Digest {
        file: String,
        expected: String,
        found: String,
    },
    #[error("cannot read the wheel {}: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
    #[error("the wheel {} has no {member}; is it the right package?", path.display())]
    NoMember { path: PathBuf, member: String },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

#[derive(Deserialize)]
struct Release {
    info: Info,
    urls: Vec<Download>,
}

#[derive(Deserialize)]
struct Info {
    version: String,
}

#[derive(Deserialize)]
struct Download {
    filename: String,
    url: String,
    size: u64,
    digests: Digests,
}

#[derive(Deserialize)]
struct Digests {
    sha256: String,
}

/// Download progress: bytes so far and in all.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

/// The newest `package` wheel whose file name ends in `platform` (e.g.
/// `manylinux_2_17_x86_64.whl`) on the index at `index` ([`PYPI`]), in
/// `cache` (downloaded unless a checked copy is there already).
pub async fn fetch(
    index: &str,
    package: &str,
    platform: &str,
    cache: &Path,
    progress: Progress<'_>,
) -> Result<PathBuf, WheelError> {
    let fetch_err = |what: &str| {
        let what = what.to_owned();
        move |e: reqwest::Error| WheelError::Fetch {
            what: what.clone(),
            reason: e.to_string(),
        }
    };
    let client = reqwest::Client::new();
    let index = format!("{index}/{package}/json");
    let release: Release = client
        .get(&index)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(fetch_err(&index))?
        .json()
        .await
        .map_err(fetch_err(&index))?;
    let download = release
        .urls
        .into_iter()
        .find(|d| d.filename.ends_with(platform))
        .ok_or_else(|| WheelError::NoWheel {
            package: package.into(),
            version: release.info.version.clone(),
            platform: platform.into(),
        })?;
    let path = cache.join(&download.filename);
    if sha256_of(&path).ok().as_deref() == Some(download.digests.sha256.as_str()) {
        return Ok(path);
    }
    let partial = cache.join(format!("{}.partial", download.filename));
    let mut out = File::create(&partial).map_err(|source| WheelError::Write {
        path: partial.clone(),
        source,
    })?;
    let reply = client
        .get(&download.url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(fetch_err(&download.filename))?;
    let mut body = reply.bytes_stream();
    let (mut hasher, mut got) = (Sha256::new(), 0u64);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(fetch_err(&download.filename))?;
        hasher.update(&chunk);
        out.write_all(&chunk).map_err(|source| WheelError::Write {
            path: partial.clone(),
            source,
        })?;
        got += chunk.len() as u64;
        progress(got, download.size);
    }
    let found = hex::encode(hasher.finalize());
    if found != download.digests.sha256 {
        let _ = std::fs::remove_file(&partial);
        return Err(WheelError::Digest {
            file: download.filename,
            expected: download.digests.sha256,
            found,
        });
    }
    std::fs::rename(&partial, &path).map_err(|source| WheelError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

fn sha256_of(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// A small text `member` of the wheel at `wheel` (a version file).
pub fn read_text(wheel: &Path, member: &str) -> Result<String, WheelError> {
    const MAX: u64 = 4096;
    let read_err = |reason: String| WheelError::Read {
        path: wheel.to_path_buf(),
        reason,
    };
    let file = File::open(wheel).map_err(|e| read_err(e.to_string()))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| read_err(e.to_string()))?;
    let entry = archive.by_name(member).map_err(|_| WheelError::NoMember {
        path: wheel.to_path_buf(),
        member: member.into(),
    })?;
    let mut text = String::new();
    entry
        .take(MAX)
        .read_to_string(&mut text)
        .map_err(|e| read_err(e.to_string()))?;
    Ok(text.trim().to_owned())
}

/// Copies `member` of the wheel at `wheel` to `to`, mode 0755; returns its
/// sha256.
pub fn extract(wheel: &Path, member: &str, to: &Path) -> Result<String, WheelError> {
    let read_err = |reason: String| WheelError::Read {
        path: wheel.to_path_buf(),
        reason,
    };
    let file = File::open(wheel).map_err(|e| read_err(e.to_string()))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| read_err(e.to_string()))?;
    let mut entry = archive.by_name(member).map_err(|_| WheelError::NoMember {
        path: wheel.to_path_buf(),
        member: member.into(),
    })?;
    let write_err = |source| WheelError::Write {
        path: to.to_path_buf(),
        source,
    };
    let mut out = File::create(to).map_err(write_err)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = entry
            .read(&mut buffer)
            .map_err(|e| read_err(e.to_string()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        out.write_all(&buffer[..n]).map_err(write_err)?;
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).map_err(write_err)?;
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-package index on loopback: the JSON release and its files.
    async fn index(files: Vec<(&'static str, Vec<u8>)>, listed_sha: Option<String>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let urls: Vec<serde_json::Value> = files
            .iter()
            .map(|(name, bytes)| {
                serde_json::json!({
                    "filename": name,
                    "url": format!("{base}/files/{name}"),
                    "size": bytes.len(),
                    "digests": {"sha256": listed_sha.clone()
                        .unwrap_or_else(|| hex::encode(Sha256::digest(bytes)))},
                })
            })
            .collect();
        let release = serde_json::json!({"info": {"version": "1.0"}, "urls": urls}).to_string();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut head = vec![0u8; 4096];
                let n = stream.read(&mut head).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&head[..n]).into_owned();
                let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                let body = match path.strip_prefix("/files/") {
                    Some(name) => files
                        .iter()
                        .find(|(f, _)| *f == name)
                        .map(|(_, b)| b.clone()),
                    None => Some(release.clone().into_bytes()),
                }
                .unwrap_or_default();
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
                let _ = stream.write_all(&body).await;
            }
        });
        base
    }

    #[tokio::test]
    async fn the_platforms_wheel_is_fetched_checked_and_kept() {
        let wheel = b"wheel bytes".to_vec();
        let base = index(
            vec![
                ("pkg-1.0-mac.whl", b"other".to_vec()),
                ("pkg-1.0-linux.whl", wheel.clone()),
            ],
            None,
        )
        .await;
        let cache = tempfile::tempdir().unwrap();
        let mut seen = 0;
        let path = fetch(&base, "pkg", "linux.whl", cache.path(), &mut |done, _| {
            seen = done
        })
        .await
        .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), wheel);
        assert_eq!(seen, wheel.len() as u64);
        let again = fetch(&base, "pkg", "linux.whl", cache.path(), &mut |_, _| {
            panic!("cached")
        })
        .await
        .unwrap();
        assert_eq!(again, path);
        let missing = fetch(&base, "pkg", "win.whl", cache.path(), &mut |_, _| {}).await;
        assert!(matches!(missing, Err(WheelError::NoWheel { .. })));
    }

    #[tokio::test]
    async fn a_wheel_that_does_not_match_its_listed_digest_is_not_kept() {
        let base = index(
            vec![("pkg-1.0-linux.whl", b"tampered".to_vec())],
            Some("00".repeat(32)),
        )
        .await;
        let cache = tempfile::tempdir().unwrap();
        let err = fetch(&base, "pkg", "linux.whl", cache.path(), &mut |_, _| {})
            .await
            .unwrap_err();
        assert!(matches!(err, WheelError::Digest { .. }), "{err}");
        assert_eq!(
            std::fs::read_dir(cache.path()).unwrap().count(),
            0,
            "nothing kept"
        );
    }

    #[test]
    fn a_member_is_taken_out_and_a_missing_one_named() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("pkg.whl");
        let mut zip = zip::ZipWriter::new(File::create(&wheel).unwrap());
        zip.start_file(
            "pkg/_bundled/tool",
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        zip.write_all(b"#!tool").unwrap();
        zip.finish().unwrap();
        let out = dir.path().join("tool");
        let sha = extract(&wheel, "pkg/_bundled/tool", &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"#!tool");
        assert_eq!(sha, hex::encode(Sha256::digest(b"#!tool")));
        assert!(matches!(
            extract(&wheel, "pkg/other", &out),
            Err(WheelError::NoMember { .. })
        ));
        assert!(matches!(
            extract(&dir.path().join("none.whl"), "x", &out),
            Err(WheelError::Read { .. })
        ));
    }
}
