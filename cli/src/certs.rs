//! `moat certs`: the PKI from the command line.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use moat_certs::{Bundle, CertStatus, IssuedCert, Pki, PkiConfig, Subject, ttl};
use time::OffsetDateTime;

use crate::state::StateRoot;

#[derive(Subcommand)]
pub enum CertsCommand {
    /// Create the CA, the gateway's certificate, the audit key and an empty CRL
    #[command(after_help = "Example:\n  moat certs init --host moat.example.com --ip 10.0.0.5")]
    Init {
        #[command(flatten)]
        dir: DirArg,
        /// DNS name the gateway is reached by (repeatable)
        #[arg(long = "host", value_name = "NAME")]
        hosts: Vec<String>,
        /// IP address the gateway is reached by (repeatable)
        #[arg(long = "ip", value_name = "ADDR")]
        ips: Vec<IpAddr>,
        /// TTL of a client certificate when `issue` is given none
        #[arg(long, default_value = "12h", value_name = "TTL")]
        default_ttl: String,
        /// The longest TTL `issue` and `sign` accept
        #[arg(long, default_value = "30d", value_name = "TTL")]
        max_ttl: String,
    },
    /// Issue a client certificate (CN = user, one O per group) with a new key
    #[command(
        after_help = "Example:\n  moat certs issue alice --group developer --ttl 12h --out ./alice\n  \
        DOCKER_HOST=tcp://moat.example.com:2376 DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH=./alice docker ps"
    )]
    Issue {
        #[command(flatten)]
        dir: DirArg,
        /// The user: the certificate's common name
        user: String,
        /// A group (repeatable): one organization value each
        #[arg(long = "group", short = 'g', value_name = "GROUP")]
        groups: Vec<String>,
        /// Lifetime, e.g. 30m, 12h, 7d (default: the PKI's default)
        #[arg(long, value_name = "TTL")]
        ttl: Option<String>,
        /// Where to write ca.pem, cert.pem and key.pem (default: ./USER)
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Sign a certificate signing request made on the user's machine
    #[command(
        after_help = "Example (the user):\n  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \\\n    \
        -keyout key.pem -out alice.csr -subj '/CN=alice/O=developer'\n\
        Example (the admin):\n  moat certs sign alice.csr --ttl 12h --out ./alice"
    )]
    Sign {
        #[command(flatten)]
        dir: DirArg,
        /// The PEM certificate signing request
        csr: PathBuf,
        /// Lifetime, e.g. 30m, 12h, 7d (default: the PKI's default)
        #[arg(long, value_name = "TTL")]
        ttl: Option<String>,
        /// Where to write ca.pem and cert.pem (default: print the certificate)
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Revoke a certificate (or all of a user's) and re-sign the CRL
    #[command(
        after_help = "Examples:\n  moat certs revoke 3A9F...\n  moat certs revoke --user alice"
    )]
    Revoke {
        #[command(flatten)]
        dir: DirArg,
        /// Serial number, as `moat certs list` shows it
        #[arg(required_unless_present = "user", conflicts_with = "user")]
        serial: Option<String>,
        /// Revoke every unrevoked certificate of this user
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Re-sign the CRL from the index (run before it expires)
    Crl {
        #[command(flatten)]
        dir: DirArg,
    },
    /// List issued, expired and revoked certificates
    List {
        #[command(flatten)]
        dir: DirArg,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Make a one-time enrollment token for someone to `moat login` with
    #[command(
        after_help = "Example:\n  moat certs token bob --group developer --ttl 15m\n  \
        (bob) moat login https://moat.example.com:2377 --token TOKEN --ca-pin sha256:...\n\n\
        The token is shown once and stored only as its hash. It enrolls USER with\n\
        these groups once, within its TTL (at most 24h), whatever the login asks for."
    )]
    Token {
        #[command(flatten)]
        dir: DirArg,
        /// The user the certificate will name
        user: String,
        /// A group (repeatable)
        #[arg(long = "group", short = 'g', value_name = "GROUP")]
        groups: Vec<String>,
        /// How long the token can be used, e.g. 15m, 2h (at most 24h)
        #[arg(long, default_value = "15m", value_name = "TTL")]
        ttl: String,
        /// The gateway's enrollment address, for the printed command line
        /// [default: https://FIRST-SERVER-NAME:2377]
        #[arg(long, value_name = "https://HOST:PORT")]
        enroll_url: Option<String>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Run the signer: signs for enrollment tokens and renewals the gateway forwards (root)
    #[command(
        after_help = "Example:\n  sudo moat certs signer --socket /run/moat/enroll.sock\n  \
        moat gateway --enroll-listen 0.0.0.0:2377 --signer unix:///run/moat/enroll.sock ...\n\n\
        `moat up` starts it for you. Protocol: one JSON line each way per connection\n\
        (docs/admin-guide.md)."
    )]
    Signer {
        #[command(flatten)]
        dir: DirArg,
        /// The Unix socket to listen on (0660 root:GROUP)
        #[arg(long, default_value = "/run/moat/enroll.sock", value_name = "PATH")]
        socket: PathBuf,
        /// The group that may connect: the gateway's
        #[arg(long, default_value = moat_gateway::privilege::GATEWAY_USER, value_name = "GROUP")]
        group: String,
    },
    /// Issue a new certificate for the gateway (optionally with new names)
    RenewServer {
        #[command(flatten)]
        dir: DirArg,
        /// Replace the DNS names (repeatable)
        #[arg(long = "host", value_name = "NAME")]
        hosts: Vec<String>,
        /// Replace the IP addresses (repeatable)
        #[arg(long = "ip", value_name = "ADDR")]
        ips: Vec<IpAddr>,
    },
}

