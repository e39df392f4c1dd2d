//! Agents the host knows how to run as jobs, so the common case is one
//! command (`execute --agent claude-code`): how to invoke each unattended
//! inside the sandbox, how to read its progress, and how to build an image
//! that holds it from what this machine has. Knows nothing of Docker,
//! policy or the store; `ops` turns what it describes into a job.

pub mod claude_code;
pub mod rootfs;
pub mod wheel;

/// The agents `--agent` accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Agent {
    /// Claude Code, Anthropic's coding agent.
    ClaudeCode,
}

impl Agent {
    pub fn name(self) -> &'static str {
        match self {
            Agent::ClaudeCode => claude_code::NAME,
        }
    }

    /// The image `docker:build --agent` builds for it, and jobs run by default.
    pub fn image(self) -> &'static str {
        match self {
            Agent::ClaudeCode => claude_code::IMAGE,
        }
    }
}
