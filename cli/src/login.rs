//! The team member's side: `moat login` (enroll with a one-time token, or
//! renew with the certificate one has), `moat whoami` and `moat env`.
//!
//! The private key is made here and never leaves this machine; the
//! gateway's enrollment port takes a CSR and the token, and the signer
//! behind it decides who the certificate names (the token's user and
//! groups). What `login` saves is a plain Docker client bundle (`ca.pem`,
//! `cert.pem`, `key.pem`) plus `login.json` (where the gateway is), and a
//! docker context that points at the gateway with it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use clap::Args;
use moat_certs::CertSummary;
use moat_certs::enroll::{key_and_csr, pin_matches};
use moat_certs::inspect::fingerprint;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;

use crate::certs::{DEFAULT_ENROLL_PORT, Output, OutputArg, rfc3339};
use crate::https::{self, Endpoint};

/// The gateway's mutual-TLS port, when an address names none.
const DEFAULT_GATEWAY_PORT: u16 = 2376;
const LOGIN_FILE: &str = "login.json";
/// The files `login` owns in its directory; it replaces nothing else.
const BUNDLE_FILES: [&str; 4] = ["ca.pem", "cert.pem", "key.pem", LOGIN_FILE];

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    moat login https://moat.example.com:2377 --token TOKEN --ca-pin sha256:3f1c...   # first time\n  \
    moat login                                                                        # renew\n  \
    docker --context moat ps\n\n\
    The admin prints the first line with `moat certs token USER --group GROUP`.\n\
    Run without a token, it renews the saved certificate once a third or less of\n\
    its lifetime is left (--force: now). A new key is made each time.")]
pub struct LoginArgs {
    /// The gateway's enrollment address, https://HOST:PORT (not needed to renew)
    #[arg(value_name = "URL")]
    url: Option<String>,
    /// The one-time token from the admin (or set MOAT_LOGIN_TOKEN, which
    /// other users cannot read from the process list)
    #[arg(long, env = "MOAT_LOGIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The SHA-256 fingerprint of moat's CA, as the admin's line gives it
    #[arg(long, value_name = "sha256:HEX", conflicts_with = "ca")]
    ca_pin: Option<String>,
    /// moat's CA certificate, if you have it already (instead of --ca-pin)
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Where to keep the bundle [default: ~/.moat]
    #[arg(long, env = "MOAT_BUNDLE", value_name = "DIR")]
    out: Option<PathBuf>,
    /// The docker context to create or update [default: the saved one, else moat]
    #[arg(long, value_name = "NAME", conflicts_with = "no_context")]
    context: Option<String>,
    /// Do not create or update a docker context
    #[arg(long)]
    no_context: bool,
    /// Renew even though the certificate has plenty of time left
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    output: OutputArg,
}

#[derive(Args)]
pub struct BundleArgs {
    /// The bundle `moat login` saved [default: ~/.moat]
    #[arg(long, env = "MOAT_BUNDLE", value_name = "DIR")]
    bundle: Option<PathBuf>,
}

/// `login.json`: where the saved bundle is used.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LoginFile {
    /// The gateway, as `DOCKER_HOST` wants it: `tcp://HOST:PORT`.
    docker_host: String,
    /// The enrollment address the bundle came from.
    #[serde(default)]
    enroll_url: Option<String>,
    /// The docker context made for it, if any.
    #[serde(default)]
    context: Option<String>,
}

/// The gateway's answer to enroll and renew.
#[derive(Debug, Deserialize)]
struct Enrolled {
    cert: String,
    ca: String,
    user: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    not_after: OffsetDateTime,
    /// Where the gateway's mutual-TLS port is; a renewal, made there, may
    /// leave it out.
    #[serde(default)]
    docker_host: Option<String>,
}

/// A bundle on disk.
struct Saved {
    dir: PathBuf,
    login: LoginFile,
    ca: String,
    cert: String,
    key: String,
    summary: CertSummary,
}

pub fn login(args: LoginArgs) -> Result<()> {
    let dir = bundle_dir(args.out.clone())?;
    match args.token.clone() {
        Some(token) => enroll(&args, &dir, token.trim()),
        None => renew(&args, &dir),
    }
}

