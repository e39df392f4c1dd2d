//! What runs inside a job container, and the layout it finds there.
//!
//! Either the image's own entrypoint reads its job from stdin (the built-in
//! one-prompt worker), or a command runs under the relay: a static helper
//! the host puts in the job's gateway folder (mounted read-only at
//! [`GATEWAY_MOUNT`]), which serves the gateway as plain HTTP on the
//! container's loopback, copies the workspace in, starts the command as its
//! child and, when it ends, sends the workspace back. Everything the command
//! is told (where the API is, a placeholder key, its home) is set here, in
//! one place, and nothing here may carry a credential.

use std::time::Duration;

use super::error::RunnerError;
use super::spec::GATEWAY_MOUNT;

/// The loopback port the relay serves the gateway on in every container.
pub const GATEWAY_PORT: u16 = 4141;
/// The relay binary, inside the gateway folder.
pub const RELAY_NAME: &str = "relay";
/// The copy of the workspace the relay starts from, inside the gateway folder.
pub const WORKSPACE_IN: &str = "in";
/// The socket the relay reports on when the command ends.
pub const CONTROL_SOCKET: &str = "control.sock";
/// A file in the gateway folder the command reads as its stdin, if any.
pub const STDIN_NAME: &str = "stdin";
/// The writable workspace tmpfs, the command's working directory.
pub const WORKSPACE: &str = "/workspace";
/// The command's home: created by the relay under the `/tmp` tmpfs, since
/// an image's own home may be missing or read-only.
pub const HOME: &str = "/tmp/home";
/// How long the relay lets a command finish after a SIGTERM before it
/// kills its process group and sends the workspace back.
pub const COMMAND_GRACE: Duration = Duration::from_secs(5);

/// Names a job may not set: the relay's own, and the credentials the
/// Anthropic clients read (the container must never hold a real one).
const RESERVED_ENV: [&str; 5] = [
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "HOME",
    "TMPDIR",
];

/// Every Anthropic credential starts so (API keys, OAuth tokens, admin keys).
pub(crate) const CREDENTIAL_PREFIX: &str = "sk-ant-";

/// What a job container runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// The image's own entrypoint, fed its job on stdin.
    Worker,
    /// A command under the relay.
    Command(CommandSpec),
}

/// A command job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    /// The command line; the image's ENTRYPOINT and CMD are not used.
    pub argv: Vec<String>,
    /// Extra `NAME=VALUE` pairs the owner asked for.
    pub env: Vec<(String, String)>,
    /// The placeholder the command sees as its API key: not a credential,
    /// and different for every job.
    pub placeholder_key: String,
    /// The `/workspace` tmpfs, when the job has one.
    pub workspace: Option<WorkspaceMount>,
    /// Whether `STDIN_NAME` in the gateway folder is the command's stdin.
    pub stdin_file: bool,
}

/// The size of a job's `/workspace` and what goes into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkspaceMount {
    pub max_bytes: u64,
    pub max_files: u32,
    /// The relay copies `WORKSPACE_IN` into it before the command starts.
    pub copy_in: bool,
}

impl CommandSpec {
    /// Refuses a command line or environment the container must not get.
    pub fn validate(&self) -> Result<(), RunnerError> {
        let fail = |msg: String| Err(RunnerError::Spec(msg));
        if self.argv.first().is_none_or(|c| c.trim().is_empty()) {
            return fail("no command given; put it after `--`".into());
        }
        if self.argv.iter().any(|a| a.contains('\0')) {
            return fail("the command line contains a NUL byte".into());
        }
        if self.placeholder_key.contains(CREDENTIAL_PREFIX) {
            return fail("the placeholder key looks like a credential".into());
        }
        for (name, value) in &self.env {
            let mut chars = name.chars();
            let well_formed = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !well_formed {
                return fail(format!(
                    "`{name}` is not an environment variable name (letters, digits and _, \
                     not starting with a digit)"
                ));
            }
            if RESERVED_ENV.contains(&name.as_str()) {
                return fail(format!(
                    "{name} is set by the host for every job and cannot be given with --env"
                ));
            }
            if value.contains(CREDENTIAL_PREFIX) {
                return fail(format!(
                    "the value of {name} looks like an Anthropic credential; a job's container \
                     never holds one (the gateway adds the owner's key upstream)"
                ));
            }
            if value.contains('\0') {
                return fail(format!("the value of {name} contains a NUL byte"));
            }
        }
        Ok(())
    }

