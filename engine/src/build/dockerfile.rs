//! A Dockerfile, parsed by the `parse-dockerfile` crate and turned into
//! owned stages and steps that carry their line number and the text the
//! build output shows (`Step 3/7 : RUN make`).
//!
//! The crate keeps a shell-form command as written (line continuations and
//! comment lines inside it included) and does no variable expansion: the
//! continuations are joined here as Docker joins them, and expansion is
//! left to the builder ([`super::lex`]), which knows the variables.

use parse_dockerfile as pd;

/// The parsed file.
#[derive(Debug, Clone, PartialEq)]
pub struct Dockerfile {
    /// The escape character (`# escape=` directive; `\` by default).
    pub escape: char,
    /// `ARG`s before the first `FROM`: only `FROM` lines see them.
    pub global_args: Vec<Instruction>,
    pub stages: Vec<Stage>,
}

/// `FROM ...` and what follows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    pub from: Instruction,
    pub steps: Vec<Instruction>,
}

/// One instruction, where it was, and what the output shows of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Instruction {
    /// 1-based line of its keyword.
    pub line: usize,
    /// The instruction as written, continuations joined.
    pub text: String,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    From {
        image: String,
        name: Option<String>,
        flags: Vec<Flag>,
    },
    Run {
        command: Command,
        flags: Vec<Flag>,
    },
    /// `COPY` and (with `add`) `ADD`.
    Copy {
        add: bool,
        flags: Vec<Flag>,
        sources: Vec<Source>,
        dest: String,
    },
    Env(String),
    Arg(String),
    Label(String),
    Workdir(String),
    User(String),
    Cmd(Command),
    Entrypoint(Command),
    Shell(Vec<String>),
    Expose(Vec<String>),
    Volume(Vec<String>),
    Stopsignal(String),
    Healthcheck {
        flags: Vec<Flag>,
        /// `None` for `HEALTHCHECK NONE`.
        command: Option<Command>,
    },
    Maintainer(String),
    /// The trigger as written, stored in the image's `OnBuild`.
    Onbuild(String),
}

impl Kind {
    /// The instruction's keyword, upper case.
    pub fn keyword(&self) -> &'static str {
        match self {
            Kind::From { .. } => "FROM",
            Kind::Run { .. } => "RUN",
            Kind::Copy { add: true, .. } => "ADD",
            Kind::Copy { add: false, .. } => "COPY",
            Kind::Env(_) => "ENV",
            Kind::Arg(_) => "ARG",
            Kind::Label(_) => "LABEL",
            Kind::Workdir(_) => "WORKDIR",
            Kind::User(_) => "USER",
            Kind::Cmd(_) => "CMD",
            Kind::Entrypoint(_) => "ENTRYPOINT",
            Kind::Shell(_) => "SHELL",
            Kind::Expose(_) => "EXPOSE",
            Kind::Volume(_) => "VOLUME",
            Kind::Stopsignal(_) => "STOPSIGNAL",
            Kind::Healthcheck { .. } => "HEALTHCHECK",
            Kind::Maintainer(_) => "MAINTAINER",
            Kind::Onbuild(_) => "ONBUILD",
        }
    }
}

/// `--name=value` before an instruction's arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Flag {
    pub name: String,
    pub value: Option<String>,
}

/// `RUN`, `CMD`, `ENTRYPOINT`, `HEALTHCHECK CMD`.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `["executable", "arg"]`: run as is, nothing expanded.
    Exec(Vec<String>),
    /// Run by the stage's shell (`/bin/sh -c` unless `SHELL` changed it).
    Shell(String),
}

/// A source of `COPY` or `ADD`.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Path(String),
    /// `COPY <<EOF /dest`: a file of this content, named after the
    /// delimiter when the destination is a directory.
    HereDoc {
        name: String,
        content: String,
        expand: bool,
    },
}

/// A Dockerfile the parser refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Dockerfile parse error line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