fn enroll(args: &LoginArgs, dir: &Path, token: &str) -> Result<()> {
    let Some(url) = &args.url else {
        bail!(
            "enrolling needs the gateway's enrollment address: moat login https://HOST:PORT --token ..."
        );
    };
    let endpoint = Endpoint::parse(url, &["https"], DEFAULT_ENROLL_PORT)?;
    let ca = match (&args.ca, &args.ca_pin) {
        (Some(file), _) => {
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
        }
        (None, Some(pin)) => fetch_pinned_ca(&endpoint, pin)?,
        (None, None) => bail!(
            "give --ca-pin sha256:... (from the admin's `moat certs token` line) or --ca FILE: \
             without one, anyone between you and the gateway could pose as it"
        ),
    };
    let (key, csr) = key_and_csr()?;
    let answer = https::request(
        &endpoint,
        https::trusting(&ca)?,
        "POST",
        "/moat/v1/enroll",
        Some(&json!({ "token": token, "csr": csr })),
    )?
    .json::<Enrolled>("enrollment")?;
    if ca_fingerprint(&answer.ca)? != ca_fingerprint(&ca)? {
        bail!("the gateway answered with another CA than the one pinned; nothing was saved");
    }
    let context = if args.no_context {
        None
    } else {
        Some(args.context.clone().unwrap_or_else(|| "moat".to_owned()))
    };
    let Some(docker_host) = answer.docker_host.clone() else {
        bail!("the gateway's answer does not say where its mutual-TLS port is (docker_host)");
    };
    let login = LoginFile {
        docker_host,
        enroll_url: Some(format!("https://{}", endpoint.authority())),
        context,
    };
    save(dir, &login, &answer, &key, args.output.output, "Logged in")
}

fn renew(args: &LoginArgs, dir: &Path) -> Result<()> {
    let saved = load(dir).with_context(|| {
        format!(
            "no saved login to renew in {} (the first login needs --token and --ca-pin from your admin)",
            dir.display()
        )
    })?;
    let now = OffsetDateTime::now_utc();
    let cert = &saved.summary;
    if now >= cert.not_after {
        bail!(
            "your certificate expired at {}; ask your admin for a new token (moat certs token {})",
            rfc3339(cert.not_after),
            cert.common_name
        );
    }
    let lifetime = cert.not_after - cert.not_before;
    let left = cert.not_after - now;
    if left * 3 > lifetime && !args.force {
        println!(
            "{} is logged in until {} ({} left); nothing to renew yet (--force renews now).",
            cert.common_name,
            rfc3339(cert.not_after),
            hours_minutes(left)
        );
        return Ok(());
    }
    let endpoint = gateway(&saved.login)?;
    let (key, csr) = key_and_csr()?;
    let answer = https::request(
        &endpoint,
        https::with_bundle(&saved.ca, &saved.cert, &saved.key)?,
        "POST",
        "/moat/v1/renew",
        Some(&json!({ "csr": csr })),
    )?
    .json::<Enrolled>("renewal")?;
    if ca_fingerprint(&answer.ca)? != ca_fingerprint(&saved.ca)? {
        bail!("the gateway answered with another CA than the saved one; nothing was saved");
    }
    let mut login = saved.login.clone();
    if let Some(docker_host) = &answer.docker_host {
        login.docker_host = docker_host.clone();
    }
    if args.no_context {
        login.context = None;
    } else if let Some(context) = &args.context {
        login.context = Some(context.clone());
    }
    save(dir, &login, &answer, &key, args.output.output, "Renewed")
}

