//! The container labels this tool writes, so it can later find (and only
//! find) what it created. Every job container carries [`MANAGED_LABEL`]`=true`;
//! cleanup filters on it, so a container this tool did not create can never
//! be matched, whatever other labels it has.

/// Namespace of every label this tool writes.
pub const LABEL_PREFIX: &str = "org.claude-max-market";

/// Set to `"true"` on every container this tool creates.
pub const MANAGED_LABEL: &str = "org.claude-max-market.managed";

/// The job a container runs.
pub const JOB_ID_LABEL: &str = "org.claude-max-market.job-id";

/// The host home (state directory) that started the container, so two hosts
/// on one machine do not clean up each other's jobs.
pub const HOME_LABEL: &str = "org.claude-max-market.home";

/// Process id of the host process that started the container.
pub const HOST_PID_LABEL: &str = "org.claude-max-market.host-pid";

/// Start time of that host process; with the pid it tells a live host from
/// a dead one whose pid was reused.
pub const HOST_START_LABEL: &str = "org.claude-max-market.host-start";

/// `LABEL_PREFIX.<suffix>`, for labels without a constant here.
pub fn label(suffix: &str) -> String {
    format!("{LABEL_PREFIX}.{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_live_under_the_prefix() {
        for key in [
            MANAGED_LABEL,
            JOB_ID_LABEL,
            HOME_LABEL,
            HOST_PID_LABEL,
            HOST_START_LABEL,
        ] {
            let suffix = key
                .strip_prefix(LABEL_PREFIX)
                .and_then(|rest| rest.strip_prefix('.'));
            assert!(suffix.is_some_and(|s| !s.is_empty()), "{key}");
            assert_eq!(label(suffix.unwrap_or_default()), key);
        }
    }
}
