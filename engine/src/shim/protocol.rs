//! What the engine and a container's shim say to each other, and the files
//! the shim leaves for the engine.
//!
//! The control socket takes one JSON request per connection and answers
//! with one JSON line; an `Exec` connection then carries the process's
//! streams. The attach socket takes one JSON [`AttachHeader`] line and then
//! carries the container's streams: Docker's 8-byte-header frames when the
//! container has no TTY, raw bytes when it has one, and client bytes toward
//! the container's stdin.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Start the created container's process.
    Start,
    /// Send a signal to the container's init process.
    Kill {
        signal: i32,
    },
    /// Answer once the container has exited.
    Wait,
    /// The shim's view of the container now.
    State,
    Resize {
        height: u16,
        width: u16,
    },
    Pause,
    Resume,
    /// Run a process in the running container; the connection becomes its streams.
    Exec(ExecRequest),
    ExecResize {
        id: String,
        height: u16,
        width: u16,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecRequest {
    pub id: String,
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    /// `name`, `uid`, `name:group` or `uid:gid`; empty means the container's user.
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub working_dir: String,
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub stdin: bool,
    #[serde(default)]
    pub privileged: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Ok,
    Error { message: String },
    State(ShimState),
    Exited(ExitStatus),
}

/// The first line on the attach socket.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AttachHeader {
    #[serde(default)]
    pub stdin: bool,
    #[serde(default)]
    pub stdout: bool,
    #[serde(default)]
    pub stderr: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Paused,
    Exited,
}

/// `shim.json` in the container's directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShimState {
    pub status: Status,
    pub shim_pid: i32,
    /// The container's init process, as the host sees it.
    pub pid: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: time::OffsetDateTime,
}

/// `exit.json` in the container's directory: how the last run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitStatus {
    pub exit_code: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: time::OffsetDateTime,
    #[serde(default)]
    pub oom_killed: bool,
    /// Set when the container could not be started at all.
    #[serde(default)]
    pub error: String,
}

/// `execs/<id>.json`: how an exec'd process ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecExit {
    pub exit_code: i32,
    #[serde(default)]
    pub error: String,
}

/// Docker's stream frame: `[stream, 0, 0, 0, len (u32, big-endian)]` + payload.
pub fn frame(stream: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + payload.len());
    out.push(stream);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_json() {
        let json = serde_json::to_string(&Request::Kill { signal: 15 }).unwrap();
        assert_eq!(json, r#"{"op":"kill","signal":15}"#);
        let back: Request = serde_json::from_str(r#"{"op":"start"}"#).unwrap();
        assert_eq!(back, Request::Start);
    }

    #[test]
    fn frames_carry_stream_and_length() {
        assert_eq!(
            frame(STDERR, b"hi"),
            vec![2, 0, 0, 0, 0, 0, 0, 2, b'h', b'i']
        );
    }
}