/// Writes the bundle, points the docker context at it, and says who you are.
fn save(
    dir: &Path,
    login: &LoginFile,
    answer: &Enrolled,
    key: &str,
    output: Output,
    verb: &str,
) -> Result<()> {
    gateway(login)?;
    let der = pem::parse(&answer.cert).context("the certificate the gateway sent")?;
    let summary = CertSummary::from_der(der.contents())
        .map_err(anyhow::Error::msg)
        .context("the certificate the gateway sent")?;
    // rustls compares the certificate's public key with the key made
    // here: a gateway that sent someone else's certificate is caught now.
    https::with_bundle(&answer.ca, &answer.cert, key)
        .context("the certificate the gateway sent does not fit the key made for it")?;
    let mut login_json = serde_json::to_vec_pretty(login)?;
    login_json.push(b'\n');
    write_bundle(
        dir,
        &[
            ("ca.pem", answer.ca.as_bytes(), 0o644),
            ("cert.pem", answer.cert.as_bytes(), 0o644),
            ("key.pem", key.as_bytes(), 0o600),
            (LOGIN_FILE, &login_json, 0o644),
        ],
    )?;
    let context_made = match &login.context {
        Some(name) => match docker_context(name, &login.docker_host, dir, &answer.user) {
            Ok(()) => true,
            Err(e) => {
                eprintln!("moat login: the docker context {name:?} was not made: {e:#}");
                false
            }
        },
        None => false,
    };
    if output == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "user": answer.user,
                "groups": answer.groups,
                "serial": summary.serial,
                "not_after": rfc3339(answer.not_after),
                "docker_host": login.docker_host,
                "bundle": dir,
                "context": if context_made { login.context.clone() } else { None },
            }))?
        );
        return Ok(());
    }
    println!(
        "{verb} as {} (groups: {}) until {}.",
        answer.user,
        if answer.groups.is_empty() {
            "none".to_owned()
        } else {
            answer.groups.join(", ")
        },
        rfc3339(answer.not_after)
    );
    println!("Saved ca.pem, cert.pem and key.pem in {}.", dir.display());
    match (&login.context, context_made) {
        (Some(name), true) => println!(
            "docker context {name:?} → {}. Try: docker --context {name} ps",
            login.docker_host
        ),
        _ => println!(
            "Use it with: eval \"$(moat env --bundle {})\"",
            dir.display()
        ),
    }
    println!("Run `moat login` again to renew before it expires (no token needed).");
    Ok(())
}

pub fn whoami(args: BundleArgs, output: Output) -> Result<()> {
    let dir = bundle_dir(args.bundle)?;
    let saved = load_for_use(&dir)?;
    if OffsetDateTime::now_utc() >= saved.summary.not_after {
        bail!(
            "your certificate expired at {}; ask your admin for a new token (moat certs token {})",
            rfc3339(saved.summary.not_after),
            saved.summary.common_name
        );
    }
    let endpoint = gateway(&saved.login)?;
    let answer = https::request(
        &endpoint,
        https::with_bundle(&saved.ca, &saved.cert, &saved.key)?,
        "GET",
        "/moat/v1/whoami",
        None,
    )?
    .json::<serde_json::Value>("whoami")?;
    let mut answer = match answer {
        serde_json::Value::Object(map) => map,
        _ => bail!("whoami: the gateway's answer is not an object"),
    };
    answer.insert("not_after".into(), rfc3339(saved.summary.not_after).into());
    answer.insert("docker_host".into(), saved.login.docker_host.clone().into());
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    let list = |key: &str| {
        answer[key]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "none".to_owned())
    };
    let text = |key: &str| answer[key].as_str().unwrap_or("-").to_owned();
    let left = saved.summary.not_after - OffsetDateTime::now_utc();
    println!("user:        {}", text("user"));
    println!("groups:      {}", list("groups"));
    println!("roles:       {}", list("roles"));
    println!("auth:        {}", text("auth"));
    println!("serial:      {}", text("serial"));
    println!(
        "certificate: valid until {} ({})",
        rfc3339(saved.summary.not_after),
        if left.is_positive() {
            format!("{} left", hours_minutes(left))
        } else {
            "expired".to_owned()
        }
    );
    println!("gateway:     {}", saved.login.docker_host);
    Ok(())
}

pub fn env(args: BundleArgs) -> Result<()> {
    let dir = bundle_dir(args.bundle)?;
    let saved = load_for_use(&dir)?;
    println!(
        "export DOCKER_HOST={} DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH={}",
        shell_quote(&saved.login.docker_host),
        shell_quote(&saved.dir.to_string_lossy())
    );
    Ok(())
}

