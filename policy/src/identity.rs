//! Who is asking: the user and groups the gateway established when the
//! connection was authenticated (certificate CN and O values, or a JWT).

use serde::{Deserialize, Serialize};

/// The caller. Established once per connection, never re-read from
/// headers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Identity {
    pub user: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

impl Identity {
    pub fn new(
        user: impl Into<String>,
        groups: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Identity {
            user: user.into(),
            groups: groups.into_iter().map(Into::into).collect(),
        }
    }

    /// The policy subjects this identity speaks as, user first:
    /// `user:alice`, `group:developer`, ... The prefixes keep a person
    /// called `admin` apart from the role `admin` (certificate names
    /// cannot contain `:`).
    pub fn subjects(&self) -> impl Iterator<Item = String> + '_ {
        std::iter::once(format!("{USER_PREFIX}{}", self.user))
            .chain(self.groups.iter().map(|g| format!("{GROUP_PREFIX}{g}")))
    }
}

/// How a policy names a user: `user:alice`.
pub const USER_PREFIX: &str = "user:";
/// How a policy names a group: `group:developer`.
pub const GROUP_PREFIX: &str = "group:";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_prefixed_user_first() {
        let who = Identity::new("admin", ["developer", "ops"]);
        assert_eq!(
            who.subjects().collect::<Vec<_>>(),
            vec!["user:admin", "group:developer", "group:ops"]
        );
    }
}
