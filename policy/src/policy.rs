//! A policy: casbin's `model.conf` and moat's `policy.csv`, validated as a
//! pair, read from and written to a policy directory, or the built-in
//! default.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::enforcer;
use crate::rules::{self, RuleKind, RuleLine};

/// The model file in a policy directory.
pub const MODEL_FILE: &str = "model.conf";
/// The rules file in a policy directory.
pub const POLICY_FILE: &str = "policy.csv";

/// The model moat ships (and the only shape it accepts: see
/// `docs/policy.md`).
pub const DEFAULT_MODEL: &str = include_str!("../default/model.conf");
/// The default roles: viewer, developer, operator, admin, each bound to
/// the group of the same name.
pub const DEFAULT_POLICY: &str = include_str!("../default/policy.csv");

/// Why a policy was refused. A running gateway keeps its last good policy;
/// one starting up stops with this reason.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{POLICY_FILE} line {line}: {reason}: `{text}`")]
    Line {
        line: usize,
        text: String,
        reason: String,
    },

    #[error("{MODEL_FILE}: {reason}")]
    Model { reason: String },

    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("{} is missing (a policy directory holds {MODEL_FILE} and {POLICY_FILE})", .path.display())]
    Missing { path: PathBuf },
}

impl PolicyError {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> PolicyError + '_ {
        move |source| PolicyError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// A validated pair of `model.conf` and `policy.csv`. Holding one means
/// the enforcer will accept it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    model: String,
    text: String,
    rules: Vec<RuleLine>,
}

impl Policy {
    /// Checks a model and a policy text: the model's shape, every rule
    /// line, and that casbin builds an enforcer from them.
    pub fn from_text(model: &str, policy: &str) -> Result<Policy, PolicyError> {
        let rules = rules::parse(policy)?;
        let candidate = Policy {
            model: model.to_owned(),
            text: policy.to_owned(),
            rules,
        };
        enforcer::compile(&candidate)?;
        Ok(candidate)
    }

    /// The policy moat ships.
    pub fn builtin() -> Policy {
        Policy::from_text(DEFAULT_MODEL, DEFAULT_POLICY).expect("the built-in policy is valid")
    }

    /// Reads and validates `DIR/model.conf` and `DIR/policy.csv`.
    pub fn load_dir(dir: &Path) -> Result<Policy, PolicyError> {
        let read = |name: &str| {
            let path = dir.join(name);
            fs::read_to_string(&path).map_err(|source| match source.kind() {
                io::ErrorKind::NotFound => PolicyError::Missing { path: path.clone() },
                _ => PolicyError::Io {
                    path: path.clone(),
                    source,
                },
            })
        };
        let model = read(MODEL_FILE)?;
        let text = read(POLICY_FILE)?;
        Policy::from_text(&model, &text)
    }

    /// What the gateway does with `--policy DIR` at start-up: a missing or
    /// empty directory gets the default policy written into it; then the
    /// directory is loaded. One that exists with anything in it is never
    /// overwritten: if it does not load, the error says why (there is no
    /// fallback to the default, let alone to allowing everything).
    pub fn init_dir(dir: &Path) -> Result<Policy, PolicyError> {
        let empty = match fs::read_dir(dir) {
            Ok(mut entries) => entries.next().is_none(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o750)
                    .create(dir)
                    .map_err(PolicyError::io(dir))?;
                true
            }
            Err(source) => {
                return Err(PolicyError::Io {
                    path: dir.to_owned(),
                    source,
                });
            }
        };
        if empty {
            Policy::builtin().write_dir(dir)?;
        }
        Policy::load_dir(dir)
    }

    /// Writes the policy into `dir`, each file to a temporary name, synced,
    /// then renamed over the old one, so a crash leaves each file whole.
    /// The model is written only when it changed. A file keeps the owner
    /// of the one it replaces (a new one takes the directory's), so root
    /// editing the policy of a gateway that dropped to its own account
    /// leaves files that gateway can still read.
    pub fn write_dir(&self, dir: &Path) -> Result<(), PolicyError> {
        let model_path = dir.join(MODEL_FILE);
        if fs::read_to_string(&model_path).ok().as_deref() != Some(self.model.as_str()) {
            write_atomically(dir, MODEL_FILE, &self.model)?;
        }
        write_atomically(dir, POLICY_FILE, &self.text)?;
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(PolicyError::io(dir))
    }

    /// The `model.conf` text.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The `policy.csv` text, as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The rules, in file order.
    pub fn rules(&self) -> &[RuleLine] {
        &self.rules
    }

    /// The `p` rules, in file order: casbin's policy, index for index.
    pub(crate) fn permission_rules(&self) -> impl Iterator<Item = &RuleLine> {
        self.rules
            .iter()
            .filter(|line| matches!(line.rule, RuleKind::Permission { .. }))
    }
}