pub fn parse(text: &str) -> Result<Dockerfile, ParseError> {
    let parsed = pd::parse(text).map_err(|e| {
        let message = e.to_string();
        // The crate appends the position; the line is said once, first.
        let message = match message.rfind(" at line ") {
            Some(i) => message[..i].to_owned(),
            None => message,
        };
        ParseError {
            line: e.line(),
            message,
        }
    })?;
    let escape = parsed
        .parser_directives
        .escape
        .as_ref()
        .map_or('\\', |d| d.value.value);
    let lines = LineIndex::new(text);
    let convert = |instruction: &pd::Instruction<'_>| -> Result<Instruction, ParseError> {
        let start = keyword_span(instruction).start;
        let line = lines.line(start);
        let kind =
            kind(instruction, text, escape).map_err(|message| ParseError { line, message })?;
        let end = end_of(instruction, text).max(start);
        let shown = match &kind {
            // A here-document shows as its first line.
            Kind::Run { .. } | Kind::Copy { .. } if has_here_doc(instruction) => text[start..end]
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
            _ => join_lines(&text[start..end], escape),
        };
        Ok(Instruction {
            line,
            text: shown.trim().to_owned(),
            kind,
        })
    };
    let mut global_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for instruction in &parsed.instructions {
        let converted = convert(instruction)?;
        match (&converted.kind, stages.last_mut()) {
            (Kind::From { .. }, _) => stages.push(Stage {
                from: converted,
                steps: Vec::new(),
            }),
            (_, Some(stage)) => stage.steps.push(converted),
            (_, None) => global_args.push(converted),
        }
    }
    Ok(Dockerfile {
        escape,
        global_args,
        stages,
    })
}

/// Byte offset → 1-based line.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|&s| s <= offset)
    }
}

/// Joins continuation lines as Docker does: a line ending with the escape
/// character continues on the next; blank and comment lines inside a
/// continuation are dropped.
pub fn join_lines(raw: &str, escape: char) -> String {
    let mut out = String::new();
    let mut continuing = false;
    for line in raw.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if continuing {
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
        }
        let body = line.trim_end();
        match body.strip_suffix(escape) {
            Some(head) => {
                out.push_str(head);
                continuing = true;
            }
            None => {
                out.push_str(line);
                continuing = false;
            }
        }
    }
    out
}

fn has_here_doc(instruction: &pd::Instruction<'_>) -> bool {
    match instruction {
        pd::Instruction::Run(run) => !run.here_docs.is_empty(),
        pd::Instruction::Copy(copy) => copy.src.iter().any(|s| matches!(s, pd::Source::HereDoc(_))),
        pd::Instruction::Add(add) => add.src.iter().any(|s| matches!(s, pd::Source::HereDoc(_))),
        _ => false,
    }
}

fn keyword_span(instruction: &pd::Instruction<'_>) -> pd::Span {
    use pd::Instruction as I;
    match instruction {
        I::Add(i) => i.add.span.clone(),
        I::Arg(i) => i.arg.span.clone(),
        I::Cmd(i) => i.cmd.span.clone(),
        I::Copy(i) => i.copy.span.clone(),
        I::Entrypoint(i) => i.entrypoint.span.clone(),
        I::Env(i) => i.env.span.clone(),
        I::Expose(i) => i.expose.span.clone(),
        I::From(i) => i.from.span.clone(),
        I::Healthcheck(i) => i.healthcheck.span.clone(),
        I::Label(i) => i.label.span.clone(),
        I::Maintainer(i) => i.maintainer.span.clone(),
        I::Onbuild(i) => i.onbuild.span.clone(),
        I::Run(i) => i.run.span.clone(),
        I::Shell(i) => i.shell.span.clone(),
        I::Stopsignal(i) => i.stopsignal.span.clone(),
        I::User(i) => i.user.span.clone(),
        I::Volume(i) => i.volume.span.clone(),
        I::Workdir(i) => i.workdir.span.clone(),
        _ => 0..0,
    }
}

fn command_end(command: &pd::Command<'_>) -> usize {
    match command {
        pd::Command::Exec(exec) => exec.span.end,
        pd::Command::Shell(shell) => shell.span.end,
        _ => 0,
    }
}

fn source_end(source: &pd::Source<'_>) -> usize {
    match source {
        pd::Source::Path(p) => p.span.end,
        pd::Source::HereDoc(h) => h.span.end,
        _ => 0,
    }
}

