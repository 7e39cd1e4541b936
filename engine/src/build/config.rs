//! What the metadata instructions (`ENV`, `LABEL`, `ARG`, `WORKDIR`,
//! `CMD`, `EXPOSE`, `HEALTHCHECK`, ...) do to an image config, kept as a
//! JSON document so Docker's fields that OCI lacks (`Healthcheck`,
//! `Shell`, `OnBuild`) are written and kept.

use serde_json::{Map, Value, json};

use super::dockerfile::{Command, Flag};
use super::error::BuildError;
use super::lex;

fn bad(message: impl Into<String>) -> BuildError {
    BuildError::Request(message.into())
}

fn lex_error(e: lex::LexError) -> BuildError {
    bad(e.to_string())
}

/// The `config` section, made an object when it is not one.
fn section(config: &mut Value) -> &mut Map<String, Value> {
    if !config["config"].is_object() {
        config["config"] = json!({});
    }
    config["config"]
        .as_object_mut()
        .expect("just made an object")
}

/// `KEY=value ...` (values expanded, quotes removed), or the old
/// `KEY value with spaces`.
pub fn pairs(
    text: &str,
    escape: char,
    vars: &[(String, String)],
) -> Result<Vec<(String, String)>, BuildError> {
    let words = lex::raw_words(text, escape).map_err(lex_error)?;
    let Some(first) = words.first() else {
        return Err(bad("requires at least one argument"));
    };
    if !first.contains('=') {
        let value = text.trim_start()[first.len()..].trim();
        if value.is_empty() {
            return Err(bad(format!("{first}: a value is needed")));
        }
        let key = lex::word(first, escape, vars).map_err(lex_error)?;
        return Ok(vec![(
            key,
            lex::word(value, escape, vars).map_err(lex_error)?,
        )]);
    }
    words
        .iter()
        .map(|word| {
            let (key, value) = word
                .split_once('=')
                .ok_or_else(|| bad(format!("{word}: expected KEY=value")))?;
            let key = lex::word(key, escape, vars).map_err(lex_error)?;
            if key.is_empty() {
                return Err(bad("names can not be blank"));
            }
            Ok((key, lex::word(value, escape, vars).map_err(lex_error)?))
        })
        .collect()
}

/// `A=1 B="two words"`, values expanded, as history shows them.
pub fn shown_pairs(
    text: &str,
    escape: char,
    vars: &[(String, String)],
) -> Result<String, BuildError> {
    Ok(pairs(text, escape, vars)?
        .iter()
        .map(|(k, v)| {
            if v.contains(char::is_whitespace) || v.is_empty() {
                format!("{k}={v:?}")
            } else {
                format!("{k}={v}")
            }
        })
        .collect::<Vec<_>>()
        .join(" "))
}

/// `ARG NAME[=default] ...`: each name and its default, expanded.
pub fn arg_defs(
    text: &str,
    escape: char,
    vars: &[(String, String)],
) -> Result<Vec<(String, Option<String>)>, BuildError> {
    let words = lex::raw_words(text, escape).map_err(lex_error)?;
    if words.is_empty() {
        return Err(bad("ARG requires at least one argument"));
    }
    words
        .iter()
        .map(|word| match word.split_once('=') {
            Some((name, default)) => Ok((
                name.to_owned(),
                Some(lex::word(default, escape, vars).map_err(lex_error)?),
            )),
            None => Ok((word.clone(), None)),
        })
        .map(|r| {
            r.and_then(|(name, v)| {
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    Err(bad(format!("ARG: invalid name {name:?}")))
                } else {
                    Ok((name, v))
                }
            })
        })
        .collect()
}

pub fn set_env(config: &mut Value, key: &str, value: &str) {
    let section = section(config);
    let mut env: Vec<Value> = section
        .get("Env")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let entry = json!(format!("{key}={value}"));
    match env
        .iter()
        .position(|e| e.as_str().and_then(|e| e.split_once('=')).map(|(k, _)| k) == Some(key))
    {
        Some(i) => env[i] = entry,
        None => env.push(entry),
    }
    section.insert("Env".into(), Value::Array(env));
}

pub fn set_label(config: &mut Value, key: &str, value: &str) {
    let section = section(config);
    if !section.get("Labels").is_some_and(Value::is_object) {
        section.insert("Labels".into(), json!({}));
    }
    section["Labels"][key] = json!(value);
}

