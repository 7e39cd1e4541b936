//! A real registry for the tests: Debian's `docker-registry` (distribution
//! 2.8) on 127.0.0.1, its configuration and storage in a temporary
//! directory, anonymous, behind htpasswd Basic auth, or served over TLS
//! behind a token service (Docker Hub's flow; the service is a thread
//! here, signing RS256 tokens with `openssl`); stopped on drop.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RegistryProcess {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
    token_service: Option<TokenService>,
}

/// How the registry wants callers authenticated.
#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    Htpasswd(&'a str, &'a str),
    Token(&'a str, &'a str),
}

impl RegistryProcess {
    /// A registry anyone may pull from and push to.
    pub fn anonymous() -> RegistryProcess {
        RegistryProcess::start(Auth::None)
    }

    /// A registry that wants `user` / `password` (Basic, bcrypt htpasswd).
    pub fn with_login(user: &str, password: &str) -> RegistryProcess {
        RegistryProcess::start(Auth::Htpasswd(user, password))
    }

    /// A registry served over TLS (a self-signed certificate) that wants
    /// Bearer tokens from a token service, which gives them to `user` /
    /// `password` (and to the refresh tokens it handed out), and tokens
    /// granting nothing to anonymous callers.
    pub fn with_token_service(user: &str, password: &str) -> RegistryProcess {
        RegistryProcess::start(Auth::Token(user, password))
    }

