//! [`Compatibility`]: the schema-evolution levels, as Confluent Schema
//! Registry names them. What each level checks is this crate's own proof
//! that one schema reads another's payloads (see the crate docs), stricter
//! than Confluent's JSON Schema rules where those accept an evolution that
//! some payload fails (a `default` for a new required property, which
//! validation does not apply; an overlapping `oneOf` branch).

use event_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Which evolutions of an event type's schema are allowed.
///
/// The levels and their names are those of Confluent Schema Registry:
///
/// | level | a new version is checked against | rule |
/// |---|---|---|
/// | `Backward` (default) | the previous version | consumers using the **new** schema can read data written with the previous one |
/// | `BackwardTransitive` | every earlier version | same, against all of them |
/// | `Forward` | the previous version | consumers using the **previous** schema can read data written with the new one |
/// | `ForwardTransitive` | every earlier version | same, against all of them |
/// | `Full` | the previous version | both backward and forward |
/// | `FullTransitive` | every earlier version | both, against all of them |
/// | `None` | nothing | every evolution is accepted |
///
/// "Can read" means: every payload valid under the writer's schema is valid
/// under the reader's. See the crate documentation for what the checker
/// understands.
///
/// Note: the original `a3s-event` described `Backward` as "new schema must be
/// readable by old consumers", which is Confluent's `FORWARD`. This crate
/// follows Confluent.
///
/// Parses from and displays as the Confluent names (`"BACKWARD_TRANSITIVE"`);
/// parsing ignores case and accepts `-` for `_`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Compatibility {
    /// New consumers can read data written with the previous version.
    #[default]
    Backward,
    /// New consumers can read data written with any earlier version.
    BackwardTransitive,
    /// Consumers of the previous version can read data written with the new one.
    Forward,
    /// Consumers of every earlier version can read data written with the new one.
    ForwardTransitive,
    /// Backward and forward against the previous version.
    Full,
    /// Backward and forward against every earlier version.
    FullTransitive,
    /// No checks.
    None,
}

impl Compatibility {
    /// Every level, in declaration order.
    pub const ALL: [Compatibility; 7] = [
        Self::Backward,
        Self::BackwardTransitive,
        Self::Forward,
        Self::ForwardTransitive,
        Self::Full,
        Self::FullTransitive,
        Self::None,
    ];

    /// The Confluent name (`"BACKWARD"`, `"FULL_TRANSITIVE"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Backward => "BACKWARD",
            Self::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Self::Forward => "FORWARD",
            Self::ForwardTransitive => "FORWARD_TRANSITIVE",
            Self::Full => "FULL",
            Self::FullTransitive => "FULL_TRANSITIVE",
            Self::None => "NONE",
        }
    }

    /// Whether a new version is checked against every earlier version (rather
    /// than only the previous one).
    pub fn is_transitive(self) -> bool {
        matches!(
            self,
            Self::BackwardTransitive | Self::ForwardTransitive | Self::FullTransitive
        )
    }

    /// Whether the new schema must read data written with the old one(s).
    pub fn checks_backward(self) -> bool {
        matches!(
            self,
            Self::Backward | Self::BackwardTransitive | Self::Full | Self::FullTransitive
        )
    }

    /// Whether the old schema(s) must read data written with the new one.
    pub fn checks_forward(self) -> bool {
        matches!(
            self,
            Self::Forward | Self::ForwardTransitive | Self::Full | Self::FullTransitive
        )
    }
}

impl fmt::Display for Compatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Compatibility {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let normalized = s.trim().to_ascii_uppercase().replace('-', "_");
        Self::ALL
            .into_iter()
            .find(|level| level.as_str() == normalized)
            .ok_or_else(|| {
                Error::invalid_config(
                    "compatibility",
                    format!(
                        "unknown compatibility level {s:?}; expected one of BACKWARD, \
                         BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, \
                         FULL_TRANSITIVE, NONE"
                    ),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for level in Compatibility::ALL {
            assert_eq!(level.as_str().parse::<Compatibility>().unwrap(), level);
            let json = serde_json::to_string(&level).unwrap();
            assert_eq!(json, format!("\"{}\"", level.as_str()));
            assert_eq!(serde_json::from_str::<Compatibility>(&json).unwrap(), level);
        }
        assert_eq!(
            "full-transitive".parse::<Compatibility>().unwrap(),
            Compatibility::FullTransitive
        );
        assert!(matches!(
            "sideways".parse::<Compatibility>(),
            Err(Error::InvalidConfig { .. })
        ));
    }

    #[test]
    fn level_properties() {
        assert_eq!(Compatibility::default(), Compatibility::Backward);
        assert!(Compatibility::Full.checks_backward() && Compatibility::Full.checks_forward());
        assert!(!Compatibility::None.checks_backward() && !Compatibility::None.checks_forward());
        assert!(Compatibility::ForwardTransitive.is_transitive());
        assert!(!Compatibility::Forward.is_transitive());
        assert!(!Compatibility::Backward.checks_forward());
    }
}
