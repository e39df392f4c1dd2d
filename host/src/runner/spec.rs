//! The hardened job container spec, built in ONE place.
//!
//! A job container runs untrusted model-driven work, so it gets nothing it
//! does not need: no network, no capabilities, no privilege escalation, no
//! writable root filesystem, no credential in its environment, a non-root
//! numeric user, hard memory/pids/CPU limits, size-capped tmpfs scratch
//! space (`/tmp`, and `/workspace` for a job with a workspace), and exactly
//! one read-only bind mount: the gateway folder through which the host talks
//! to the job. Everything security-relevant is decided by
//! [`JobContainer::to_create_body`]; [`JobContainer::validate`] refuses
//! specs that would weaken it before anything reaches the engine.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};

use super::error::RunnerError;
use super::labels::MANAGED_LABEL;
use super::program::{COMMAND_GRACE, Program, RELAY_NAME, WORKSPACE};

/// Where the gateway folder appears inside every job container.
pub const GATEWAY_MOUNT: &str = "/run/cmm";

/// Below this the engine refuses to create a container (6 MiB).
const MIN_MEMORY_BYTES: u64 = 6 * 1024 * 1024;

/// What one job container is allowed to have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobContainer {
    /// Container name, e.g. `cmm-job-<job id>`.
    pub name: String,
    /// Image reference or id to run.
    pub image: String,
    /// Numeric `uid:gid`; never root (uid 0 or gid 0 are refused).
    pub user: String,
    /// Memory limit; swap is disabled by setting MemorySwap to the same value.
    pub memory_bytes: u64,
    /// Relative CPU weight (`CpuShares`, 1024 is Docker's default).
    pub cpu_shares: u32,
    /// Hard CPU cap in billionths of a CPU (`NanoCpus`), if any.
    pub nano_cpus: Option<u64>,
    /// Maximum number of processes/threads in the container.
    pub pids_limit: u32,
    /// Size of the writable, non-executable tmpfs at `/tmp`.
    pub tmpfs_bytes: u64,
    /// Host folder bind-mounted read-only at [`GATEWAY_MOUNT`]; the only mount.
    pub gateway_dir: PathBuf,
    /// Extra labels; [`MANAGED_LABEL`]`=true` is always added on top.
    pub labels: BTreeMap<String, String>,
    /// What runs inside.
    pub program: Program,
}

/// Time for the relay to stop a command and send its workspace back after
/// a SIGTERM, beyond its own grace for the command.
const UPLOAD_GRACE: Duration = Duration::from_secs(10);

impl JobContainer {
    /// Refuses specs that are malformed or would weaken the sandbox.
    pub fn validate(&self) -> Result<(), RunnerError> {
        let fail = |msg: String| Err(RunnerError::Spec(msg));
        if !valid_container_name(&self.name) {
            return fail(format!(
                "container name {:?} must match [a-zA-Z0-9][a-zA-Z0-9_.-]+",
                self.name
            ));
        }
        if self.image.trim().is_empty() {
            return fail("no image given".into());
        }
        parse_user(&self.user)?;
        if self.memory_bytes < MIN_MEMORY_BYTES || i64::try_from(self.memory_bytes).is_err() {
            return fail(format!(
                "memory limit {} bytes is outside {MIN_MEMORY_BYTES}..=i64::MAX",
                self.memory_bytes
            ));
        }
        // The kernel's minimum weight is 2, and 0 would mean "engine default".
        if self.cpu_shares < 2 {
            return fail(format!("cpu_shares {} must be at least 2", self.cpu_shares));
        }
        // NanoCpus 0 means "no limit" to the engine, which is not what Some(0) asks for.
        if let Some(nano) = self.nano_cpus
            && (nano == 0 || i64::try_from(nano).is_err())
        {
            return fail(format!("nano_cpus {nano} must be positive and fit in i64"));
        }
        // 0 (or negative) means "unlimited" to the engine.
        if self.pids_limit == 0 {
            return fail("pids_limit must be positive (0 would mean unlimited)".into());
        }
        // tmpfs `size=0` means unlimited, i.e. bounded only by host memory.
        if self.tmpfs_bytes == 0 {
            return fail("tmpfs_bytes must be positive (0 would mean unlimited)".into());
        }
        if !self.gateway_dir.is_absolute() {
            return fail(format!(
                "gateway_dir {} must be an absolute path",
                self.gateway_dir.display()
            ));
        }
        if self.gateway_dir.to_str().is_none() {
            return fail(format!(
                "gateway_dir {} is not valid UTF-8",
                self.gateway_dir.display()
            ));
        }
        if self.labels.keys().any(|k| k.is_empty()) {
            return fail("label keys must not be empty".into());
        }
        match &self.program {
            Program::Worker => Ok(()),
            Program::Command(command) => command.validate(),
        }
    }