/// `--out`/`--bundle`, else `~/.moat`; absolute, because the docker
/// context and `DOCKER_CERT_PATH` outlive the current directory.
fn bundle_dir(explicit: Option<PathBuf>) -> Result<PathBuf> {
    let dir = match explicit {
        Some(dir) => dir,
        None => {
            let home = std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .context("HOME is not set; give the bundle directory with --out or --bundle")?;
            PathBuf::from(home).join(".moat")
        }
    };
    std::path::absolute(&dir).with_context(|| format!("resolving {}", dir.display()))
}

fn load(dir: &Path) -> Result<Saved> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    };
    let login: LoginFile = serde_json::from_str(&read(LOGIN_FILE)?)
        .with_context(|| format!("{} is corrupt", dir.join(LOGIN_FILE).display()))?;
    let cert = read("cert.pem")?;
    let der = pem::parse(&cert).with_context(|| format!("{}/cert.pem", dir.display()))?;
    let summary = CertSummary::from_der(der.contents())
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("{}/cert.pem", dir.display()))?;
    Ok(Saved {
        dir: dir.to_path_buf(),
        ca: read("ca.pem")?,
        key: read("key.pem")?,
        cert,
        login,
        summary,
    })
}

fn load_for_use(dir: &Path) -> Result<Saved> {
    load(dir).with_context(|| {
        format!(
            "no saved login in {} (run `moat login` with the line your admin sent)",
            dir.display()
        )
    })
}

/// `11h59m`, `42m`: how long is left, to the minute.
fn hours_minutes(d: time::Duration) -> String {
    let minutes = d.whole_minutes().max(0);
    match (minutes / 60, minutes % 60) {
        (0, m) => format!("{m}m"),
        (h, 0) => format!("{h}h"),
        (h, m) => format!("{h}h{m}m"),
    }
}

fn gateway(login: &LoginFile) -> Result<Endpoint> {
    Endpoint::parse(&login.docker_host, &["tcp"], DEFAULT_GATEWAY_PORT)
        .context("the gateway's address (docker_host)")
}

/// Fetches the CA over TLS that proves nothing, then checks it against the
/// pin: the pin, not the channel, is what makes the CA trustworthy.
fn fetch_pinned_ca(endpoint: &Endpoint, pin: &str) -> Result<String> {
    #[derive(Deserialize)]
    struct CaAnswer {
        ca: String,
    }
    let answer = https::request(endpoint, https::any_server()?, "GET", "/moat/v1/ca", None)
        .with_context(|| {
            format!(
                "is https://{} the gateway's enrollment port (2377 unless your admin says otherwise)?",
                endpoint.authority()
            )
        })?
        .json::<CaAnswer>("fetching the CA")?;
    if !pin_matches(&answer.ca, pin)? {
        bail!(
            "the CA at https://{} has fingerprint {}, not the pin {pin}: refusing to trust it \
             (a wrong address, or someone in between; ask your admin)",
            endpoint.authority(),
            ca_fingerprint(&answer.ca)?
        );
    }
    Ok(answer.ca)
}

fn ca_fingerprint(ca_pem: &str) -> Result<String> {
    let block = pem::parse(ca_pem).context("the CA certificate's PEM")?;
    Ok(fingerprint(block.contents()))
}