/// Where an instruction's text ends (its last argument; a closing `]` or
/// quote is taken in).
fn end_of(instruction: &pd::Instruction<'_>, text: &str) -> usize {
    use pd::Instruction as I;
    let end = match instruction {
        I::Add(i) => i.src.iter().map(source_end).chain([i.dest.span.end]).max(),
        I::Copy(i) => i.src.iter().map(source_end).chain([i.dest.span.end]).max(),
        I::Arg(i) => Some(i.arguments.span.end),
        I::Cmd(i) => Some(command_end(&i.arguments)),
        I::Entrypoint(i) => Some(command_end(&i.arguments)),
        I::Env(i) => Some(i.arguments.span.end),
        I::Expose(i) => i.arguments.iter().map(|a| a.span.end).max(),
        I::From(i) => Some(
            i.as_
                .as_ref()
                .map_or(i.image.span.end, |(_, name)| name.span.end),
        ),
        I::Healthcheck(i) => Some(match &i.arguments {
            pd::HealthcheckArguments::Cmd { arguments, .. } => command_end(arguments),
            pd::HealthcheckArguments::None { none, .. } => none.span.end,
            _ => i.healthcheck.span.end,
        }),
        I::Label(i) => Some(i.arguments.span.end),
        I::Maintainer(i) => Some(i.name.span.end),
        I::Onbuild(i) => Some(end_of(&i.instruction, text)),
        I::Run(i) => Some(
            i.here_docs
                .iter()
                .map(|h| h.span.end)
                .chain([command_end(&i.arguments)])
                .max()
                .unwrap_or_default(),
        ),
        I::Shell(i) => i.arguments.iter().map(|a| a.span.end).max(),
        I::Stopsignal(i) => Some(i.arguments.span.end),
        I::User(i) => Some(i.arguments.span.end),
        I::Volume(i) => Some(match &i.arguments {
            pd::JsonOrStringArray::Json(json) => json.span.end,
            pd::JsonOrStringArray::String(words) => {
                words.iter().map(|w| w.span.end).max().unwrap_or_default()
            }
        }),
        I::Workdir(i) => Some(i.arguments.span.end),
        _ => None,
    }
    .unwrap_or_default();
    // Take in a closing quote or bracket the value's span leaves out.
    let rest = &text[end.min(text.len())..];
    let line_rest = rest.split('\n').next().unwrap_or_default();
    let extra = line_rest.len() - line_rest.trim_start_matches(['"', '\'', ']']).len();
    (end + extra).min(text.len())
}