    /// How long a container gets to stop after SIGTERM before SIGKILL: the
    /// worker holds nothing worth waiting for; a command's relay stops the
    /// command and sends its workspace back.
    pub fn stop_grace(&self) -> Duration {
        match self.program {
            Program::Worker => Duration::ZERO,
            Program::Command(_) => COMMAND_GRACE + UPLOAD_GRACE,
        }
    }

    /// Whether the program reads its job from stdin.
    pub fn takes_stdin(&self) -> bool {
        matches!(self.program, Program::Worker)
    }

    /// The engine create body. Infallible by design: call
    /// [`validate`](Self::validate) first (`run_job` does).
    pub fn to_create_body(&self) -> ContainerCreateBody {
        let mut labels: HashMap<String, String> = self
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.insert(MANAGED_LABEL.to_string(), "true".to_string());

        let memory = clamp_i64(self.memory_bytes);
        // The container's user owns its scratch space. Where the image has a
        // folder at the mount point the engine gives the tmpfs that folder's
        // mode (755 root-owned in a bare image, which the job could not
        // write to) and ignores `mode`; `uid` and `gid` it keeps.
        let owner = match parse_user(&self.user) {
            Ok((uid, gid)) => format!("uid={uid},gid={gid},mode=1777"),
            Err(_) => "mode=1777".to_owned(),
        };
        let mut tmpfs = HashMap::from([(
            "/tmp".to_string(),
            format!("rw,noexec,nosuid,nodev,size={},{owner}", self.tmpfs_bytes),
        )]);
        let stdin = self.takes_stdin();
        // No WorkingDir: the relay sets the command's, and a WorkingDir
        // would make the engine create the mount point in the image first.
        let (entrypoint, cmd, env) = match &self.program {
            Program::Worker => (None, None, Vec::new()),
            Program::Command(command) => {
                if let Some(options) = command.workspace_tmpfs(&owner) {
                    tmpfs.insert(WORKSPACE.to_string(), options);
                }
                (
                    Some(vec![format!("{GATEWAY_MOUNT}/{RELAY_NAME}")]),
                    Some(command.relay_args()),
                    command.environment(),
                )
            }
        };
        let host_config = HostConfig {
            readonly_rootfs: Some(true),
            tmpfs: Some(tmpfs),
            cap_drop: Some(vec!["ALL".to_string()]),
            cap_add: None,
            security_opt: Some(vec!["no-new-privileges:true".to_string()]),
            privileged: Some(false),
            network_mode: Some("none".to_string()),
            // Its own IPC namespace and no /dev/shm at all: with "private"
            // the engine mounts a writable 64 MB /dev/shm, a second scratch
            // space beside the capped /tmp that the worker never needs.
            ipc_mode: Some("none".to_string()),
            pids_limit: Some(i64::from(self.pids_limit)),
            memory: Some(memory),
            memory_swap: Some(memory),
            cpu_shares: Some(i64::from(self.cpu_shares)),
            nano_cpus: self.nano_cpus.map(clamp_i64),
            init: Some(true),
            auto_remove: Some(false),
            binds: None,
            mounts: Some(vec![Mount {
                target: Some(GATEWAY_MOUNT.to_string()),
                source: Some(self.gateway_dir.to_string_lossy().into_owned()),
                typ: Some(MountType::BIND),
                read_only: Some(true),
                ..Default::default()
            }]),
            ..Default::default()
        };

        ContainerCreateBody {
            image: Some(self.image.clone()),
            user: Some(self.user.clone()),
            env: Some(env),
            entrypoint,
            cmd,
            labels: Some(labels),
            network_disabled: Some(true),
            open_stdin: Some(stdin),
            stdin_once: Some(stdin),
            attach_stdin: Some(stdin),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            host_config: Some(host_config),
            ..Default::default()
        }
    }
}

