//! Images: building an image from a build context (`context`), pulling
//! (optionally pinned by digest), inspecting, tagging, pushing and removing.
//!
//! Builds use the classic builder (API builder version 1) so they work on
//! any engine without a BuildKit session, and never pull base images
//! (`pull=false`): the host may have no registry at all.

use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateImageOptionsBuilder, PushImageOptionsBuilder,
    RemoveImageOptionsBuilder, TagImageOptionsBuilder,
};
use futures_util::StreamExt;

use super::Docker;
use super::context::{BuildContext, chunks};
use super::error::{RunnerError, daemon_message, status_of};

/// Build output, one line at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildEvent {
    /// A Dockerfile step starting, e.g. `Step 1/4 : FROM scratch`.
    Step(String),
    /// Any other line the builder printed.
    Output(String),
}

/// Pull progress of one layer, for a progress bar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullProgress {
    /// Layer id, or the tag/digest for whole-image status lines.
    pub layer: String,
    /// E.g. `Downloading`, `Pull complete`, `Digest: sha256:...`.
    pub status: String,
    pub current: Option<u64>,
    pub total: Option<u64>,
}

/// The image a pull produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledImage {
    /// Image id, `sha256:...`.
    pub id: String,
    /// `repo@sha256:...` entries the engine recorded for it.
    pub repo_digests: Vec<String>,
}

/// What the engine knows about a local image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// Image id, `sha256:...`.
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    /// Creation time as the engine reports it (RFC 3339).
    pub created: String,
}

/// An image reference split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImageRef<'a> {
    /// Repository, including any registry host and port.
    pub name: &'a str,
    pub tag: Option<&'a str>,
    /// `sha256:<64 hex>` when pinned.
    pub digest: Option<&'a str>,
}

impl ImageRef<'_> {
    /// `name@digest` when pinned (the tag is then only informational, as the
    /// digest alone decides the content), else `name:tag` with `latest` as the
    /// default: an untagged `fromImage` would make the engine pull every tag.
    fn pull_reference(&self) -> String {
        match (self.tag, self.digest) {
            (_, Some(digest)) => format!("{}@{digest}", self.name),
            (Some(tag), None) => format!("{}:{tag}", self.name),
            (None, None) => format!("{}:latest", self.name),
        }
    }
}

pub(crate) fn parse_reference(reference: &str) -> Result<ImageRef<'_>, RunnerError> {
    let bad = |reason: &str| {
        Err(RunnerError::Reference {
            reference: reference.to_string(),
            reason: reason.to_string(),
        })
    };
    if reference.is_empty()
        || reference
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return bad("it is empty or contains whitespace");
    }
    let (name_tag, digest) = match reference.split_once('@') {
        Some((name_tag, digest)) => (name_tag, Some(digest)),
        None => (reference, None),
    };
    if let Some(digest) = digest {
        let hex = digest.strip_prefix("sha256:").unwrap_or_default();
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return bad("a pinned digest must be sha256: followed by 64 lowercase hex digits");
        }
    }
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[last_slash..].rfind(':') {
        Some(i) => {
            let split = last_slash + i;
            (&name_tag[..split], Some(&name_tag[split + 1..]))
        }
        None => (name_tag, None),
    };
    if name.is_empty() || name.ends_with('/') {
        return bad("the repository name is empty");
    }
    if tag.is_some_and(str::is_empty) {
        return bad("the tag after `:` is empty");
    }
    Ok(ImageRef { name, tag, digest })
}

/// Whether `repo_digests` (`repo@sha256:...` entries) contain `expected`.
/// Only the digest part is compared: a digest names the content, whatever
/// repository it was recorded under.
pub(crate) fn digest_matches(expected: &str, repo_digests: &[String]) -> bool {
    repo_digests
        .iter()
        .any(|entry| entry.rsplit_once('@').is_some_and(|(_, d)| d == expected))
}

/// Turns the builder's `stream` text into lines (messages may split or join
/// lines arbitrarily).
#[derive(Default)]
struct LineSplitter {
    pending: String,
}

impl LineSplitter {
    fn push(&mut self, text: &str, emit: &mut impl FnMut(BuildEvent)) {
        self.pending.push_str(text);
        while let Some(i) = self.pending.find('\n') {
            let line: String = self.pending.drain(..=i).collect();
            Self::emit_line(line.trim_end(), emit);
        }
    }

    fn finish(&mut self, emit: &mut impl FnMut(BuildEvent)) {
        let rest = std::mem::take(&mut self.pending);
        Self::emit_line(rest.trim_end(), emit);
    }