impl Default for Policy {
    fn default() -> Policy {
        Policy::builtin()
    }
}

/// Loads and checks the policy in `dir` without using it: what `moat
/// policy validate` runs, and what a reload does before it swaps.
pub fn validate(dir: &Path) -> Result<Policy, PolicyError> {
    Policy::load_dir(dir)
}

fn write_atomically(dir: &Path, name: &str, contents: &str) -> Result<(), PolicyError> {
    let path = dir.join(name);
    let temp = dir.join(format!(".{name}.tmp"));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o640)
            .open(&temp)?;
        let (uid, gid) = owner_for(&path, dir)?;
        let mine = file.metadata()?;
        if (mine.uid(), mine.gid()) != (uid, gid) {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
        }
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
        fs::rename(&temp, &path)
    })();
    result.map_err(|source| {
        let _ = fs::remove_file(&temp);
        PolicyError::Io { path, source }
    })
}

/// The owner a file written at `path` should have: that of the file it
/// replaces, else that of `dir`.
fn owner_for(path: &Path, dir: &Path) -> io::Result<(u32, u32)> {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::metadata(dir)?,
        Err(e) => return Err(e),
    };
    Ok((meta.uid(), meta.gid()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_builtin_policy_is_valid() {
        let policy = Policy::builtin();
        assert!(!policy.rules().is_empty());
        assert_eq!(policy.text(), DEFAULT_POLICY);
    }

    #[test]
    fn a_missing_or_empty_directory_gets_the_default() {
        let root = tempfile::tempdir().unwrap();
        let missing = root.path().join("a/policy");
        let policy = Policy::init_dir(&missing).unwrap();
        assert_eq!(policy, Policy::builtin());
        assert_eq!(
            fs::read_to_string(missing.join(POLICY_FILE)).unwrap(),
            DEFAULT_POLICY
        );
        let mode = fs::metadata(missing.join(POLICY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);

        let empty = root.path().join("empty");
        fs::create_dir(&empty).unwrap();
        assert_eq!(Policy::init_dir(&empty).unwrap(), Policy::builtin());
    }

    #[test]
    fn a_directory_that_does_not_load_is_an_error_not_a_default() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path();
        fs::write(dir.join("notes.txt"), "x").unwrap();
        let err = Policy::init_dir(dir).unwrap_err();
        assert!(matches!(err, PolicyError::Missing { .. }), "{err}");
        assert!(err.to_string().contains("model.conf is missing"), "{err}");
        assert!(!dir.join(MODEL_FILE).exists(), "nothing was written");

        fs::write(dir.join(MODEL_FILE), DEFAULT_MODEL).unwrap();
        fs::write(
            dir.join(POLICY_FILE),
            "p, developer, container.create, *, allow\np, developer, contianer.start, *, allow\n",
        )
        .unwrap();
        let err = Policy::init_dir(dir).unwrap_err();
        assert_eq!(
            err.to_string(),
            "policy.csv line 2: unknown permission \"contianer.start\" (see docs/policy.md for the names): \
             `p, developer, contianer.start, *, allow`"
        );
        assert!(validate(dir).is_err());
    }

    #[test]
    fn written_then_read_back() {
        let root = tempfile::tempdir().unwrap();
        let policy = Policy::from_text(DEFAULT_MODEL, "p, admin, *, *, allow\n").unwrap();
        policy.write_dir(root.path()).unwrap();
        assert_eq!(validate(root.path()).unwrap(), policy);
        let leftovers: Vec<_> = fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn a_rewritten_file_keeps_its_owner() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path();
        let owner = |name: &str| {
            let meta = fs::metadata(dir.join(name)).unwrap();
            (meta.uid(), meta.gid())
        };
        // Giving files away needs root; elsewhere there is nothing to see.
        if std::os::unix::fs::chown(dir, Some(4242), Some(4343)).is_err() {
            return;
        }
        Policy::builtin().write_dir(dir).unwrap();
        assert_eq!(
            owner(POLICY_FILE),
            (4242, 4343),
            "a new file takes the directory's owner"
        );
        std::os::unix::fs::chown(dir.join(POLICY_FILE), Some(4444), Some(4545)).unwrap();
        let policy = Policy::from_text(DEFAULT_MODEL, "p, admin, *, *, allow\n").unwrap();
        policy.write_dir(dir).unwrap();
        assert_eq!(owner(POLICY_FILE), (4444, 4545));
        assert_eq!(validate(dir).unwrap(), policy);
    }
}
