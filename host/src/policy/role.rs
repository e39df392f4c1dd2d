//! The four decision points a plugin can fill.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A decision point. Each has its own WIT world, and a plugin fills exactly one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Approval,
    Limits,
    Pricing,
    Compliance,
}

impl Role {
    /// Every role, in the order the pipeline asks them.
    pub const ALL: [Role; 4] = [
        Role::Approval,
        Role::Limits,
        Role::Compliance,
        Role::Pricing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Approval => "approval",
            Role::Limits => "limits",
            Role::Pricing => "pricing",
            Role::Compliance => "compliance",
        }
    }

    /// The WIT world a plugin for this role must target.
    pub fn world(self) -> &'static str {
        match self {
            Role::Approval => "approval-policy",
            Role::Limits => "limits-policy",
            Role::Pricing => "pricing-policy",
            Role::Compliance => "compliance-policy",
        }
    }

    /// Position in `ALL`, for fixed-size per-role tables.
    pub(crate) fn index(self) -> usize {
        match self {
            Role::Approval => 0,
            Role::Limits => 1,
            Role::Compliance => 2,
            Role::Pricing => 3,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of the four.
#[derive(Debug, thiserror::Error)]
#[error("unknown policy role '{given}': expected one of approval, limits, pricing, compliance")]
pub struct UnknownRole {
    pub given: String,
}

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole {
                given: s.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_index_matches_order() {
        for (i, role) in Role::ALL.into_iter().enumerate() {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
            assert_eq!(role.index(), i);
        }
        assert!("pricer".parse::<Role>().is_err());
    }
}