    fn emit_line(line: &str, emit: &mut impl FnMut(BuildEvent)) {
        if line.trim().is_empty() {
            return;
        }
        if line.starts_with("Step ") {
            emit(BuildEvent::Step(line.to_string()));
        } else {
            emit(BuildEvent::Output(line.to_string()));
        }
    }
}

impl Docker {
    /// Builds `tag` from `context` (which must contain a `Dockerfile`) and
    /// returns the image id (`sha256:...`).
    pub async fn build_image(
        &self,
        tag: &str,
        no_cache: bool,
        context: &BuildContext,
        mut on_event: impl FnMut(BuildEvent),
    ) -> Result<String, RunnerError> {
        let tar = context.tar_file()?;
        let options = BuildImageOptionsBuilder::new()
            .dockerfile("Dockerfile")
            .t(tag)
            .nocache(no_cache)
            .rm(true)
            .forcerm(true)
            .pull("false")
            .build();
        let build_error = |e: bollard::errors::Error| RunnerError::Build {
            tag: tag.to_string(),
            message: daemon_message(&e),
        };
        let mut stream =
            self.inner
                .build_image(options, None, Some(bollard::body_try_stream(chunks(tar))));
        let mut lines = LineSplitter::default();
        let mut image_id = None;
        while let Some(item) = stream.next().await {
            let info = item.map_err(build_error)?;
            if let Some(text) = info.stream.as_deref() {
                lines.push(text, &mut on_event);
            }
            if let Some(status) = info.status.as_deref() {
                lines.push(status, &mut on_event);
                lines.push("\n", &mut on_event);
            }
            if let Some(id) = info.aux.and_then(|aux| aux.id) {
                image_id = Some(id);
            }
        }
        lines.finish(&mut on_event);
        // The aux message carries the id; older engines only print
        // "Successfully built", so fall back to asking for the tag.
        match image_id {
            Some(id) => Ok(id),
            None => match self.image(tag).await? {
                Some(info) => Ok(info.id),
                None => Err(RunnerError::Build {
                    tag: tag.to_string(),
                    message: "the build finished but produced no image".into(),
                }),
            },
        }
    }