/// `WORKDIR path`: relative to the current one; returns the new one.
pub fn workdir(config: &mut Value, path: &str) -> Result<String, BuildError> {
    if path.is_empty() {
        return Err(bad("WORKDIR requires a path"));
    }
    let current = config["config"]["WorkingDir"]
        .as_str()
        .unwrap_or("/")
        .to_owned();
    let joined = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("{current}/{path}")
    };
    let dir = match super::pattern::clean(&joined).as_str() {
        "." => "/".to_owned(),
        clean => format!("/{clean}"),
    };
    section(config).insert("WorkingDir".into(), json!(dir));
    Ok(dir)
}

/// A command as the config stores it: the exec form as is, the shell form
/// behind the stage's shell.
pub fn command(command: &Command, shell: &[String]) -> Vec<String> {
    match command {
        Command::Exec(args) => args.clone(),
        Command::Shell(text) => {
            let mut args = shell.to_vec();
            args.push(text.clone());
            args
        }
    }
}

/// `EXPOSE 80 53/udp 8000-8001`.
pub fn expose(config: &mut Value, ports: &[String]) -> Result<(), BuildError> {
    let section = section(config);
    if !section.get("ExposedPorts").is_some_and(Value::is_object) {
        section.insert("ExposedPorts".into(), json!({}));
    }
    for spec in ports {
        let (range, protocol) = spec.split_once('/').unwrap_or((spec, "tcp"));
        let protocol = protocol.to_ascii_lowercase();
        if !matches!(protocol.as_str(), "tcp" | "udp" | "sctp") {
            return Err(bad(format!("EXPOSE {spec}: invalid protocol")));
        }
        let port = |p: &str| {
            p.parse::<u16>()
                .map_err(|_| bad(format!("EXPOSE {spec}: invalid port")))
        };
        let (first, last) = match range.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => (port(range)?, port(range)?),
        };
        if first > last {
            return Err(bad(format!("EXPOSE {spec}: invalid range")));
        }
        for p in first..=last {
            section["ExposedPorts"][format!("{p}/{protocol}")] = json!({});
        }
    }
    Ok(())
}

pub fn volumes(config: &mut Value, paths: &[String]) -> Result<(), BuildError> {
    let section = section(config);
    if !section.get("Volumes").is_some_and(Value::is_object) {
        section.insert("Volumes".into(), json!({}));
    }
    if paths.is_empty() {
        return Err(bad("VOLUME requires at least one argument"));
    }
    for path in paths {
        if path.trim().is_empty() {
            return Err(bad("VOLUME specified can not be an empty string"));
        }
        section["Volumes"][path.as_str()] = json!({});
    }
    Ok(())
}

pub fn stop_signal(config: &mut Value, signal: &str) -> Result<(), BuildError> {
    let valid = signal.parse::<u8>().is_ok() || crate::runtime::parse_signal(signal).is_some();
    if !valid {
        return Err(bad(format!("STOPSIGNAL: invalid signal {signal:?}")));
    }
    section(config).insert("StopSignal".into(), json!(signal));
    Ok(())
}

/// Go's duration syntax (`30s`, `1m30s`, `500ms`) in nanoseconds.
pub fn duration(text: &str) -> Option<i64> {
    if text == "0" {
        return Some(0);
    }
    let mut total: f64 = 0.0;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += number * scale;
        rest = &rest[unit_len..];
    }
    Some(total as i64)
}

/// `HEALTHCHECK [--interval=..] CMD ...` or `HEALTHCHECK NONE`.
pub fn healthcheck(
    config: &mut Value,
    flags: &[Flag],
    command: Option<&Command>,
) -> Result<(), BuildError> {
    let Some(command) = command else {
        section(config).insert("Healthcheck".into(), json!({ "Test": ["NONE"] }));
        return Ok(());
    };
    let mut check = Map::new();
    check.insert(
        "Test".into(),
        match command {
            Command::Exec(args) => {
                let mut test = vec!["CMD".to_owned()];
                test.extend(args.iter().cloned());
                json!(test)
            }
            Command::Shell(text) => json!(["CMD-SHELL", text]),
        },
    );
    for flag in flags {
        let value = flag.value.as_deref().unwrap_or("");
        let field = match flag.name.as_str() {
            "interval" => "Interval",
            "timeout" => "Timeout",
            "start-period" => "StartPeriod",
            "start-interval" => "StartInterval",
            "retries" => {
                let retries: i64 = value
                    .parse()
                    .map_err(|_| bad(format!("HEALTHCHECK --retries={value}: not a number")))?;
                check.insert("Retries".into(), json!(retries));
                continue;
            }
            other => return Err(bad(format!("HEALTHCHECK: unknown flag --{other}"))),
        };
        let nanos = duration(value).ok_or_else(|| {
            bad(format!(
                "HEALTHCHECK --{}={value}: not a duration",
                flag.name
            ))
        })?;
        check.insert(field.into(), json!(nanos));
    }
    section(config).insert("Healthcheck".into(), Value::Object(check));
    Ok(())
}

