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
    output: Output,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
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
        if record.groups.is_empty() {
            "none".to_owned()
        } else {
            record.groups.join(", ")
        },
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

fn server_names(config: &PkiConfig) -> String {
    config
        .server_hosts
        .iter()
        .cloned()
        .chain(config.server_ips.iter().map(IpAddr::to_string))
        .collect::<Vec<_>>()
        .join(", ")
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}
