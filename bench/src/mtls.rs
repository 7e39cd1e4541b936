//! The client side of the gateway scenarios, the same code for every
//! server so the client costs the same on each side of a comparison: one
//! HTTP/1.1 connection kept alive, over mutual TLS (rustls, configured by
//! `moat_certs::tls::client_config`) or over the engine's Unix socket,
//! each request written whole and each response read by its framing; and
//! a TLS handshake on its own, on a fresh connection.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::{ClientConfig, ClientConnection, HandshakeKind, StreamOwned};
use rustls_pki_types::ServerName;

/// The client configuration for a bundle written by `moat certs issue
/// --out DIR` (`ca.pem`, `cert.pem`, `key.pem`). rustls' default keeps
/// sessions for resumption; `resume: false` turns that off, so every
/// handshake is a full one.
pub fn client_config(bundle: &Path, resume: bool) -> Arc<ClientConfig> {
    let read = |name: &str| {
        let path = bundle.join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let config =
        moat_certs::tls::client_config(&read("ca.pem"), &read("cert.pem"), &read("key.pem"))
            .expect("client TLS configuration");
    if resume {
        return config;
    }
    let mut config = (*config).clone();
    config.resumption = Resumption::disabled();
    Arc::new(config)
}

fn tls_error(err: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err)
}

/// A response: its status and its body.
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// An HTTP/1.1 connection kept alive across requests.
pub struct Http<S> {
    stream: S,
    /// Bytes read past the end of the last response.
    buf: Vec<u8>,
}

pub type TlsHttp = Http<StreamOwned<ClientConnection, TcpStream>>;

/// A mutual-TLS connection to `addr`, its handshake done (so the first
/// call timed is a call, not a handshake).
pub fn tls(addr: SocketAddr, config: Arc<ClientConfig>) -> io::Result<TlsHttp> {
    let mut tcp = TcpStream::connect(addr)?;
    tcp.set_nodelay(true)?;
    let mut conn = ClientConnection::new(config, ServerName::from(addr.ip())).map_err(tls_error)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)?;
    }
    Ok(Http::new(StreamOwned::new(conn, tcp)))
}

impl TlsHttp {
    /// Whether the handshake was full or resumed.
    pub fn handshake_kind(&self) -> Option<HandshakeKind> {
        self.stream.conn.handshake_kind()
    }
}

/// A connection to a Unix socket.
pub fn unix(path: &Path) -> io::Result<Http<UnixStream>> {
    Ok(Http::new(UnixStream::connect(path)?))
}

impl<S: Read + Write> Http<S> {
    fn new(stream: S) -> Http<S> {
        Http {
            stream,
            buf: Vec::with_capacity(16 * 1024),
        }
    }

    pub fn get(&mut self, path: &str) -> io::Result<Response> {
        write!(self.stream, "GET {path} HTTP/1.1\r\nHost: moat\r\n\r\n")?;
        self.stream.flush()?;
        self.read_response()
    }

    /// Reads more bytes onto the buffer; the connection ending is an error
    /// (every response here has a length).
    fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Fills until the buffer holds at least `len` bytes.
    fn fill_to(&mut self, len: usize) -> io::Result<()> {
        while self.buf.len() < len {
            self.fill()?;
        }
        Ok(())
    }

    fn read_response(&mut self) -> io::Result<Response> {
        let (head_len, status, framing) = loop {
            if let Some(head) = parse_head(&self.buf)? {
                break head;
            }
            self.fill()?;
        };
        let (body, end) = match framing {
            Framing::Length(len) => {
                self.fill_to(head_len + len)?;
                (self.buf[head_len..head_len + len].to_vec(), head_len + len)
            }
            Framing::Chunked => self.read_chunked(head_len)?,
        };
        self.buf.drain(..end);
        Ok(Response { status, body })
    }

