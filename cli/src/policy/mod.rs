//! `moat policy`: who may do what. Reads and changes the policy directory
//! a gateway runs from (`STATE/policy`, reloaded by the gateway within
//! seconds of a change), or a running gateway's policy through its admin
//! API (`--gateway`). Every change is validated whole before it is
//! written, and refused with the reason otherwise; nothing is touched.

mod docker;
mod dryrun;
mod remote;
mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use moat_certs::{CertStatus, Pki};
use moat_policy::{Enforcer, Explanation, Identity, Policy, RuleKind, edit};
use serde_json::json;
use time::OffsetDateTime;

use crate::state::StateRoot;
use store::Store;

#[derive(Args)]
#[command(after_help = "Examples:\n  moat policy roles\n  \
    moat policy role create ci --allow container.create --allow image.use:registry.example.com/*\n  \
    moat policy bind bob ci\n  \
    moat policy check bob -- docker run --privileged -v /:/x busybox\n  \
    moat policy lock bob\n  \
    moat policy --gateway https://moat.example.com:2376 --cert-path ~/.moat/admin users")]
pub struct PolicyArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Args)]
struct TargetArgs {
    /// The policy directory [default: STATE_ROOT/policy]
    #[arg(long, global = true, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Work on a running gateway's policy through its admin API instead
    #[arg(
        long,
        global = true,
        env = "MOAT_GATEWAY",
        value_name = "https://HOST:PORT"
    )]
    gateway: Option<String>,
    /// With --gateway: an admin's ca.pem, cert.pem and key.pem (as `moat certs issue --out` writes them)
    #[arg(long, global = true, env = "DOCKER_CERT_PATH", value_name = "DIR")]
    cert_path: Option<PathBuf>,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// List the roles: how many rules each has, what it inherits, who holds it
    #[command(after_help = "Example:\n  moat policy roles --output json")]
    Roles {
        #[command(flatten)]
        output: OutputArg,
    },
    /// Show, create or delete a role
    #[command(subcommand)]
    Role(RoleCommand),
    /// Give a user (or group:NAME) a role
    #[command(after_help = "Examples:\n  moat policy bind alice operator\n  \
        moat policy bind group:ml developer")]
    Bind {
        /// A user, or group:NAME
        subject: String,
        role: String,
    },
    /// Take back a role given with `bind`
    #[command(after_help = "Example:\n  moat policy unbind alice operator")]
    Unbind {
        /// A user, or group:NAME
        subject: String,
        role: String,
    },
    /// Who has what: users from the bindings and the issued certificates, their groups and roles
    #[command(after_help = "Example:\n  moat policy users --output json")]
    Users {
        /// The PKI whose certificate index lists the users [default: STATE_ROOT/pki]
        #[arg(long, value_name = "DIR")]
        pki: Option<PathBuf>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Deny a user everything, now; a running gateway closes their open sessions
    #[command(
        after_help = "Example:\n  moat policy lock bob --reason 'laptop stolen'\n\n\
        Adds `p, user:bob, *, *, deny` under a `# moat policy lock bob` comment: a deny \
        matches every permission and object and wins over any role. `unlock` removes exactly \
        those two lines. To keep bob out for good, also revoke his certificates \
        (moat certs revoke --user bob)."
    )]
    Lock {
        user: String,
        /// Why, kept in the comment above the rule
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Lift a lock made with `lock`
    #[command(after_help = "Example:\n  moat policy unlock bob")]
    Unlock { user: String },
    /// Would the gateway allow this? Reads docker command lines, or takes a raw API request
    #[command(after_help = "Examples:\n  \
        moat policy check alice --group developer -- docker run --privileged -v /:/x busybox\n  \
        moat policy check alice -g developer -- docker exec -u root web sh\n  \
        moat policy check alice -g developer POST /v1.41/containers/create '{\"Image\":\"alpine\"}'\n  \
        moat policy check alice -g developer --others -- docker logs web\n\n\
        Options go before the request. BODY may be JSON, @FILE or - (standard input).\n\
        Exit status: 0 allowed, 1 denied (or a request the gateway would refuse as \
        malformed), 2 could not be checked.")]
    Check {
        /// The user (a certificate's CN)
        user: String,
        /// A group the user's certificate carries (repeatable)
        #[arg(long = "group", short = 'g', value_name = "GROUP")]
        groups: Vec<String>,
        /// Judge containers, volumes and networks the command names as someone else's
        #[arg(long)]
        others: bool,
        #[command(flatten)]
        output: OutputArg,
        /// `-- docker COMMAND...` or `METHOD PATH [BODY]`
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "REQUEST"
        )]
        request: Vec<String>,
    },
    /// Check a policy (a directory, or a file as `import` takes) without using it
    #[command(
        after_help = "Examples:\n  moat policy validate\n  moat policy validate ./candidate/"
    )]
    Validate {
        /// [default: the policy in force]
        path: Option<PathBuf>,
    },
    /// The rule lines a candidate adds and removes, against the policy in force
    #[command(after_help = "Examples:\n  moat policy diff ./candidate/\n  \
        moat policy diff            # the dry-run candidate\n\n\
        Exit status: 0 no difference, 1 differences, 2 could not compare.")]
    Diff {
        /// A directory or file, as `import` takes [default: the dry-run candidate]
        path: Option<PathBuf>,
    },
    /// Write the policy in force to a file (policy.csv, or JSON with the model)
    #[command(after_help = "Examples:\n  moat policy export --out policy.csv\n  \
        moat policy export --format json > policy.json")]
    Export {
        /// Where to write [default: standard output]
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// csv: policy.csv as it stands; json: {\"model\": ..., \"policy\": ...}
        #[arg(long, value_enum, default_value_t = Format::Csv)]
        format: Format,
    },
    /// Replace the policy in force, validated first; on failure nothing changes
    #[command(after_help = "Examples:\n  moat policy import policy.csv\n  \
        moat policy import ./candidate/\n\n\
        Takes a policy.csv (the model in force is kept), a JSON document as `export --format \
        json` writes, or a directory with model.conf and policy.csv.")]
    Import { path: PathBuf },
    /// Try a candidate policy on real calls without enforcing it
    #[command(subcommand)]
    DryRun(dryrun::DryRunCommand),
}

#[derive(Subcommand)]
enum RoleCommand {
    /// A role's rules, what it inherits and who holds it
    #[command(after_help = "Example:\n  moat policy role show developer")]
    Show {
        role: String,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Create a role from allow and deny rules
    #[command(after_help = "Examples:\n  \
        moat policy role create ci --allow container.create --allow container.start \\\n    \
        --allow image.use:registry.example.com/* --deny host.bind\n  \
        moat policy role create data --allow host.bind:/srv/datasets/* --replace\n\n\
        PERMISSION is a name from docs/policy.md or a prefix ending in * (container.*); \
        OBJECT defaults to *.")]
    Create {
        role: String,
        /// PERMISSION[:OBJECT] the role allows (repeatable)
        #[arg(long, value_name = "PERMISSION[:OBJECT]")]
        allow: Vec<String>,
        /// PERMISSION[:OBJECT] the role denies, whatever else its holders have (repeatable)
        #[arg(long, value_name = "PERMISSION[:OBJECT]")]
        deny: Vec<String>,
        /// Replace the rules of an existing role (its bindings stay)
        #[arg(long)]
        replace: bool,
    },
    /// Delete a role: its rules and what it inherits
    #[command(after_help = "Example:\n  moat policy role delete ci --force")]
    Delete {
        role: String,
        /// Also remove the bindings that give the role to users, groups and roles
        #[arg(long)]
        force: bool,
    },
}

#[derive(Args)]
struct OutputArg {
    /// Output format
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Csv,
    Json,
}

pub fn run(args: PolicyArgs, state: &StateRoot) -> Result<()> {
    let target = args.target;
    let store = match (&target.gateway, &target.dir) {
        (Some(_), Some(_)) => bail!("give --dir or --gateway, not both"),
        (Some(url), None) => {
            let certs = target.cert_path.as_deref().context(
                "--gateway needs --cert-path DIR (an admin's ca.pem, cert.pem, key.pem)",
            )?;
            Store::Remote(remote::Gateway::new(url, certs)?)
        }
        (None, dir) => Store::Local {
            dir: dir.clone().unwrap_or_else(|| state.policy()),
        },
    };
    match args.command {
        PolicyCommand::Roles { output } => roles(&store.load()?, output.output),
        PolicyCommand::Role(RoleCommand::Show { role, output }) => {
            role_show(&store.load()?, &role, output.output)
        }
        PolicyCommand::Role(RoleCommand::Create {
            role,
            allow,
            deny,
            replace,
        }) => role_create(&store, &role, &allow, &deny, replace),
        PolicyCommand::Role(RoleCommand::Delete { role, force }) => {
            role_delete(&store, &role, force)
        }
        PolicyCommand::Bind { subject, role } => bind(&store, &subject, &role),
        PolicyCommand::Unbind { subject, role } => unbind(&store, &subject, &role),
        PolicyCommand::Users { pki, output } => users(
            &store.load()?,
            &pki.unwrap_or_else(|| state.pki()),
            output.output,
        ),
        PolicyCommand::Lock { user, reason } => lock(&store, &user, reason.as_deref()),
        PolicyCommand::Unlock { user } => unlock(&store, &user),
        PolicyCommand::Check {
            user,
            groups,
            others,
            output,
            request,
        } => {
            let who = Identity::new(user, groups);
            match check(&store, &who, others, &request, output.output) {
                Ok(true) => Ok(()),
                Ok(false) => exit(1),
                Err(err) => {
                    eprintln!("moat: {err:#}");
                    exit(2)
                }
            }
        }
        PolicyCommand::Validate { path } => validate(&store, path.as_deref()),
        PolicyCommand::Diff { path } => match diff(&store, path.as_deref()) {
            Ok(true) => Ok(()),
            Ok(false) => exit(1),
            Err(err) => {
                eprintln!("moat: {err:#}");
                exit(2)
            }
        },
        PolicyCommand::Export { out, format } => export(&store.load()?, out.as_deref(), format),
        PolicyCommand::Import { path } => import(&store, &path),
        PolicyCommand::DryRun(command) => dryrun::run(command, &store, state),
    }
}

/// Ends the process with `code` once what was printed is out.
fn exit(code: i32) -> ! {
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}

fn roles(policy: &Policy, output: Output) -> Result<()> {
    let rows: Vec<RoleSummary> = policy
        .role_names()
        .into_iter()
        .map(|role| RoleSummary::of(policy, role))
        .collect();
    if output == Output::Json {
        let json: Vec<_> = rows.iter().map(RoleSummary::json).collect();
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    let table: Vec<[String; 4]> = rows
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                format!("{} allow, {} deny", r.allow.len(), r.deny.len()),
                list_or_dash(&r.inherits),
                list_or_dash(&r.held_by),
            ]
        })
        .collect();
    print_table(["ROLE", "RULES", "INHERITS", "HELD BY"], &table);
    Ok(())
}

fn role_show(policy: &Policy, role: &str, output: Output) -> Result<()> {
    if !policy.role_names().contains(role) {
        bail!("no role {role:?} (roles: {})", role_list(policy));
    }
    let summary = RoleSummary::of(policy, role);
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&summary.json())?);
        return Ok(());
    }
    println!("role {role}");
    println!("  inherits: {}", list_or_none(&summary.inherits));
    println!("  held by:  {}", list_or_none(&summary.held_by));
    println!("  rules:");
    for line in summary.allow.iter().chain(&summary.deny) {
        println!("    policy.csv:{}: {}", line.number, line.rule);
    }
    if summary.allow.is_empty() && summary.deny.is_empty() {
        println!("    (none of its own)");
    }
    Ok(())
}

/// One role, as `roles` and `role show` describe it.
struct RoleSummary {
    name: String,
    allow: Vec<moat_policy::RuleLine>,
    deny: Vec<moat_policy::RuleLine>,
    /// Roles it holds.
    inherits: Vec<String>,
    /// Subjects holding it: `user:...`, `group:...` or roles.
    held_by: Vec<String>,
}

impl RoleSummary {
    fn of(policy: &Policy, role: &str) -> RoleSummary {
        let mut summary = RoleSummary {
            name: role.to_owned(),
            allow: Vec::new(),
            deny: Vec::new(),
            inherits: Vec::new(),
            held_by: Vec::new(),
        };
        for line in policy.rules() {
            match &line.rule {
                RuleKind::Permission {
                    subject, effect, ..
                } if subject == role => match effect {
                    moat_policy::Effect::Allow => summary.allow.push(line.clone()),
                    moat_policy::Effect::Deny => summary.deny.push(line.clone()),
                },
                RuleKind::Grouping { subject, role: r } if subject == role => {
                    summary.inherits.push(r.clone())
                }
                RuleKind::Grouping { subject, role: r } if r == role => {
                    summary.held_by.push(subject.clone())
                }
                _ => {}
            }
        }
        summary
    }

    fn json(&self) -> serde_json::Value {
        let rules = |lines: &[moat_policy::RuleLine]| -> Vec<serde_json::Value> {
            lines
                .iter()
                .map(|l| json!({"line": l.number, "rule": l.rule.to_string()}))
                .collect()
        };
        json!({
            "role": self.name,
            "allow": rules(&self.allow),
            "deny": rules(&self.deny),
            "inherits": self.inherits,
            "held_by": self.held_by,
        })
    }
}

fn role_create(
    store: &Store,
    role: &str,
    allow: &[String],
    deny: &[String],
    replace: bool,
) -> Result<()> {
    if role.contains(':') {
        bail!("{role:?}: a role name has no `:` (user:NAME and group:NAME are subjects)");
    }
    if allow.is_empty() && deny.is_empty() {
        bail!("give the role's rules with --allow and --deny");
    }
    let mut rules = Vec::new();
    for (flag, effect, specs) in [("--allow", "allow", allow), ("--deny", "deny", deny)] {
        for spec in specs {
            let (permission, object) = spec.split_once(':').unwrap_or((spec, "*"));
            let line = format!("p, {role}, {permission}, {object}, {effect}");
            let rule: RuleKind = line
                .parse()
                .map_err(|reason| anyhow::anyhow!("{flag} {spec}: {reason}"))?;
            if !rules.contains(&rule) {
                rules.push(rule);
            }
        }
    }
    store.change(|policy| {
        let exists = policy.role_names().contains(role);
        if exists && !replace {
            bail!("role {role:?} exists; --replace replaces its rules, `role delete` removes it");
        }
        let mut draft = policy.draft();
        if exists {
            draft.remove(|r| matches!(r, RuleKind::Permission { subject, .. } if subject == role));
            draft.remove_comment(&role_comment(role));
        }
        draft.separate();
        draft.comment(&role_comment(role));
        for rule in &rules {
            draft.add(rule);
        }
        Ok(Some(draft))
    })
}

fn role_delete(store: &Store, role: &str, force: bool) -> Result<()> {
    store.change(|policy| {
        if !policy.role_names().contains(role) {
            bail!("no role {role:?} (roles: {})", role_list(policy));
        }
        let holders: Vec<String> = policy
            .rules()
            .iter()
            .filter(|l| matches!(&l.rule, RuleKind::Grouping { role: r, .. } if r == role))
            .map(|l| format!("policy.csv:{}: {}", l.number, l.rule))
            .collect();
        if !holders.is_empty() && !force {
            bail!(
                "role {role:?} is held through {}; --force removes those bindings too",
                holders.join("; ")
            );
        }
        let mut draft = policy.draft();
        draft.remove(|rule| match rule {
            RuleKind::Permission { subject, .. } => subject == role,
            RuleKind::Grouping { subject, role: r } => subject == role || r == role,
        });
        draft.remove_comment(&role_comment(role));
        Ok(Some(draft))
    })
}

/// The comment above the rules `role create` writes; `role delete` takes
/// it away with them.
fn role_comment(role: &str) -> String {
    format!("role {role} (moat policy role create)")
}

/// `alice` → `user:alice`; `group:ml` and `user:bob` as given.
fn subject(text: &str) -> String {
    if text.starts_with(moat_policy::identity::USER_PREFIX)
        || text.starts_with(moat_policy::identity::GROUP_PREFIX)
    {
        text.to_owned()
    } else {
        format!("{}{text}", moat_policy::identity::USER_PREFIX)
    }
}

fn binding(subject_text: &str, role: &str) -> Result<RuleKind> {
    let line = format!("g, {}, {role}", subject(subject_text));
    line.parse()
        .map_err(|reason| anyhow::anyhow!("{subject_text} {role}: {reason}"))
}

fn bind(store: &Store, who: &str, role: &str) -> Result<()> {
    let rule = binding(who, role)?;
    store.change(|policy| {
        if !policy.role_names().contains(role) {
            bail!("no role {role:?} (roles: {})", role_list(policy));
        }
        let mut draft = policy.draft();
        if draft.contains(&rule) {
            println!("{who} holds {role} already ({rule})");
            return Ok(None);
        }
        draft.add(&rule);
        Ok(Some(draft))
    })
}

fn unbind(store: &Store, who: &str, role: &str) -> Result<()> {
    let rule = binding(who, role)?;
    store.change(|policy| {
        let mut draft = policy.draft();
        if draft.remove(|r| *r == rule).is_empty() {
            let others: Vec<String> = policy
                .rules()
                .iter()
                .filter(|l| matches!(&l.rule, RuleKind::Grouping { role: r, .. } if r == role))
                .map(|l| l.rule.to_string())
                .collect();
            bail!(
                "there is no `{rule}` to remove; {role} is given by: {}",
                if others.is_empty() {
                    "nothing".to_owned()
                } else {
                    others.join("; ")
                }
            );
        }
        Ok(Some(draft))
    })
}

fn lock(store: &Store, user: &str, reason: Option<&str>) -> Result<()> {
    let rule = edit::lock_rule(user);
    rule.to_string()
        .parse::<RuleKind>()
        .map_err(|reason| anyhow::anyhow!("{user:?}: {reason}"))?;
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| OffsetDateTime::now_utc())
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let note = match reason {
        Some(reason) => format!("{now}: {}", reason.replace(['\n', '\r'], " ")),
        None => now,
    };
    let mut already = false;
    store.change(|policy| {
        let mut draft = policy.draft();
        match draft.lock(user, &note) {
            Ok(true) => Ok(Some(draft)),
            Ok(false) => {
                already = true;
                Ok(None)
            }
            Err(reason) => bail!("{reason}"),
        }
    })?;
    if already {
        println!("{user} is locked already ({rule})");
        return Ok(());
    }
    println!(
        "{user} is locked: every call is denied ({rule}). {}",
        match store {
            Store::Local { .. } =>
                "A running gateway reloads the policy within seconds and closes their open sessions.",
            Store::Remote(_) => "The gateway has closed their open sessions.",
        }
    );
    Ok(())
}

fn unlock(store: &Store, user: &str) -> Result<()> {
    store.change(|policy| {
        let mut draft = policy.draft();
        if !draft.unlock(user) {
            if draft.contains(&edit::lock_rule(user)) {
                bail!(
                    "{user} is not locked by `moat policy lock`, but a rule written by hand denies \
                     them everything ({}); remove it by hand",
                    edit::lock_rule(user)
                );
            }
            bail!("{user} is not locked");
        }
        Ok(Some(draft))
    })?;
    println!("{user} is unlocked: their roles apply again");
    Ok(())
}

/// Everyone who appears in a binding or an issued client certificate.
fn users(policy: &Policy, pki_dir: &Path, output: Output) -> Result<()> {
    #[derive(Default)]
    struct User {
        groups: BTreeSet<String>,
        valid: usize,
        expired: usize,
        revoked: usize,
    }
    let mut people: BTreeMap<String, User> = BTreeMap::new();
    let mut note = None;
    match Pki::open(pki_dir).and_then(|pki| pki.list()) {
        Ok(certs) => {
            let now = OffsetDateTime::now_utc();
            for cert in certs
                .iter()
                .filter(|c| c.kind == moat_certs::CertKind::Client)
            {
                let user = people.entry(cert.user.clone()).or_default();
                match cert.status(now) {
                    CertStatus::Valid => {
                        user.valid += 1;
                        user.groups.extend(cert.groups.iter().cloned());
                    }
                    CertStatus::Expired => user.expired += 1,
                    CertStatus::Revoked => user.revoked += 1,
                }
            }
        }
        Err(err) => {
            note = Some(format!(
                "no certificate index ({err}): users from the bindings only"
            ))
        }
    }
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in policy.rules() {
        if let RuleKind::Grouping { subject, role } = &line.rule {
            if let Some(user) = subject.strip_prefix(moat_policy::identity::USER_PREFIX) {
                people.entry(user.to_owned()).or_default();
            } else if let Some(group) = subject.strip_prefix(moat_policy::identity::GROUP_PREFIX) {
                groups
                    .entry(group.to_owned())
                    .or_default()
                    .push(role.clone());
            }
        }
    }
    let locked = policy.locked_users();
    for user in &locked {
        people.entry(user.clone()).or_default();
    }
    let enforcer = Enforcer::new(policy.clone())?;
    let rows: Vec<serde_json::Value> = people
        .iter()
        .map(|(name, user)| {
            let who = Identity::new(name.clone(), user.groups.iter().cloned());
            json!({
                "user": name,
                "groups": user.groups,
                "roles": enforcer.roles(&who),
                "locked": locked.contains(name),
                "certificates": {"valid": user.valid, "expired": user.expired, "revoked": user.revoked},
            })
        })
        .collect();
    if output == Output::Json {
        let json = json!({ "users": rows, "groups": groups });
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    if let Some(note) = note {
        eprintln!("moat: {note}");
    }
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    };
    let table: Vec<[String; 5]> = rows
        .iter()
        .map(|row| {
            let certs = &row["certificates"];
            let count = |key: &str| certs[key].as_u64().unwrap_or(0);
            let mut cert_text: Vec<String> = [
                ("valid", count("valid")),
                ("expired", count("expired")),
                ("revoked", count("revoked")),
            ]
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(word, n)| format!("{n} {word}"))
            .collect();
            if cert_text.is_empty() {
                cert_text.push("none".into());
            }
            [
                row["user"].as_str().unwrap_or_default().to_owned(),
                list_or_dash(&strings(&row["groups"])),
                list_or_dash(&strings(&row["roles"])),
                cert_text.join(", "),
                if row["locked"] == true { "LOCKED" } else { "" }.to_owned(),
            ]
        })
        .collect();
    print_table(["USER", "GROUPS", "ROLES", "CERTIFICATES", ""], &table);
    if !groups.is_empty() {
        println!();
        let table: Vec<[String; 2]> = groups
            .iter()
            .map(|(group, roles)| [format!("group:{group}"), roles.join(", ")])
            .collect();
        print_table(["GROUP", "ROLES"], &table);
    }
    Ok(())
}

/// Explains a docker command line or a raw request; `Ok(true)` when the
/// gateway would let every request of it through.
fn check(
    store: &Store,
    who: &Identity,
    others: bool,
    request: &[String],
    output: Output,
) -> Result<bool> {
    let raw = request
        .first()
        .is_some_and(|m| RAW_METHODS.contains(&m.as_str()));
    if raw {
        let [method, target, rest @ ..] = request else {
            bail!("a raw request is METHOD PATH [BODY]");
        };
        let body = match rest {
            [] => None,
            [body] => Some(read_body(body)?),
            _ => bail!("a raw request is METHOD PATH [BODY]; quote the body"),
        };
        let request = docker::ApiRequest {
            method: static_method(method),
            target: target.clone(),
            body,
            created: false,
        };
        let outcome = store.checker()?.explain(who, &request, others)?;
        match (&outcome, output) {
            (store::Outcome::Explained(e), Output::Json) => println!("{}", e.json()),
            (store::Outcome::Explained(e), Output::Table) => print!("{}", e.table()),
            (store::Outcome::Refused(reason), Output::Json) => println!(
                "{}",
                serde_json::to_string_pretty(&json!({"allowed": false, "refused": reason}))?
            ),
            (store::Outcome::Refused(reason), Output::Table) => {
                println!("REFUSED: the gateway would answer 400: {reason}")
            }
        }
        return Ok(outcome.allowed());
    }

    let requests = docker::requests(request)?;
    let checker = store.checker()?;
    let mut outcomes = Vec::new();
    for request in &requests {
        // What the command line itself creates is the caller's own.
        outcomes.push(checker.explain(who, request, others && !request.created)?);
    }
    let allowed = outcomes.iter().all(store::Outcome::allowed);
    let roles = outcomes
        .iter()
        .find_map(|o| match o {
            store::Outcome::Explained(e) => Some(e.roles.clone()),
            store::Outcome::Refused(_) => None,
        })
        .unwrap_or_default();
    if output == Output::Json {
        let items: Vec<serde_json::Value> = requests
            .iter()
            .zip(&outcomes)
            .map(|(r, o)| {
                let mut item = json!({"method": r.method, "path": r.target, "body": r.body});
                match o {
                    store::Outcome::Explained(e) => {
                        item["allowed"] = json!(e.allowed);
                        item["decisions"] = serde_json::to_value(&e.decisions).unwrap_or_default();
                    }
                    store::Outcome::Refused(reason) => {
                        item["allowed"] = json!(false);
                        item["refused"] = json!(reason);
                    }
                }
                item
            })
            .collect();
        let json = json!({
            "user": who.user,
            "groups": who.groups,
            "roles": roles,
            "allowed": allowed,
            "requests": items,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(allowed);
    }
    let verdict = Explanation {
        user: who.user.clone(),
        groups: who.groups.clone(),
        roles,
        allowed,
        decisions: Vec::new(),
    };
    println!("{}", verdict.headline());
    for (request, outcome) in requests.iter().zip(&outcomes) {
        println!();
        println!("{} {}", request.method, request.target);
        match outcome {
            store::Outcome::Explained(e) => print!("{}", e.decision_table()),
            store::Outcome::Refused(reason) => {
                println!("REFUSED: the gateway would answer 400: {reason}")
            }
        }
    }
    if requests
        .iter()
        .any(|r| r.target.contains(docker::NEW_CONTAINER))
    {
        println!(
            "\n{} stands for the id the engine gives the new container (name it with --name).",
            docker::NEW_CONTAINER
        );
    }
    Ok(allowed)
}

/// One of the methods `check` takes (see `RAW_METHODS`), as the static
/// string the request type holds.
fn static_method(method: &str) -> &'static str {
    RAW_METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("POST")
}

/// What makes `check USER METHOD PATH` a raw request.
const RAW_METHODS: [&str; 5] = ["GET", "HEAD", "POST", "PUT", "DELETE"];

/// BODY as given: JSON, `@FILE`, or `-` for standard input.
fn read_body(body: &str) -> Result<serde_json::Value> {
    let text = if body == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the body from standard input")?
    } else if let Some(file) = body.strip_prefix('@') {
        std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?
    } else {
        body.to_owned()
    };
    serde_json::from_str(&text).context("the body is not JSON")
}

fn validate(store: &Store, path: Option<&Path>) -> Result<()> {
    let (what, policy) = match path {
        Some(path) => {
            let model = store.load().map(|p| p.model().to_owned()).ok();
            (
                path.display().to_string(),
                read_candidate(path, model.as_deref())?,
            )
        }
        None => (store.describe(), store.load()?),
    };
    let roles = policy.role_names();
    println!(
        "{what}: valid: {} rules, {} roles ({})",
        policy.rules().len(),
        roles.len(),
        roles.into_iter().collect::<Vec<_>>().join(", ")
    );
    Ok(())
}

/// Prints how `path` (or the dry-run candidate) differs from the policy in
/// force; `Ok(true)` when it does not.
fn diff(store: &Store, path: Option<&Path>) -> Result<bool> {
    let running = store.load()?;
    let (what, candidate) = match path {
        Some(path) => (
            path.display().to_string(),
            read_candidate(path, Some(running.model()))?,
        ),
        None => {
            let dir = dryrun::candidate_dir(store)?;
            if !dir.exists() {
                bail!(
                    "no dry run in {}: give the policy to compare with",
                    dir.display()
                );
            }
            (
                dir.display().to_string(),
                Policy::load_dir(&dir)
                    .with_context(|| format!("the dry-run candidate in {}", dir.display()))?,
            )
        }
    };
    let d = edit::diff(&running, &candidate);
    println!("--- {} (in force)", store.describe());
    println!("+++ {what}");
    print_diff(&d);
    if d.is_empty() {
        println!("(the same rules)");
    }
    Ok(d.is_empty())
}

fn print_diff(d: &moat_policy::RuleDiff) {
    if d.model_changed {
        println!("! model.conf differs");
    }
    for line in &d.removed {
        println!("- {}    (line {})", line.rule, line.number);
    }
    for line in &d.added {
        println!("+ {}    (line {})", line.rule, line.number);
    }
}

fn export(policy: &Policy, out: Option<&Path>, format: Format) -> Result<()> {
    let text = match format {
        Format::Csv => policy.text().to_owned(),
        Format::Json => {
            let json = json!({"model": policy.model(), "policy": policy.text()});
            format!("{}\n", serde_json::to_string_pretty(&json)?)
        }
    };
    match out {
        None => print!("{text}"),
        Some(out) => {
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o640)
                .open(out)
                .with_context(|| format!("creating {}", out.display()))?;
            file.write_all(text.as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("writing {}", out.display()))?;
            eprintln!(
                "wrote the policy ({} rules) to {}",
                policy.rules().len(),
                out.display()
            );
        }
    }
    Ok(())
}

fn import(store: &Store, path: &Path) -> Result<()> {
    let candidate = read_candidate(path, Some(&store.model()?)).with_context(|| {
        format!(
            "{} was refused and the policy in force stays",
            path.display()
        )
    })?;
    store.replace(candidate)
}

/// A policy given on the command line: a directory (model.conf and
/// policy.csv), a JSON document (`{"policy": ..., "model": ...}`, as
/// `export --format json` and the admin API give it), or a policy.csv,
/// which takes `model` (the one in force) or the default model.
pub(crate) fn read_candidate(path: &Path, model: Option<&str>) -> Result<Policy> {
    if path.is_dir() {
        return Ok(Policy::load_dir(path)?);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let fallback = model.unwrap_or(moat_policy::policy::DEFAULT_MODEL);
    if text.trim_start().starts_with('{') {
        let json: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
        let policy = json["policy"]
            .as_str()
            .with_context(|| format!("{}: no \"policy\" string", path.display()))?;
        let model = json["model"].as_str().unwrap_or(fallback);
        return Ok(Policy::from_text(model, policy)?);
    }
    Ok(Policy::from_text(fallback, &text)?)
}

fn role_list(policy: &Policy) -> String {
    policy
        .role_names()
        .into_iter()
        .collect::<Vec<_>>()
        .join(", ")
}

fn list_or_dash(items: &[String]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(", ")
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// Columns padded to their widest cell; the last one is not padded.
fn print_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header = header.map(str::to_owned);
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:width$}  ", width = widths[i]));
            }
        }
        println!("{}", line.trim_end());
    }
}