#[derive(Args)]
pub struct DirArg {
    /// The PKI directory (default: STATE_ROOT/pki)
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

impl DirArg {
    fn path(&self, state: &StateRoot) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| state.pki())
    }
}

#[derive(Args)]
pub struct OutputArg {
    /// Output format
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub(crate) output: Output,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    Table,
    Json,
}

pub fn run(cmd: CertsCommand, state: &StateRoot) -> Result<()> {
    match cmd {
        CertsCommand::Init {
            dir,
            hosts,
            ips,
            default_ttl,
            max_ttl,
        } => {
            let dir = dir.path(state);
            let config = PkiConfig {
                server_hosts: hosts,
                server_ips: ips,
                default_client_ttl_secs: ttl::parse(&default_ttl)?.whole_seconds(),
                max_client_ttl_secs: ttl::parse(&max_ttl)?.whole_seconds(),
                ..PkiConfig::default()
            };
            let pki = Pki::init(&dir, config)?;
            let ca = pki.ca_summary()?;
            println!("Created a CA in {}", dir.display());
            println!("  CA fingerprint: {}", ca.fingerprint);
            println!("  gateway certificate for: {}", server_names(pki.config()));
            println!("Next: moat certs issue USER --group developer");
        }
        CertsCommand::Issue {
            dir,
            user,
            groups,
            ttl,
            out,
            output,
        } => {
            let subject = Subject::new(&user, &groups)?;
            let pki = Pki::open(&dir.path(state))?;
            let validity = pki.client_validity(ttl.as_deref().map(ttl::parse).transpose()?)?;
            let out = out.unwrap_or_else(|| PathBuf::from(&user));
            check_out_dir(&out)?;
            let issued = pki.issue(&subject, validity)?;
            Bundle::write(&out, &issued)
                .with_context(|| format!("certificate {} was issued", issued.record.serial))?;
            report_issued(&issued.record, Some(&out), output.output)?;
        }
        CertsCommand::Sign { dir, csr, ttl, out } => {
            let pem = std::fs::read_to_string(&csr)
                .with_context(|| format!("reading {}", csr.display()))?;
            let pki = Pki::open(&dir.path(state))?;
            let validity = pki.client_validity(ttl.as_deref().map(ttl::parse).transpose()?)?;
            if let Some(out) = &out {
                check_out_dir(out)?;
            }
            let issued = pki.sign_csr(&pem, validity)?;
            match &out {
                Some(out) => {
                    Bundle::write(out, &issued)?;
                    report_issued(&issued.record, Some(out), Output::Table)?;
                }
                None => print!("{}", issued.cert_pem),
            }
        }
        CertsCommand::Revoke {
            dir,
            serial,
            user,
            output,
        } => {
            let pki = Pki::open(&dir.path(state))?;
            let revoked = match (serial, user) {
                (Some(serial), None) => vec![pki.revoke_serial(&serial)?],
                (None, Some(user)) => pki.revoke_user(&user)?,
                _ => bail!("give a serial or --user, not both"),
            };
            match output.output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&revoked)?),
                Output::Table => {
                    for cert in &revoked {
                        println!("revoked {} ({})", cert.serial, cert.user);
                    }
                    println!("CRL re-signed: {}", pki.path("crl.pem").display());
                }
            }
        }
        CertsCommand::Crl { dir } => {
            let pki = Pki::open(&dir.path(state))?;
            let next = pki.resign_crl()?;
            println!("CRL re-signed; next update due {}", rfc3339(next));
        }
        CertsCommand::List { dir, output } => {
            let pki = Pki::open(&dir.path(state))?;
            print_list(&pki.list()?, output.output)?;
        }
        CertsCommand::Token {
            dir,
            user,
            groups,
            ttl,
            enroll_url,
            output,
        } => {
            let subject = Subject::new(&user, &groups)?;
            let ttl = ttl::parse(&ttl)?;
            let pki = Pki::open(&dir.path(state))?;
            let url = enroll_url.unwrap_or_else(|| default_enroll_url(pki.config()));
            let pin = pki.ca_summary()?.fingerprint;
            let token = pki.create_token(&subject, ttl)?;
            let expires = (OffsetDateTime::now_utc() + ttl)
                .replace_nanosecond(0)
                .expect("zero is a valid nanosecond");
            let login = format!("moat login {url} --token {token} --ca-pin {pin}");
            match output.output {
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "token": token,
                        "user": subject.user,
                        "groups": subject.groups,
                        "expires_at": rfc3339(expires),
                        "enroll_url": url,
                        "ca_pin": pin,
                        "login": login,
                    }))?
                ),
                Output::Table => {
                    println!(
                        "One-time token for {} (groups: {}), usable once until {}:",
                        subject.user,
                        groups_text(&subject.groups),
                        rfc3339(expires)
                    );
                    println!();
                    println!("  {token}");
                    println!();
                    println!("{} runs:", subject.user);
                    println!();
                    println!("  {login}");
                    println!();
                    println!(
                        "Send it privately: whoever runs it first becomes {}.",
                        subject.user
                    );
                }
            }
        }
        CertsCommand::Signer { dir, socket, group } => {
            crate::signer::run(&dir.path(state), &socket, &group)?;
        }
        CertsCommand::RenewServer { dir, hosts, ips } => {
            let mut pki = Pki::open(&dir.path(state))?;
            let replace_names = !hosts.is_empty() || !ips.is_empty();
            let issued = if replace_names {
                pki.renew_server(Some(hosts), Some(ips))?
            } else {
                pki.renew_server(None, None)?
            };
            println!(
                "gateway certificate {} for {} (valid until {}); a running gateway picks it up on reload",
                issued.record.serial,
                server_names(pki.config()),
                rfc3339(issued.record.not_after)
            );
        }
    }
    Ok(())
}