pub fn push_onbuild(config: &mut Value, trigger: &str) {
    let section = section(config);
    let mut triggers = section
        .get("OnBuild")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    triggers.push(json!(trigger));
    section.insert("OnBuild".into(), Value::Array(triggers));
}

/// Appends the step's history line and stamps the config's time.
pub fn add_history(config: &mut Value, created_by: &str, empty_layer: bool) {
    let created = super::now();
    if !config["history"].is_array() {
        config["history"] = json!([]);
    }
    let mut entry = json!({ "created": created, "created_by": created_by });
    if empty_layer {
        entry["empty_layer"] = json!(true);
    }
    if let Some(history) = config["history"].as_array_mut() {
        history.push(entry);
    }
    config["created"] = json!(created);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vec<(String, String)> {
        vec![("V".into(), "x".into())]
    }

    #[test]
    fn env_label_and_arg_forms() {
        assert_eq!(
            pairs("A=1 B=\"two words\" C=$V D=\\$V", '\\', &vars()).unwrap(),
            [
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "x".into()),
                ("D".into(), "$V".into())
            ]
        );
        assert_eq!(
            pairs("LEGACY value  with spaces", '\\', &vars()).unwrap(),
            [("LEGACY".into(), "value  with spaces".into())]
        );
        assert!(pairs("=x", '\\', &vars()).is_err());
        assert_eq!(
            arg_defs("A B=${V}y", '\\', &vars()).unwrap(),
            [("A".into(), None), ("B".into(), Some("xy".into()))]
        );
        assert!(arg_defs("A-B=1", '\\', &vars()).is_err());
        let mut config = json!({"config": null});
        set_env(&mut config, "A", "1");
        set_env(&mut config, "B", "2");
        set_env(&mut config, "A", "3");
        assert_eq!(config["config"]["Env"], json!(["A=3", "B=2"]));
        set_label(&mut config, "k", "v");
        assert_eq!(config["config"]["Labels"]["k"], "v");
    }

    #[test]
    fn workdir_expose_healthcheck() {
        let mut config = json!({"config": {}});
        assert_eq!(workdir(&mut config, "/app").unwrap(), "/app");
        assert_eq!(workdir(&mut config, "sub/../src").unwrap(), "/app/src");
        assert_eq!(workdir(&mut config, "/").unwrap(), "/");
        expose(
            &mut config,
            &["80".into(), "53/udp".into(), "8000-8001".into()],
        )
        .unwrap();
        let ports: Vec<&String> = config["config"]["ExposedPorts"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(ports, ["53/udp", "80/tcp", "8000/tcp", "8001/tcp"]);
        assert!(expose(&mut config, &["http".into()]).is_err());
        let flags = vec![
            Flag {
                name: "interval".into(),
                value: Some("1m30s".into()),
            },
            Flag {
                name: "retries".into(),
                value: Some("3".into()),
            },
        ];
        healthcheck(
            &mut config,
            &flags,
            Some(&Command::Shell("curl -f x".into())),
        )
        .unwrap();
        assert_eq!(
            config["config"]["Healthcheck"],
            json!({"Test": ["CMD-SHELL", "curl -f x"], "Interval": 90_000_000_000i64, "Retries": 3})
        );
        assert_eq!(duration("500ms"), Some(500_000_000));
        assert_eq!(duration("1.5s"), Some(1_500_000_000));
        assert_eq!(duration("5"), None);
        assert!(stop_signal(&mut config, "SIGTERM").is_ok());
        assert!(stop_signal(&mut config, "TERMINATE").is_err());
    }
}