    /// Pulls `reference`. When it is pinned (`name@sha256:...` or
    /// `name:tag@sha256:...`) the content is fetched by digest and the
    /// result must carry that digest, else [`RunnerError::DigestMismatch`].
    pub async fn pull_image(
        &self,
        reference: &str,
        mut on_progress: impl FnMut(PullProgress),
    ) -> Result<PulledImage, RunnerError> {
        let parsed = parse_reference(reference)?;
        let pull_ref = parsed.pull_reference();
        let pull_error = |message: String| RunnerError::Pull {
            reference: reference.to_string(),
            message,
        };
        let options = CreateImageOptionsBuilder::new()
            .from_image(&pull_ref)
            .build();
        let mut stream = self.inner.create_image(Some(options), None, None);
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| pull_error(daemon_message(&e)))?;
            let detail = info.progress_detail.unwrap_or_default();
            on_progress(PullProgress {
                layer: info.id.unwrap_or_default(),
                status: info.status.unwrap_or_default(),
                current: detail.current.and_then(|v| u64::try_from(v).ok()),
                total: detail.total.and_then(|v| u64::try_from(v).ok()),
            });
        }
        let Some(image) = self.image(&pull_ref).await? else {
            return Err(pull_error(format!(
                "the engine reported success but has no image {pull_ref}"
            )));
        };
        if let Some(expected) = parsed.digest
            && !digest_matches(expected, &image.repo_digests)
        {
            return Err(RunnerError::DigestMismatch {
                reference: reference.to_string(),
                expected: expected.to_string(),
                found: image.repo_digests,
            });
        }
        Ok(PulledImage {
            id: image.id,
            repo_digests: image.repo_digests,
        })
    }

    /// The local image `reference` (name, name:tag, name@digest or id), or
    /// `None` if the engine does not have it.
    pub async fn image(&self, reference: &str) -> Result<Option<ImageInfo>, RunnerError> {
        match self.inner.inspect_image(reference).await {
            Ok(image) => Ok(Some(ImageInfo {
                id: image.id.unwrap_or_default(),
                repo_tags: image.repo_tags.unwrap_or_default(),
                repo_digests: image.repo_digests.unwrap_or_default(),
                created: image.created.map(|c| c.to_string()).unwrap_or_default(),
            })),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(RunnerError::Engine {
                during: "inspecting an image",
                source: e,
            }),
        }
    }

    /// Pushes `reference` (`registry/name:tag`; tag it first with
    /// [`tag_image`](Self::tag_image)). Sends no credentials.
    pub async fn push_image(&self, reference: &str) -> Result<(), RunnerError> {
        let parsed = parse_reference(reference)?;
        if parsed.digest.is_some() {
            return Err(RunnerError::Reference {
                reference: reference.to_string(),
                reason: "push a tag, not a digest".into(),
            });
        }
        let options = PushImageOptionsBuilder::new()
            .tag(parsed.tag.unwrap_or("latest"))
            .build();
        let mut stream = self.inner.push_image(parsed.name, Some(options), None);
        while let Some(item) = stream.next().await {
            item.map_err(|e| RunnerError::Push {
                reference: reference.to_string(),
                message: daemon_message(&e),
            })?;
        }
        Ok(())
    }

    /// Gives the image `source` the additional name `repo:tag`.
    pub async fn tag_image(&self, source: &str, repo: &str, tag: &str) -> Result<(), RunnerError> {
        let options = TagImageOptionsBuilder::new().repo(repo).tag(tag).build();
        self.inner
            .tag_image(source, Some(options))
            .await
            .map_err(|e| {
                if status_of(&e) == Some(404) {
                    RunnerError::ImageMissing {
                        image: source.to_string(),
                    }
                } else {
                    RunnerError::Engine {
                        during: "tagging an image",
                        source: e,
                    }
                }
            })
    }

    /// Removes the image name `reference` (the image itself goes once no
    /// name or container refers to it). Already absent is fine. `force`
    /// also removes it from under stopped containers.
    pub async fn remove_image(&self, reference: &str, force: bool) -> Result<(), RunnerError> {
        let options = RemoveImageOptionsBuilder::new().force(force).build();
        match self
            .inner
            .remove_image(reference, Some(options), None)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(RunnerError::Engine {
                during: "removing an image",
                source: e,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn references_parse() {
        let r = parse_reference("127.0.0.1:5000/cmm/job:v1").expect("parses");
        assert_eq!(
            (r.name, r.tag, r.digest),
            ("127.0.0.1:5000/cmm/job", Some("v1"), None)
        );
        assert_eq!(r.pull_reference(), "127.0.0.1:5000/cmm/job:v1");

        let r = parse_reference("127.0.0.1:5000/cmm/job").expect("parses");
        assert_eq!((r.name, r.tag), ("127.0.0.1:5000/cmm/job", None));
        assert_eq!(r.pull_reference(), "127.0.0.1:5000/cmm/job:latest");

        let pinned = format!("127.0.0.1:5000/job@{DIGEST}");
        let r = parse_reference(&pinned).expect("parses");
        assert_eq!(
            (r.name, r.tag, r.digest),
            ("127.0.0.1:5000/job", None, Some(DIGEST))
        );
        assert_eq!(r.pull_reference(), pinned);

        let both = format!("job:v2@{DIGEST}");
        let r = parse_reference(&both).expect("parses");
        assert_eq!((r.name, r.tag, r.digest), ("job", Some("v2"), Some(DIGEST)));
        assert_eq!(r.pull_reference(), format!("job@{DIGEST}"));

        for bad in [
            "",
            "job@sha256:abc",
            "job@md5:0123",
            "job:",
            ":tag",
            "a b",
            "job@sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(parse_reference(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn digests_compare_by_digest_part() {
        let found = vec![format!("127.0.0.1:5000/job@{DIGEST}")];
        assert!(digest_matches(DIGEST, &found));
        let other = DIGEST.replace('0', "f");
        assert!(!digest_matches(&other, &found));
        assert!(!digest_matches(DIGEST, &[]));
    }

    #[test]
    fn build_lines_are_split_and_classified() {
        let mut events = Vec::new();
        let mut emit = |e| events.push(e);
        let mut lines = LineSplitter::default();
        lines.push("Step 1/2 : FROM scratch\n ---> \n", &mut emit);
        lines.push("Step 2/2 : COPY a", &mut emit);
        lines.push(" /a\n", &mut emit);
        lines.push("Successfully built abc", &mut emit);
        lines.finish(&mut emit);
        assert_eq!(
            events,
            vec![
                BuildEvent::Step("Step 1/2 : FROM scratch".into()),
                BuildEvent::Output(" --->".into()),
                BuildEvent::Step("Step 2/2 : COPY a /a".into()),
                BuildEvent::Output("Successfully built abc".into()),
            ]
        );
    }
}