/// Checked before anything is signed, so a bad `--out` leaves no orphan
/// certificate in the index.
fn check_out_dir(out: &Path) -> Result<()> {
    if out.exists() && !out.is_dir() {
        bail!("--out {} exists and is not a directory", out.display());
    }
    Ok(())
}

fn report_issued(record: &IssuedCert, out: Option<&Path>, output: Output) -> Result<()> {
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(record)?);
        return Ok(());
    }
    println!(
        "Issued {} for user {} (groups: {}), valid until {}",
        record.serial,
        record.user,
        groups_text(&record.groups),
        rfc3339(record.not_after)
    );
    if let Some(out) = out {
        let abs = std::path::absolute(out).unwrap_or_else(|_| out.to_path_buf());
        println!("Wrote ca.pem, cert.pem and key.pem to {}", abs.display());
        println!("Use it with:");
        println!(
            "  export DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH={}",
            abs.display()
        );
    }
    Ok(())
}

fn print_list(certs: &[IssuedCert], output: Output) -> Result<()> {
    let now = OffsetDateTime::now_utc();
    if output == Output::Json {
        let rows: Vec<_> = certs
            .iter()
            .map(|c| {
                let mut row = serde_json::to_value(c).expect("serializes");
                row["status"] = serde_json::to_value(c.status(now)).expect("serializes");
                row
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<34} {:<7} {:<20} {:<24} {:<8} EXPIRES",
        "SERIAL", "KIND", "USER", "GROUPS", "STATUS"
    );
    for c in certs {
        let status = match c.status(now) {
            CertStatus::Valid => "valid",
            CertStatus::Expired => "expired",
            CertStatus::Revoked => "revoked",
        };
        println!(
            "{:<34} {:<7} {:<20} {:<24} {:<8} {}",
            c.serial,
            format!("{:?}", c.kind).to_lowercase(),
            c.user,
            c.groups.join(","),
            status,
            rfc3339(c.not_after)
        );
    }
    Ok(())
}

fn groups_text(groups: &[String]) -> String {
    if groups.is_empty() {
        "none".to_owned()
    } else {
        groups.join(", ")
    }
}

/// `https://NAME:2377` for the first name in the gateway's certificate.
fn default_enroll_url(config: &PkiConfig) -> String {
    let host = match (config.server_hosts.first(), config.server_ips.first()) {
        (Some(host), _) => host.clone(),
        (None, Some(IpAddr::V6(ip))) => format!("[{ip}]"),
        (None, Some(ip)) => ip.to_string(),
        (None, None) => "localhost".to_owned(),
    };
    format!("https://{host}:{DEFAULT_ENROLL_PORT}")
}

/// The enrollment port: the gateway's 2376, plus one.
pub(crate) const DEFAULT_ENROLL_PORT: u16 = 2377;

fn server_names(config: &PkiConfig) -> String {
    config
        .server_hosts
        .iter()
        .cloned()
        .chain(config.server_ips.iter().map(IpAddr::to_string))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}
