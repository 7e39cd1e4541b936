//! The state root: one directory under which every component keeps its
//! files (DESIGN.md §5).

use std::path::PathBuf;

pub struct StateRoot {
    root: PathBuf,
}

impl StateRoot {
    /// `--state-root`/`MOAT_STATE_ROOT`, else `/var/lib/moat` for root and
    /// `~/.local/state/moat` for anyone else.
    pub fn new(explicit: Option<PathBuf>) -> StateRoot {
        let root = explicit.unwrap_or_else(|| {
            if nix::unistd::geteuid().is_root() {
                PathBuf::from("/var/lib/moat")
            } else {
                let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
                PathBuf::from(home).join(".local/state/moat")
            }
        });
        StateRoot { root }
    }

    pub fn pki(&self) -> PathBuf {
        self.root.join("pki")
    }

    pub fn root(&self) -> &std::path::Path {
        &self.root
    }

    pub fn policy(&self) -> PathBuf {
        self.root.join("policy")
    }

    pub fn audit(&self) -> PathBuf {
        self.root.join("audit")
    }

    pub fn engine(&self) -> PathBuf {
        self.root.join("engine")
    }
}