/// Replaces the bundle in `dir` as a whole: the files are written to a new
/// directory beside it, which is then swapped with `dir` in one
/// `renameat2(RENAME_EXCHANGE)`. A reader sees the old bundle or the new
/// one, never a new certificate with the old key.
fn write_bundle(dir: &Path, files: &[(&str, &[u8], u32)]) -> Result<()> {
    let parent = dir
        .parent()
        .with_context(|| format!("{} has no parent directory", dir.display()))?;
    let name = dir
        .file_name()
        .with_context(|| format!("{} names no directory", dir.display()))?
        .to_string_lossy()
        .into_owned();
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let exists = match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => {
            for entry in std::fs::read_dir(dir)? {
                let entry = entry?.file_name();
                if !BUNDLE_FILES.iter().any(|f| entry == *f) {
                    bail!(
                        "{} holds other files ({}); give moat login a directory of its own (--out)",
                        dir.display(),
                        entry.to_string_lossy()
                    );
                }
            }
            true
        }
        Ok(_) => bail!("{} exists and is not a directory", dir.display()),
        Err(_) => false,
    };
    let staging = parent.join(format!(".{name}.new-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    moat_certs::store::create_private_dir(&staging)?;
    let result = (|| -> Result<()> {
        for (file, contents, mode) in files {
            moat_certs::store::write_atomic(&staging.join(file), contents, *mode)?;
        }
        if exists {
            nix::fcntl::renameat2(
                None,
                &staging,
                None,
                dir,
                nix::fcntl::RenameFlags::RENAME_EXCHANGE,
            )
            .with_context(|| format!("swapping in the new bundle at {}", dir.display()))?;
        } else {
            std::fs::rename(&staging, dir)
                .with_context(|| format!("moving the bundle to {}", dir.display()))?;
        }
        std::fs::File::open(parent)?.sync_all()?;
        Ok(())
    })();
    // After a swap the staging name holds the old bundle.
    let _ = std::fs::remove_dir_all(&staging);
    result
}

/// Creates or updates docker context `name` for the bundle in `dir`.
/// docker copies the files into its own store, so a renewal updates it.
fn docker_context(name: &str, docker_host: &str, dir: &Path, user: &str) -> Result<()> {
    let dir_text = dir.to_string_lossy();
    if dir_text.contains([',', '"', '=']) {
        bail!("the path {dir_text:?} cannot be written in docker's --docker option");
    }
    let exists = Command::new("docker")
        .args(["context", "inspect", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running docker")?
        .success();
    let out = Command::new("docker")
        .args(["context", if exists { "update" } else { "create" }, name])
        .args(["--description", &format!("moat gateway as {user}")])
        .arg("--docker")
        .arg(format!(
            "host={docker_host},ca={dir_text}/ca.pem,cert={dir_text}/cert.pem,key={dir_text}/key.pem"
        ))
        .stdout(Stdio::null())
        .output()
        .context("running docker")?;
    if !out.status.success() {
        bail!(
            "docker context {}: {}",
            if exists { "update" } else { "create" },
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Single quotes around anything a shell would treat specially.
fn shell_quote(value: &str) -> String {
    if !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:@%+=,".contains(c))
    {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundle_is_swapped_whole_and_nothing_else_is_touched() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("bundle");
        write_bundle(
            &dir,
            &[("cert.pem", b"one", 0o644), ("key.pem", b"k1", 0o600)],
        )
        .unwrap();
        write_bundle(
            &dir,
            &[("cert.pem", b"two", 0o644), ("key.pem", b"k2", 0o600)],
        )
        .unwrap();
        assert_eq!(std::fs::read(dir.join("cert.pem")).unwrap(), b"two");
        assert_eq!(std::fs::read(dir.join("key.pem")).unwrap(), b"k2");
        let names: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["bundle"], "no staging directory is left behind");
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join("key.pem")), 0o600);
        assert_eq!(mode(&dir), 0o700);

        std::fs::write(dir.join("notes.txt"), "mine").unwrap();
        let err = write_bundle(&dir, &[("cert.pem", b"three", 0o644)]).unwrap_err();
        assert!(err.to_string().contains("notes.txt"), "{err}");
        assert_eq!(std::fs::read(dir.join("cert.pem")).unwrap(), b"two");
    }

    #[test]
    fn time_left() {
        assert_eq!(hours_minutes(time::Duration::minutes(719)), "11h59m");
        assert_eq!(hours_minutes(time::Duration::hours(12)), "12h");
        assert_eq!(hours_minutes(time::Duration::seconds(59)), "0m");
    }

    #[test]
    fn shell_words() {
        assert_eq!(shell_quote("tcp://10.0.0.5:2376"), "tcp://10.0.0.5:2376");
        assert_eq!(shell_quote("/home/a b/.moat"), "'/home/a b/.moat'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