fn flags(options: &[pd::Flag<'_>]) -> Vec<Flag> {
    options
        .iter()
        .map(|f| Flag {
            name: f.name.value.to_string(),
            value: f.value.as_ref().map(|v| v.value.to_string()),
        })
        .collect()
}

fn command(command: &pd::Command<'_>, escape: char) -> Command {
    match command {
        pd::Command::Exec(exec) => {
            Command::Exec(exec.value.iter().map(|s| s.value.to_string()).collect())
        }
        pd::Command::Shell(shell) => Command::Shell(join_lines(shell.value, escape)),
        _ => Command::Shell(String::new()),
    }
}

/// The delimiters of the here-documents on an instruction's first line,
/// in order (`<<EOF`, `<<-'END'` → `EOF`, `END`).
fn here_doc_names(first_line: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = first_line;
    while let Some(i) = rest.find("<<") {
        rest = &rest[i + 2..];
        let word = rest.trim_start_matches('-');
        let end = word.find(|c: char| c.is_whitespace()).unwrap_or(word.len());
        let name: String = word[..end]
            .chars()
            .filter(|c| !matches!(c, '\'' | '"' | '\\'))
            .collect();
        names.push(name);
        rest = &word[end..];
    }
    names
}

fn sources(sources: &[pd::Source<'_>], first_line: &str) -> Vec<Source> {
    let mut names = here_doc_names(first_line).into_iter();
    sources
        .iter()
        .map(|s| match s {
            pd::Source::Path(p) => Source::Path(p.value.to_string()),
            pd::Source::HereDoc(h) => Source::HereDoc {
                name: names.next().unwrap_or_default(),
                content: h.value.to_string(),
                expand: h.expand,
            },
            _ => Source::Path(String::new()),
        })
        .collect()
}

fn kind(instruction: &pd::Instruction<'_>, text: &str, escape: char) -> Result<Kind, String> {
    use pd::Instruction as I;
    let keyword = keyword_span(instruction);
    let first_line = text[keyword.start..].lines().next().unwrap_or_default();
    Ok(match instruction {
        I::From(i) => Kind::From {
            image: i.image.value.to_string(),
            name: i.as_.as_ref().map(|(_, n)| n.value.to_string()),
            flags: flags(&i.options),
        },
        I::Run(i) => {
            let command = if i.here_docs.is_empty() {
                command(&i.arguments, escape)
            } else {
                run_here_doc(i, text, keyword.end)
            };
            Kind::Run {
                command,
                flags: flags(&i.options),
            }
        }
        I::Copy(i) => Kind::Copy {
            add: false,
            flags: flags(&i.options),
            sources: sources(&i.src, first_line),
            dest: i.dest.value.to_string(),
        },
        I::Add(i) => Kind::Copy {
            add: true,
            flags: flags(&i.options),
            sources: sources(&i.src, first_line),
            dest: i.dest.value.to_string(),
        },
        I::Env(i) => Kind::Env(i.arguments.value.to_string()),
        I::Arg(i) => Kind::Arg(i.arguments.value.to_string()),
        I::Label(i) => Kind::Label(i.arguments.value.to_string()),
        I::Workdir(i) => Kind::Workdir(i.arguments.value.to_string()),
        I::User(i) => Kind::User(i.arguments.value.to_string()),
        I::Cmd(i) => Kind::Cmd(command(&i.arguments, escape)),
        I::Entrypoint(i) => Kind::Entrypoint(command(&i.arguments, escape)),
        I::Shell(i) => Kind::Shell(i.arguments.iter().map(|a| a.value.to_string()).collect()),
        I::Expose(i) => Kind::Expose(i.arguments.iter().map(|a| a.value.to_string()).collect()),
        I::Volume(i) => Kind::Volume(match &i.arguments {
            pd::JsonOrStringArray::Json(json) => {
                json.value.iter().map(|a| a.value.to_string()).collect()
            }
            pd::JsonOrStringArray::String(words) => {
                words.iter().map(|a| a.value.to_string()).collect()
            }
        }),
        I::Stopsignal(i) => Kind::Stopsignal(i.arguments.value.to_string()),
        I::Healthcheck(i) => Kind::Healthcheck {
            flags: flags(&i.options),
            command: match &i.arguments {
                pd::HealthcheckArguments::Cmd { arguments, .. } => Some(command(arguments, escape)),
                _ => None,
            },
        },
        I::Maintainer(i) => Kind::Maintainer(i.name.value.to_string()),
        I::Onbuild(i) => {
            let inner = keyword_span(&i.instruction).start;
            let end = end_of(&i.instruction, text).max(inner);
            Kind::Onbuild(join_lines(&text[inner..end], escape).trim().to_owned())
        }
        _ => return Err("unsupported instruction".to_owned()),
    })
}

/// `RUN <<EOF` runs the document as a script; `RUN <<EOF python3` gives
/// it to the shell with the rest of the line (the shell reads the
/// here-document itself).
fn run_here_doc(run: &pd::RunInstruction<'_>, text: &str, after_keyword: usize) -> Command {
    let rest = match &run.arguments {
        pd::Command::Shell(shell) => shell.value.trim(),
        _ => "",
    };
    if rest.is_empty() && run.here_docs.len() == 1 {
        return Command::Shell(run.here_docs[0].value.to_string());
    }
    let start = text[after_keyword..]
        .find("<<")
        .map_or(after_keyword, |i| after_keyword + i);
    let last = run
        .here_docs
        .iter()
        .map(|h| h.span.end)
        .max()
        .unwrap_or(start);
    // Through the delimiter line that ends the last document.
    let end = text[last..].find('\n').map_or(text.len(), |i| last + i);
    Command::Shell(text[start..end].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_steps_lines_and_shown_text() {
        let text = "# escape=\\\nARG BASE=busybox\nFROM ${BASE}:test AS build\nENV A=1 \\\n    B=\"two words\"\nRUN echo a && \\\n  # comment\n  echo b\nCOPY --from=build --chown=1:2 a b* /dest/\nCMD [\"sh\", \"-c\", \"x\"]\n\nfrom scratch\nLABEL \"k\"=\"v\"\n";
        let file = parse(text).unwrap();
        assert_eq!(file.escape, '\\');
        assert_eq!(file.global_args.len(), 1);
        assert_eq!(file.global_args[0].kind, Kind::Arg("BASE=busybox".into()));
        assert_eq!(file.stages.len(), 2);
        let stage = &file.stages[0];
        assert_eq!(stage.from.line, 3);
        assert_eq!(stage.from.text, "FROM ${BASE}:test AS build");
        assert_eq!(
            stage.from.kind,
            Kind::From {
                image: "${BASE}:test".into(),
                name: Some("build".into()),
                flags: vec![]
            }
        );
        let lines: Vec<usize> = stage.steps.iter().map(|s| s.line).collect();
        assert_eq!(lines, [4, 6, 9, 10]);
        assert_eq!(stage.steps[0].text, "ENV A=1     B=\"two words\"");
        assert_eq!(
            stage.steps[1].kind,
            Kind::Run {
                command: Command::Shell("echo a &&   echo b".into()),
                flags: vec![]
            }
        );
        assert_eq!(stage.steps[1].text, "RUN echo a &&   echo b");
        let Kind::Copy {
            add,
            flags,
            sources,
            dest,
        } = &stage.steps[2].kind
        else {
            panic!("{:?}", stage.steps[2]);
        };
        assert!(!add);
        assert_eq!(flags[0].name, "from");
        assert_eq!(flags[1].value.as_deref(), Some("1:2"));
        assert_eq!(
            sources,
            &[Source::Path("a".into()), Source::Path("b*".into())]
        );
        assert_eq!(dest, "/dest/");
        assert_eq!(stage.steps[3].text, "CMD [\"sh\", \"-c\", \"x\"]");
        assert_eq!(
            stage.steps[3].kind,
            Kind::Cmd(Command::Exec(vec!["sh".into(), "-c".into(), "x".into()]))
        );
        assert_eq!(file.stages[1].from.line, 12);
        assert_eq!(file.stages[1].steps[0].text, "LABEL \"k\"=\"v\"");
    }

    #[test]
    fn here_documents() {
        let text = "FROM x\nRUN <<EOF\necho hi\nEOF\nRUN <<EOF python3\nprint(1)\nEOF\nCOPY <<-'END' /dest/\n\tdata $X\nEND\n";
        let file = parse(text).unwrap();
        let steps = &file.stages[0].steps;
        assert_eq!(
            steps[0].kind,
            Kind::Run {
                command: Command::Shell("echo hi\n".into()),
                flags: vec![]
            }
        );
        assert_eq!(steps[0].text, "RUN <<EOF");
        assert_eq!(
            steps[1].kind,
            Kind::Run {
                command: Command::Shell("<<EOF python3\nprint(1)\nEOF".into()),
                flags: vec![]
            }
        );
        let Kind::Copy { sources, .. } = &steps[2].kind else {
            panic!()
        };
        assert_eq!(
            sources,
            &[Source::HereDoc {
                name: "END".into(),
                content: "data $X\n".into(),
                expand: false
            }]
        );
        assert_eq!(steps[2].line, 8);
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse("FROM x\nRUN a\nFOO bar\n").unwrap_err();
        assert_eq!(err.line, 3);
        assert_eq!(
            err.to_string(),
            "Dockerfile parse error line 3: unknown instruction 'FOO'"
        );
        assert_eq!(parse("RUN x\n").unwrap_err().line, 1);
        assert_eq!(parse("FROM x\nCOPY a\n").unwrap_err().line, 2);
    }

    #[test]
    fn escape_directive_and_joined_lines() {
        let file = parse("# escape=`\nFROM x\nRUN echo a `\n  b\n").unwrap();
        assert_eq!(file.escape, '`');
        assert_eq!(
            file.stages[0].steps[0].kind,
            Kind::Run {
                command: Command::Shell("echo a   b".into()),
                flags: vec![]
            }
        );
        assert_eq!(join_lines("a \\\n\n# c\nb", '\\'), "a b");
    }
}
