//! The security-relevant part of a job container's create body, as the
//! audit log records it at start and `compliance-check` later judges it.
//! Read off the body itself, so the record is what the engine was sent. It
//! names environment variables but never records their values.

use serde::{Deserialize, Serialize};

use super::program::CREDENTIAL_PREFIX;
use super::spec::{GATEWAY_MOUNT, JobContainer};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hardening {
    pub read_only_rootfs: bool,
    /// The options of the `/tmp` tmpfs.
    pub tmpfs_tmp: Option<String>,
    /// The options of the `/workspace` tmpfs, for a job with a workspace.
    #[serde(default)]
    pub tmpfs_workspace: Option<String>,
    pub cap_drop: Vec<String>,
    pub cap_add: Vec<String>,
    pub security_opt: Vec<String>,
    pub privileged: bool,
    pub network_mode: String,
    pub ipc_mode: String,
    pub user: String,
    pub pids_limit: i64,
    pub memory: i64,
    pub memory_swap: i64,
    pub init: bool,
    /// The names of the environment variables set, never their values.
    #[serde(default)]
    pub env_names: Vec<String>,
    /// Whether any value looked like an Anthropic credential.
    #[serde(default)]
    pub credential_in_env: bool,
    /// `target:ro` or `target:rw`, one per mount.
    pub mounts: Vec<String>,
}

impl Hardening {
    /// What this record falls short of against the spec's promises; empty
    /// when it keeps all of them.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, what: &str| {
            if !ok {
                problems.push(what.to_owned());
            }
        };
        check(self.read_only_rootfs, "root filesystem not read-only");
        let has = |options: Option<&str>, wanted: &[&str]| {
            let options = options.unwrap_or_default();
            wanted.iter().all(|o| options.contains(o))
        };
        check(
            has(
                self.tmpfs_tmp.as_deref(),
                &["noexec", "nosuid", "nodev", "size="],
            ),
            "/tmp not a noexec,nosuid,nodev tmpfs with a size",
        );
        check(
            self.tmpfs_workspace.is_none()
                || has(
                    self.tmpfs_workspace.as_deref(),
                    &["nosuid", "nodev", "size=", "nr_inodes="],
                ),
            "/workspace not a nosuid,nodev tmpfs with a size and an inode cap",
        );
        check(
            self.cap_drop.iter().any(|c| c == "ALL") && self.cap_add.is_empty(),
            "capabilities not all dropped",
        );
        check(
            self.security_opt
                .iter()
                .any(|o| o.starts_with("no-new-privileges")),
            "no-new-privileges not set",
        );
        check(!self.privileged, "privileged");
        check(self.network_mode == "none", "has a network");
        let root = self.user.split(':').any(|part| part == "0");
        let numeric = self
            .user
            .split(':')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()));
        check(numeric && !root, "user not a numeric non-root uid:gid");
        check(self.pids_limit > 0, "no pids limit");
        check(
            self.memory > 0 && self.memory_swap == self.memory,
            "memory not capped without swap",
        );
        check(self.init, "no init");
        check(!self.credential_in_env, "a credential in the environment");
        check(
            self.mounts == [format!("{GATEWAY_MOUNT}:ro")],
            "mounts other than the read-only gateway folder",
        );
        problems
    }
}

impl JobContainer {
    /// The hardening this container is created with.
    pub fn hardening(&self) -> Hardening {
        let body = self.to_create_body();
        let hc = body.host_config.unwrap_or_default();
        let tmpfs = hc.tmpfs.unwrap_or_default();
        let env = body.env.unwrap_or_default();
        Hardening {
            read_only_rootfs: hc.readonly_rootfs.unwrap_or(false),
            tmpfs_tmp: tmpfs.get("/tmp").cloned(),
            tmpfs_workspace: tmpfs.get(super::program::WORKSPACE).cloned(),
            cap_drop: hc.cap_drop.unwrap_or_default(),
            cap_add: hc.cap_add.unwrap_or_default(),
            security_opt: hc.security_opt.unwrap_or_default(),
            privileged: hc.privileged.unwrap_or(false),
            network_mode: hc.network_mode.unwrap_or_default(),
            ipc_mode: hc.ipc_mode.unwrap_or_default(),
            user: body.user.unwrap_or_default(),
            pids_limit: hc.pids_limit.unwrap_or(0),
            memory: hc.memory.unwrap_or(0),
            memory_swap: hc.memory_swap.unwrap_or(0),
            init: hc.init.unwrap_or(false),
            env_names: env
                .iter()
                .map(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k).to_owned())
                .collect(),
            credential_in_env: env.iter().any(|e| e.contains(CREDENTIAL_PREFIX)),
            mounts: hc
                .mounts
                .unwrap_or_default()
                .into_iter()
                .map(|m| {
                    let mode = if m.read_only.unwrap_or(false) {
                        "ro"
                    } else {
                        "rw"
                    };
                    format!("{}:{mode}", m.target.unwrap_or_default())
                })
                .chain(hc.binds.unwrap_or_default())
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::spec::tests::spec;
    use super::*;

    #[test]
    fn the_recorded_hardening_keeps_every_promise_and_a_weaker_one_is_named() {
        let hardening = spec().hardening();
        assert_eq!(hardening.problems(), Vec::<String>::new(), "{hardening:?}");
        let weaker = Hardening {
            network_mode: "bridge".into(),
            user: "0:0".into(),
            credential_in_env: true,
            mounts: vec!["/run/cmm:ro".into(), "/var/run/docker.sock:rw".into()],
            ..hardening
        };
        assert_eq!(
            weaker.problems(),
            [
                "has a network",
                "user not a numeric non-root uid:gid",
                "a credential in the environment",
                "mounts other than the read-only gateway folder"
            ]
        );
    }

    #[test]
    fn a_command_job_records_its_workspace_and_env_names_only() {
        let hardening = super::super::spec::tests::command_spec().hardening();
        assert_eq!(hardening.problems(), Vec::<String>::new(), "{hardening:?}");
        assert!(
            hardening
                .env_names
                .contains(&"ANTHROPIC_BASE_URL".to_owned())
        );
        let recorded = serde_json::to_string(&hardening).unwrap();
        assert!(
            !recorded.contains("cmm-placeholder"),
            "values are not recorded"
        );
        assert!(hardening.tmpfs_workspace.unwrap().contains("nr_inodes="));
    }

    #[test]
    fn an_older_record_without_the_new_fields_still_reads() {
        let mut old = serde_json::to_value(spec().hardening()).unwrap();
        let map = old.as_object_mut().unwrap();
        map.remove("env_names");
        map.remove("credential_in_env");
        map.remove("tmpfs_workspace");
        map.insert("env_entries".into(), 0.into());
        let read: Hardening = serde_json::from_value(old).unwrap();
        assert!(read.problems().is_empty());
    }
}
