//! The names that go into a client certificate's subject.
//!
//! The gateway takes the common name as the user and each organization as a
//! group, so a name must mean exactly one thing to every tool that reads it:
//! no characters that a distinguished-name parser treats as syntax (`,` `=`
//! `+` `/`), no control characters, no white space, nothing empty or long.

use crate::PkiError;

/// RFC 5280's upper bound for a common name, and a sane one for groups.
pub const MAX_NAME_LEN: usize = 64;

/// A validated user and the groups they belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub user: String,
    pub groups: Vec<String>,
}

impl Subject {
    pub fn new(user: &str, groups: &[String]) -> Result<Subject, PkiError> {
        validate("user name", user)?;
        let mut unique: Vec<String> = Vec::with_capacity(groups.len());
        for group in groups {
            validate("group name", group)?;
            if !unique.contains(group) {
                unique.push(group.clone());
            }
        }
        Ok(Subject {
            user: user.to_owned(),
            groups: unique,
        })
    }
}

/// Letters, digits, and `.` `_` `-` `@`, starting with a letter or digit.
pub fn validate(what: &'static str, value: &str) -> Result<(), PkiError> {
    let fail = |reason: String| PkiError::InvalidName {
        what,
        value: value.to_owned(),
        reason,
    };
    if value.is_empty() {
        return Err(fail("must not be empty".into()));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(fail(format!(
            "{} bytes long, at most {MAX_NAME_LEN} allowed",
            value.len()
        )));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@')))
    {
        let shown = if bad.is_control() || bad.is_whitespace() {
            format!("{:?}", bad.escape_default().to_string())
        } else {
            format!("'{bad}'")
        };
        return Err(fail(format!(
            "character {shown} is not allowed (use letters, digits, '.', '_', '-', '@')"
        )));
    }
    if !value.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(fail("must start with a letter or digit".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for name in ["alice", "bob.smith", "ci-bot_2", "alice@example.com", "a"] {
            validate("user name", name).unwrap();
        }
    }

    #[test]
    fn refuses_names_that_change_a_subject() {
        let long = "x".repeat(MAX_NAME_LEN + 1);
        for name in [
            "",
            "a,O=admin",
            "a=b",
            "a/b",
            "a+b",
            "a\nb",
            "a\0b",
            " alice",
            "al ice",
            "-alice",
            ".",
            "ålice",
            &long,
        ] {
            let err = validate("user name", name).unwrap_err();
            assert!(matches!(err, PkiError::InvalidName { .. }), "{name:?}");
        }
    }

    #[test]
    fn groups_are_deduplicated_in_order() {
        let s = Subject::new("alice", &["dev".into(), "ops".into(), "dev".into()]).unwrap();
        assert_eq!(s.groups, vec!["dev", "ops"]);
    }
}
