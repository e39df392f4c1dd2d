//! Finding and removing the containers this tool owns. Listing always
//! filters on [`MANAGED_LABEL`]`=true` (set by every spec this tool builds),
//! and re-checks the labels on the answer, so cleanup can never reach a
//! container someone else created.

use std::collections::HashMap;

use bollard::query_parameters::{InspectContainerOptionsBuilder, ListContainersOptionsBuilder};

use super::Docker;
use super::error::{RunnerError, status_of};
use super::labels::MANAGED_LABEL;
use super::run::{kill_container, remove_container};

/// A container carrying this tool's labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedContainer {
    pub id: String,
    /// Name without the engine's leading `/`.
    pub name: String,
    /// `created`, `running`, `exited`, `dead`, ...
    pub state: String,
    pub labels: HashMap<String, String>,
    /// Creation time, seconds since the Unix epoch.
    pub created: i64,
}

impl Docker {
    /// Containers in any state that carry `MANAGED_LABEL=true` and every
    /// `(key, value)` in `label_filters`.
    pub async fn owned_containers(
        &self,
        label_filters: &[(&str, &str)],
    ) -> Result<Vec<OwnedContainer>, RunnerError> {
        let mut wanted: Vec<(&str, &str)> = vec![(MANAGED_LABEL, "true")];
        wanted.extend_from_slice(label_filters);
        let label_args: Vec<String> = wanted.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let filters = HashMap::from([("label", label_args)]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let summaries = self
            .inner
            .list_containers(Some(options))
            .await
            .map_err(RunnerError::engine("listing containers"))?;
        Ok(summaries
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.unwrap_or_default();
                let ours = wanted
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v));
                if !ours {
                    return None;
                }
                Some(OwnedContainer {
                    id: c.id?,
                    name: c
                        .names
                        .unwrap_or_default()
                        .first()
                        .map(|n| n.trim_start_matches('/').to_string())
                        .unwrap_or_default(),
                    state: c.state.map(|s| s.to_string()).unwrap_or_default(),
                    labels,
                    created: c.created.unwrap_or_default(),
                })
            })
            .collect())
    }

    /// Kills (SIGKILL) and force-removes a container. Idempotent: a
    /// container that is already stopped or gone is fine.
    pub async fn kill_and_remove(&self, id: &str) -> Result<(), RunnerError> {
        kill_container(&self.inner, id).await?;
        remove_container(&self.inner, id).await
    }

    /// The engine's inspect document for a container (as bollard models it,
    /// with the engine's field names), or a 404 engine error if it is gone;
    /// see [`container_exists`](Self::container_exists).
    pub async fn inspect_raw(&self, id: &str) -> Result<serde_json::Value, RunnerError> {
        let options = InspectContainerOptionsBuilder::new().size(false).build();
        let inspect = self
            .inner
            .inspect_container(id, Some(options))
            .await
            .map_err(RunnerError::engine("inspecting a container"))?;
        serde_json::to_value(inspect).map_err(|e| RunnerError::Engine {
            during: "encoding a container inspect document",
            source: e.into(),
        })
    }

    /// Whether a container with this id or name exists (in any state).
    pub async fn container_exists(&self, id: &str) -> Result<bool, RunnerError> {
        match self.inner.inspect_container(id, None).await {
            Ok(_) => Ok(true),
            Err(e) if status_of(&e) == Some(404) => Ok(false),
            Err(e) => Err(RunnerError::Engine {
                during: "inspecting a container",
                source: e,
            }),
        }
    }
}