    fn start(auth: Auth) -> RegistryProcess {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut config = format!(
            "version: 0.1\n\
             log:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: moat-test\n",
            dir.path().join("storage").display()
        );
        let mut token_service = None;
        if let Auth::Token(user, password) = auth {
            let (tls_key, tls_crt) = self_signed(
                dir.path(),
                "tls",
                "/CN=127.0.0.1",
                &["-addext", "subjectAltName=IP:127.0.0.1"],
            );
            let (token_key, token_crt) =
                self_signed(dir.path(), "token", "/CN=moat-test-token", &[]);
            let service = TokenService::start(user, password, &token_key, &token_crt);
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n\
                 auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: moat-test-registry\n    issuer: moat-test-issuer\n    rootcertbundle: {}\n",
                tls_crt.display(),
                tls_key.display(),
                service.port,
                token_crt.display()
            ));
            token_service = Some(service);
        }
        if let Auth::Htpasswd(user, password) = auth {
            let htpasswd = dir.path().join("htpasswd");
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("htpasswd (apache2-utils)");
            assert!(out.status.success(), "htpasswd failed");
            std::fs::write(&htpasswd, &out.stdout).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: moat-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let registry = RegistryProcess {
            dir,
            port,
            child: Some(child),
            token_service,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                panic!("the registry did not start: {}", registry.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Where the registry keeps blob `sha256:<hex>`.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    pub fn storage(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(service) = self.token_service.take() {
            service.stop();
        }
    }
}

/// An RSA key and a self-signed certificate for `subject`, by openssl.
fn self_signed(dir: &Path, name: &str, subject: &str, extra: &[&str]) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("{name}.key"));
    let crt = dir.join(format!("{name}.crt"));
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", subject,
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .args(extra)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (key, crt)
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A token service as distribution's `auth.token` expects one: `GET
/// /token?service=&scope=...` with Basic credentials (or none), and
/// OAuth2's `POST /token` with a refresh token; answers RS256 JWTs whose
/// `x5c` is the certificate the registry trusts.
struct TokenService {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TokenService {
    fn start(user: &str, password: &str, key: &Path, crt: &Path) -> TokenService {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(crt)
            .output()
            .unwrap()
            .stdout;
        let state = TokenState {
            basic: format!(
                "Basic {}",
                base64(format!("{user}:{password}").as_bytes(), false)
            ),
            user: user.to_owned(),
            key: key.to_path_buf(),
            x5c: base64(&der, false),
            refresh: std::sync::Mutex::new(Vec::new()),
        };
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(300);
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = state.answer(stream);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        TokenService {
            port,
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct TokenState {
    basic: String,
    user: String,
    key: PathBuf,
    x5c: String,
    refresh: std::sync::Mutex<Vec<String>>,
}

impl TokenState {
    fn answer(&self, mut stream: std::net::TcpStream) -> std::io::Result<()> {
        use std::io::{BufRead, BufReader, Read, Write};
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut request_line = String::new();
        reader.read_line(&mut request_line)?;
        let mut authorization = None;
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                match name.to_ascii_lowercase().as_str() {
                    "authorization" => authorization = Some(value.trim().to_owned()),
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    _ => {}
                }
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body)?;
        let mut parts = request_line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let query = target.split_once('?').map_or("", |(_, q)| q);
        let params: Vec<(String, String)> = match method {
            "POST" => form(&String::from_utf8_lossy(&body)),
            _ => form(query),
        };
        let get = |key: &str| {
            params
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        let scopes: Vec<String> = params
            .iter()
            .filter(|(k, _)| k == "scope")
            .map(|(_, v)| v.clone())
            .collect();
        // Who is asking: the password, a refresh token handed out, or nobody.
        let (allowed, subject) = match method {
            "POST" => {
                let known = get("grant_type").as_deref() == Some("refresh_token")
                    && get("refresh_token")
                        .is_some_and(|t| self.refresh.lock().unwrap().contains(&t));
                (known, known)
            }
            _ => match &authorization {
                Some(auth) => (auth == &self.basic, auth == &self.basic),
                None => (true, false),
            },
        };
        if !allowed {
            let body = r#"{"details":"incorrect username or password"}"#;
            return write!(
                stream,
                "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
        let access: Vec<serde_json::Value> = if subject {
            scopes
                .iter()
                .filter_map(|scope| {
                    let mut parts = scope.splitn(3, ':');
                    let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                    Some(serde_json::json!({
                        "type": kind,
                        "name": name,
                        "actions": actions.split(',').collect::<Vec<_>>(),
                    }))
                })
                .collect()
        } else {
            Vec::new()
        };
        let token = self.sign(&serde_json::json!({
            "iss": "moat-test-issuer",
            "sub": if subject { self.user.as_str() } else { "" },
            "aud": get("service").unwrap_or_default(),
            "exp": now() + 300,
            "nbf": now() - 10,
            "iat": now(),
            "jti": super::random_hex(8),
            "access": access,
        }));
        let mut answer = serde_json::json!({ "token": token, "expires_in": 300 });
        if subject && get("offline_token").as_deref() == Some("true") {
            let refresh = format!("refresh-{}", super::random_hex(8));
            self.refresh.lock().unwrap().push(refresh.clone());
            answer["refresh_token"] = refresh.into();
        }
        let body = answer.to_string();
        write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        stream.flush()
    }

    fn sign(&self, claims: &serde_json::Value) -> String {
        use std::io::Write;
        let header = serde_json::json!({ "typ": "JWT", "alg": "RS256", "x5c": [self.x5c] });
        let input = format!(
            "{}.{}",
            base64(header.to_string().as_bytes(), true),
            base64(claims.to_string().as_bytes(), true)
        );
        let mut child = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&self.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let signature = child.wait_with_output().unwrap().stdout;
        format!("{input}.{}", base64(&signature, true))
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `a=1&b=x%3Ay` → pairs, percent-decoded.
fn form(text: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                    out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                    i += 3;
                }
                b'+' => {
                    out.push(b' ');
                    i += 1;
                }
                b => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// Base64 (standard with padding, or URL-safe without for JWTs).
fn base64(bytes: &[u8], url: bool) -> String {
    let alphabet: &[u8] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = (chunk[0] as u32) << 16
            | (*chunk.get(1).unwrap_or(&0) as u32) << 8
            | *chunk.get(2).unwrap_or(&0) as u32;
        for i in 0..=chunk.len() {
            out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
        if !url {
            out.push_str(&"=".repeat(3 - chunk.len()));
        }
    }
    out
}
