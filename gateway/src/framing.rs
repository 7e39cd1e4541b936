//! What hyper does not show: whether a request arrived with both
//! `Content-Length` and `Transfer-Encoding`. hyper follows RFC 9112 and
//! quietly reads such a request as chunked, dropping the Content-Length;
//! moat refuses it instead, since a request two parsers can frame two
//! ways is how smuggling starts. This module watches the raw bytes of a
//! connection, follows its request framing (heads parsed with httparse,
//! as hyper parses them; bodies skipped by length or chunk by chunk) and
//! records, for each request head in order, whether it was ambiguous.
//! hyper serves HTTP/1.1 requests one at a time, in order, so the n-th
//! call the service sees is the n-th head seen here.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// The largest request head followed; hyper's own limit is lower.
const MAX_HEAD: usize = 64 * 1024;

/// What the framing of one request head was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Clear,
    /// Both Content-Length and Transfer-Encoding.
    Ambiguous,
    /// The watcher lost track of the connection's framing; the call is
    /// refused rather than judged blind.
    Unknown,
}

/// The heads seen on one connection and not yet claimed by a call.
#[derive(Clone, Default)]
pub struct Heads(Arc<Mutex<VecDeque<Framing>>>);

impl Heads {
    /// The framing of the next request the service handles.
    pub fn next(&self) -> Framing {
        self.0
            .lock()
            .expect("framing lock")
            .pop_front()
            .unwrap_or(Framing::Unknown)
    }

    fn push(&self, framing: Framing) {
        self.0.lock().expect("framing lock").push_back(framing);
    }
}

enum State {
    Head(Vec<u8>),
    Fixed(u64),
    ChunkSize(Vec<u8>),
    ChunkData(u64),
    ChunkEnd(u8),
    Trailers(Vec<u8>),
    Lost,
}

/// Follows the bytes a client sends.
pub struct Watcher {
    state: State,
    heads: Heads,
}