fn clamp_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Docker's own rule for container names.
fn valid_container_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest: Vec<char> = chars.collect();
    first_ok
        && !rest.is_empty()
        && rest
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Parses a numeric, non-root `uid:gid`. Names are refused because they are
/// resolved inside the image, so the host could not know who the job runs as.
fn parse_user(user: &str) -> Result<(u32, u32), RunnerError> {
    let bad = |why: &str| {
        Err(RunnerError::Spec(format!(
            "user {user:?} {why}; give a numeric non-root uid:gid such as 65532:65532"
        )))
    };
    let Some((uid, gid)) = user.split_once(':') else {
        return bad("is not of the form uid:gid");
    };
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !numeric(uid) || !numeric(gid) {
        return bad("is not numeric");
    }
    let (Ok(uid), Ok(gid)) = (uid.parse::<u32>(), gid.parse::<u32>()) else {
        return bad("is out of range");
    };
    if uid == 0 {
        return bad("is root");
    }
    if gid == 0 {
        return bad("has the root group");
    }
    Ok((uid, gid))
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::program::{CommandSpec, WorkspaceMount};
    use super::*;

    pub(in super::super) fn spec() -> JobContainer {
        JobContainer {
            name: "cmm-job-abc".into(),
            image: "cmm-job:latest".into(),
            user: "65532:65532".into(),
            memory_bytes: 512 * 1024 * 1024,
            cpu_shares: 512,
            nano_cpus: Some(1_500_000_000),
            pids_limit: 128,
            tmpfs_bytes: 64 * 1024 * 1024,
            gateway_dir: PathBuf::from("/var/lib/cmm/jobs/abc"),
            labels: BTreeMap::from([("org.claude-max-market.job-id".into(), "abc".into())]),
            program: Program::Worker,
        }
    }

    /// A command job with a workspace.
    pub(in super::super) fn command_spec() -> JobContainer {
        JobContainer {
            program: Program::Command(CommandSpec {
                argv: vec!["claude".into(), "-p".into()],
                env: vec![("TASK".into(), "x".into())],
                placeholder_key: "cmm-placeholder-abc".into(),
                workspace: Some(WorkspaceMount {
                    max_bytes: 8 << 20,
                    max_files: 1000,
                    copy_in: true,
                }),
                stdin_file: true,
            }),
            ..spec()
        }
    }

    #[test]
    fn a_command_runs_under_the_relay_with_a_workspace_and_no_stdin() {
        let body = serde_json::to_value(command_spec().to_create_body()).expect("serialises");
        assert_eq!(body["Entrypoint"], serde_json::json!(["/run/cmm/relay"]));
        let cmd: Vec<String> = serde_json::from_value(body["Cmd"].clone()).unwrap();
        assert_eq!(cmd[cmd.len() - 3..], ["--", "claude", "-p"]);
        assert!(body.get("WorkingDir").is_none());
        assert_eq!(body["AttachStdin"], false);
        assert_eq!(body["OpenStdin"], false);
        assert_eq!(
            body["HostConfig"]["Tmpfs"]["/workspace"],
            "rw,exec,nosuid,nodev,size=8388608,nr_inodes=1001,uid=65532,gid=65532,mode=1777"
        );
        assert_eq!(body["HostConfig"]["Mounts"].as_array().unwrap().len(), 1);
        assert_eq!(command_spec().stop_grace(), Duration::from_secs(15));
        assert_eq!(spec().stop_grace(), Duration::ZERO);
    }

    #[test]
    fn create_body_is_hardened() {
        let body = serde_json::to_value(spec().to_create_body()).expect("serialises");
        let hc = &body["HostConfig"];
        assert_eq!(hc["ReadonlyRootfs"], true);
        assert_eq!(
            hc["Tmpfs"],
            serde_json::json!({"/tmp": "rw,noexec,nosuid,nodev,size=67108864,uid=65532,gid=65532,mode=1777"})
        );
        assert_eq!(hc["CapDrop"], serde_json::json!(["ALL"]));
        assert!(hc.get("CapAdd").is_none());
        assert_eq!(
            hc["SecurityOpt"],
            serde_json::json!(["no-new-privileges:true"])
        );
        assert_eq!(hc["Privileged"], false);
        assert_eq!(hc["NetworkMode"], "none");
        assert_eq!(hc["IpcMode"], "none");
        assert_eq!(hc["PidsLimit"], 128);
        assert_eq!(hc["Memory"], 536870912_i64);
        assert_eq!(hc["MemorySwap"], 536870912_i64);
        assert_eq!(hc["CpuShares"], 512);
        assert_eq!(hc["NanoCpus"], 1_500_000_000_i64);
        assert_eq!(hc["Init"], true);
        assert_eq!(hc["AutoRemove"], false);
        assert!(hc.get("Binds").is_none());
        assert_eq!(
            hc["Mounts"],
            serde_json::json!([{
                "Target": "/run/cmm",
                "Source": "/var/lib/cmm/jobs/abc",
                "Type": "bind",
                "ReadOnly": true
            }])
        );
        assert_eq!(body["User"], "65532:65532");
        assert_eq!(body["Env"], serde_json::json!([]));
        assert_eq!(body["NetworkDisabled"], true);
        assert_eq!(body["OpenStdin"], true);
        assert_eq!(body["StdinOnce"], true);
        assert_eq!(body["AttachStdin"], true);
        assert_eq!(body["AttachStdout"], true);
        assert_eq!(body["AttachStderr"], true);
        assert_eq!(body["Tty"], false);
        assert_eq!(body["Image"], "cmm-job:latest");
        assert_eq!(
            body["Labels"],
            serde_json::json!({
                "org.claude-max-market.job-id": "abc",
                "org.claude-max-market.managed": "true"
            })
        );
        assert!(body.get("Volumes").is_none());
        assert!(body.get("ExposedPorts").is_none());
    }

    #[test]
    fn managed_label_cannot_be_overridden() {
        let mut s = spec();
        s.labels.insert(MANAGED_LABEL.into(), "false".into());
        let labels = s.to_create_body().labels.unwrap_or_default();
        assert_eq!(labels.get(MANAGED_LABEL).map(String::as_str), Some("true"));
    }

    #[test]
    fn nano_cpus_is_optional() {
        let mut s = spec();
        s.nano_cpus = None;
        let body = serde_json::to_value(s.to_create_body()).expect("serialises");
        assert!(body["HostConfig"].get("NanoCpus").is_none());
    }

    #[test]
    fn users_must_be_numeric_and_non_root() {
        for good in ["65532:65532", "1:1", "1000:100"] {
            let mut s = spec();
            s.user = good.into();
            assert!(s.validate().is_ok(), "{good}");
        }
        for bad in [
            "0",
            "0:0",
            "0:1000",
            "1000:0",
            "00:1",
            "root",
            "1000",
            "nobody:nogroup",
            "1000:",
            ":1000",
            "-1:1",
            "1000:1000:1",
            "99999999999:1",
            " 1000:1000",
        ] {
            let mut s = spec();
            s.user = bad.into();
            assert!(
                matches!(s.validate(), Err(RunnerError::Spec(_))),
                "{bad} should be refused"
            );
        }
    }

    #[test]
    fn unlimited_or_nonsense_limits_are_refused() {
        let cases: &[fn(&mut JobContainer)] = &[
            |s| s.memory_bytes = 0,
            |s| s.memory_bytes = u64::MAX,
            |s| s.cpu_shares = 0,
            |s| s.nano_cpus = Some(0),
            |s| s.pids_limit = 0,
            |s| s.tmpfs_bytes = 0,
            |s| s.gateway_dir = PathBuf::from("relative/dir"),
            |s| s.name = "bad name".into(),
            |s| s.name = "-x".into(),
            |s| s.image = " ".into(),
        ];
        for (i, case) in cases.iter().enumerate() {
            let mut s = spec();
            case(&mut s);
            assert!(
                matches!(s.validate(), Err(RunnerError::Spec(_))),
                "case {i} should be refused"
            );
        }
        assert!(spec().validate().is_ok());
    }
}