    /// The container's environment: where the API is, the placeholder key,
    /// the home, then the owner's extra pairs.
    pub fn environment(&self) -> Vec<String> {
        let mut env = vec![
            format!("ANTHROPIC_BASE_URL=http://127.0.0.1:{GATEWAY_PORT}"),
            format!("ANTHROPIC_API_KEY={}", self.placeholder_key),
            format!("HOME={HOME}"),
            "TMPDIR=/tmp".to_owned(),
        ];
        env.extend(self.env.iter().map(|(k, v)| format!("{k}={v}")));
        env
    }

    /// The relay's command line, ending in the command's own.
    pub fn relay_args(&self) -> Vec<String> {
        let inside = |name: &str| format!("{GATEWAY_MOUNT}/{name}");
        let mut args = vec![
            "--listen".to_owned(),
            format!("127.0.0.1:{GATEWAY_PORT}"),
            "--gateway".to_owned(),
            inside("gateway.sock"),
            "--control".to_owned(),
            inside(CONTROL_SOCKET),
            "--make-dir".to_owned(),
            HOME.to_owned(),
            "--grace".to_owned(),
            COMMAND_GRACE.as_secs().to_string(),
        ];
        if let Some(workspace) = &self.workspace {
            args.extend(["--workspace".to_owned(), WORKSPACE.to_owned()]);
            args.push("--watch-full".to_owned());
            if workspace.copy_in {
                args.extend(["--workspace-from".to_owned(), inside(WORKSPACE_IN)]);
            }
        }
        if self.stdin_file {
            args.extend(["--stdin".to_owned(), inside(STDIN_NAME)]);
        }
        args.push("--".to_owned());
        args.extend(self.argv.iter().cloned());
        args
    }

    /// Options of the `/workspace` tmpfs: executable (agents run what they
    /// write), but never setuid or a device, bounded in bytes and files, and
    /// owned as `owner` says (the container's user).
    pub fn workspace_tmpfs(&self, owner: &str) -> Option<String> {
        self.workspace.map(|w| {
            format!(
                "rw,exec,nosuid,nodev,size={},nr_inodes={},{owner}",
                w.max_bytes,
                u64::from(w.max_files) + 1
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command() -> CommandSpec {
        CommandSpec {
            argv: vec!["python3".into(), "agent.py".into()],
            env: vec![("TASK".into(), "fix the tests".into())],
            placeholder_key: "cmm-job-abc-not-a-key".into(),
            workspace: Some(WorkspaceMount {
                max_bytes: 1 << 20,
                max_files: 99,
                copy_in: true,
            }),
            stdin_file: false,
        }
    }

    #[test]
    fn the_command_learns_the_gateway_on_loopback_and_no_credential() {
        let env = command().environment();
        assert_eq!(env[0], "ANTHROPIC_BASE_URL=http://127.0.0.1:4141");
        assert_eq!(env[1], "ANTHROPIC_API_KEY=cmm-job-abc-not-a-key");
        assert!(env.contains(&"TASK=fix the tests".to_owned()));
        assert!(!env.iter().any(|e| e.contains(CREDENTIAL_PREFIX)));
        let args = command().relay_args();
        let tail: Vec<_> = args.iter().skip_while(|a| *a != "--").collect();
        assert_eq!(tail, ["--", "python3", "agent.py"]);
        assert!(
            args.windows(2)
                .any(|w| w == ["--workspace-from", "/run/cmm/in"])
        );
        assert_eq!(
            command().workspace_tmpfs("uid=7,gid=8,mode=1777").unwrap(),
            "rw,exec,nosuid,nodev,size=1048576,nr_inodes=100,uid=7,gid=8,mode=1777"
        );
    }

    #[test]
    fn credentials_reserved_names_and_bad_names_are_refused() {
        let cases: [fn(&mut CommandSpec); 6] = [
            |c| c.env = vec![("KEY".into(), "sk-ant-api03-xyz".into())],
            |c| c.env = vec![("ANTHROPIC_API_KEY".into(), "x".into())],
            |c| c.env = vec![("1BAD".into(), "x".into())],
            |c| c.env = vec![("BAD-NAME".into(), "x".into())],
            |c| c.argv = Vec::new(),
            |c| c.argv = vec!["a\0b".into()],
        ];
        for (i, case) in cases.iter().enumerate() {
            let mut c = command();
            case(&mut c);
            assert!(c.validate().is_err(), "case {i} should be refused");
        }
        assert!(command().validate().is_ok());
    }
}