impl Watcher {
    pub fn new(heads: Heads) -> Watcher {
        Watcher {
            state: State::Head(Vec::new()),
            heads,
        }
    }

    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let (state, used) = match std::mem::replace(&mut self.state, State::Lost) {
                State::Lost => return,
                State::Head(mut head) => {
                    let start = head.len().saturating_sub(3);
                    head.extend_from_slice(bytes);
                    match find(&head[start..], b"\r\n\r\n") {
                        None if head.len() > MAX_HEAD => (State::Lost, bytes.len()),
                        None => (State::Head(head), bytes.len()),
                        Some(at) => {
                            let end = start + at + 4;
                            let used = bytes.len() - (head.len() - end);
                            (self.head(&head[..end]), used)
                        }
                    }
                }
                State::Fixed(left) => {
                    let used = left.min(bytes.len() as u64);
                    let next = if left == used {
                        State::Head(Vec::new())
                    } else {
                        State::Fixed(left - used)
                    };
                    (next, used as usize)
                }
                State::ChunkSize(mut line) => match bytes.iter().position(|&b| b == b'\n') {
                    None if line.len() + bytes.len() > 1024 => (State::Lost, bytes.len()),
                    None => {
                        line.extend_from_slice(bytes);
                        (State::ChunkSize(line), bytes.len())
                    }
                    Some(at) => {
                        line.extend_from_slice(&bytes[..at]);
                        let text = String::from_utf8_lossy(&line);
                        let size = text.split(';').next().unwrap_or("").trim();
                        let next = match u64::from_str_radix(size, 16) {
                            Ok(0) => State::Trailers(Vec::new()),
                            Ok(n) => State::ChunkData(n),
                            Err(_) => State::Lost,
                        };
                        (next, at + 1)
                    }
                },
                State::ChunkData(left) => {
                    let used = left.min(bytes.len() as u64);
                    let next = if left == used {
                        State::ChunkEnd(2)
                    } else {
                        State::ChunkData(left - used)
                    };
                    (next, used as usize)
                }
                State::ChunkEnd(left) => {
                    let used = (left as usize).min(bytes.len());
                    let next = if left as usize == used {
                        State::ChunkSize(Vec::new())
                    } else {
                        State::ChunkEnd(left - used as u8)
                    };
                    (next, used)
                }
                State::Trailers(mut line) => match bytes.iter().position(|&b| b == b'\n') {
                    None if line.len() + bytes.len() > MAX_HEAD => (State::Lost, bytes.len()),
                    None => {
                        line.extend_from_slice(bytes);
                        (State::Trailers(line), bytes.len())
                    }
                    Some(at) => {
                        line.extend_from_slice(&bytes[..at]);
                        let blank = line.iter().all(|&b| b == b'\r');
                        let next = if blank {
                            State::Head(Vec::new())
                        } else {
                            State::Trailers(Vec::new())
                        };
                        (next, at + 1)
                    }
                },
            };
            self.state = state;
            bytes = &bytes[used..];
        }
    }

    /// Reads one complete head, records its framing, and says what follows.
    fn head(&mut self, head: &[u8]) -> State {
        // Empty lines before a request are allowed (RFC 9112 §2.2).
        let trimmed = {
            let mut h = head;
            while let [b'\r', b'\n', rest @ ..] | [b'\n', rest @ ..] = h {
                h = rest;
            }
            h
        };
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(trimmed) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => {
                self.heads.push(Framing::Unknown);
                return State::Lost;
            }
        }
        let mut length: Option<u64> = None;
        let mut chunked = false;
        let mut te = false;
        for header in request.headers.iter() {
            if header.name.eq_ignore_ascii_case("content-length") {
                match std::str::from_utf8(header.value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                {
                    Some(n) => length = Some(n),
                    None => {
                        self.heads.push(Framing::Unknown);
                        return State::Lost;
                    }
                }
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                te = true;
                chunked = header
                    .value
                    .rsplit(|&b| b == b',')
                    .next()
                    .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            }
        }
        if te && length.is_some() {
            self.heads.push(Framing::Ambiguous);
        } else {
            self.heads.push(Framing::Clear);
        }
        match (te, chunked, length) {
            (true, true, _) => State::ChunkSize(Vec::new()),
            (true, false, _) => State::Lost,
            (false, _, Some(n)) if n > 0 => State::Fixed(n),
            _ => State::Head(Vec::new()),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heads_of(chunks: &[&[u8]]) -> Vec<Framing> {
        let heads = Heads::default();
        let mut watcher = Watcher::new(heads.clone());
        for chunk in chunks {
            watcher.feed(chunk);
        }
        let mut out = Vec::new();
        while let Some(f) = heads.0.lock().unwrap().pop_front() {
            out.push(f);
        }
        out
    }

    #[test]
    fn follows_fixed_and_chunked_bodies_to_the_next_head() {
        let stream = b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\
GET /b HTTP/1.1\r\nHost: x\r\n\r\n\
POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nGET /\r\n4\r\n\r\n\r\n\r\n0\r\nT: v\r\n\r\n\
POST /d HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let expected = vec![
            Framing::Clear,
            Framing::Clear,
            Framing::Clear,
            Framing::Ambiguous,
        ];
        assert_eq!(heads_of(&[stream]), expected);
        // The same bytes one at a time.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(heads_of(&bytes), expected);
    }

    #[test]
    fn a_body_that_looks_like_a_request_is_not_one() {
        let stream = b"POST /a HTTP/1.1\r\nContent-Length: 40\r\n\r\nGET /x HTTP/1.1\r\nContent-Length: 1\r\n\r\nzzzz";
        assert_eq!(heads_of(&[stream]), vec![Framing::Clear]);
    }

    #[test]
    fn garbage_loses_track_and_says_so() {
        assert_eq!(
            heads_of(&[b"\x00\x01 nonsense\r\n\r\n"]),
            vec![Framing::Unknown]
        );
        let heads = Heads::default();
        assert_eq!(heads.next(), Framing::Unknown);
    }
}