    /// A chunked body starting at `start`; no trailers (none of the
    /// servers measured sends any).
    fn read_chunked(&mut self, start: usize) -> io::Result<(Vec<u8>, usize)> {
        let mut body = Vec::new();
        let mut at = start;
        loop {
            let (size_len, size) = loop {
                match httparse::parse_chunk_size(&self.buf[at..]) {
                    Ok(httparse::Status::Complete((n, size))) => break (n, size as usize),
                    Ok(httparse::Status::Partial) => self.fill()?,
                    Err(_) => return Err(io::ErrorKind::InvalidData.into()),
                }
            };
            at += size_len;
            self.fill_to(at + size + 2)?;
            body.extend_from_slice(&self.buf[at..at + size]);
            at += size + 2;
            if size == 0 {
                return Ok((body, at));
            }
        }
    }
}

enum Framing {
    Length(usize),
    Chunked,
}

/// The head's length, the status and the body's framing, once the buffer
/// holds the whole head.
fn parse_head(buf: &[u8]) -> io::Result<Option<(usize, u16, Framing)>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
    };
    let status = response.code.unwrap_or(0);
    let mut framing = Framing::Length(0);
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let len = std::str::from_utf8(header.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or(io::ErrorKind::InvalidData)?;
            framing = Framing::Length(len);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding")
            && header.value.eq_ignore_ascii_case(b"chunked")
        {
            framing = Framing::Chunked;
        }
    }
    Ok(Some((head_len, status, framing)))
}

/// What one handshake was.
pub struct Handshake {
    pub kind: HandshakeKind,
    /// The key exchange group negotiated (`X25519`, ...).
    pub group: Option<rustls::NamedGroup>,
}

/// Connects, completes a TLS handshake, says goodbye (close_notify) and
/// reads until the server closes. By then the server has processed the
/// client's whole flight (its certificate, the certificate's verification
/// against the CA and CRL, its Finished), and the session tickets it sent
/// are stored for resumption; a server that refused the certificate
/// answers with an alert instead, which is an error here.
pub fn handshake(addr: SocketAddr, config: &Arc<ClientConfig>) -> io::Result<Handshake> {
    let mut tcp = TcpStream::connect(addr)?;
    tcp.set_nodelay(true)?;
    let mut conn =
        ClientConnection::new(config.clone(), ServerName::from(addr.ip())).map_err(tls_error)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)?;
    }
    conn.send_close_notify();
    while conn.wants_write() {
        conn.write_tls(&mut tcp)?;
    }
    loop {
        if conn.read_tls(&mut tcp)? == 0 {
            break;
        }
        if conn
            .process_new_packets()
            .map_err(tls_error)?
            .peer_has_closed()
        {
            break;
        }
    }
    Ok(Handshake {
        kind: conn.handshake_kind().unwrap_or(HandshakeKind::Full),
        group: conn.negotiated_key_exchange_group().map(|g| g.name()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A canned server: what it will send, and what it was sent.
    struct Canned {
        input: io::Cursor<Vec<u8>>,
        sent: Vec<u8>,
    }

    impl Read for Canned {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            // Two bytes at a time, so every partial state is exercised.
            let n = buf.len().min(2);
            self.input.read(&mut buf[..n])
        }
    }

    impl Write for Canned {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.sent.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn responses_are_read_by_their_framing_on_one_connection() {
        let input = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK\
            HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n[1,\r\n2\r\n2]\r\n0\r\n\r\n\
            HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
        let mut http = Http::new(Canned {
            input: io::Cursor::new(input.to_vec()),
            sent: Vec::new(),
        });
        let first = http.get("/_ping").unwrap();
        assert_eq!((first.status, first.body.as_slice()), (200, &b"OK"[..]));
        let second = http.get("/containers/json").unwrap();
        assert_eq!(
            (second.status, second.body.as_slice()),
            (200, &b"[1,2]"[..])
        );
        let third = http.get("/nothing").unwrap();
        assert_eq!((third.status, third.body.len()), (404, 0));
        assert!(http.get("/_ping").is_err(), "the connection has ended");
        let sent = String::from_utf8(http.stream.sent).unwrap();
        assert!(sent.starts_with("GET /_ping HTTP/1.1\r\nHost: moat\r\n\r\nGET /containers/json"));
    }
}
