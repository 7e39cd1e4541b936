//! Variable expansion and word splitting in Dockerfile instructions, with
//! Docker's rules: `$NAME`, `${NAME}`, `${NAME:-word}`, `${NAME-word}`,
//! `${NAME:+word}`, `${NAME+word}`, `${NAME:?message}`; nothing expands
//! in single quotes; in double quotes the escape character escapes only
//! `"`, `$` and itself; outside quotes it escapes anything. Splitting into
//! words happens after expansion, on whitespace outside quotes.

/// What went wrong expanding a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LexError {
    #[error("unexpected end of statement while looking for matching {0}")]
    Unterminated(&'static str),
    #[error("{name}: {message}")]
    Required { name: String, message: String },
    #[error("bad substitution in {0:?}")]
    BadSubstitution(String),
}

/// The variables an instruction sees: build args in scope, then the
/// image's `ENV` over them (the last of a name wins).
pub type Vars = [(String, String)];

fn lookup<'a>(vars: &'a Vars, name: &str) -> Option<&'a str> {
    vars.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Expands `text` as one word (quotes removed, nothing split).
pub fn word(text: &str, escape: char, vars: &Vars) -> Result<String, LexError> {
    let mut lexer = Lexer::new(text, escape, vars, false);
    lexer.run()?;
    Ok(lexer.words.concat())
}

/// Expands `text` and splits it into words on unquoted whitespace.
pub fn words(text: &str, escape: char, vars: &Vars) -> Result<Vec<String>, LexError> {
    let mut lexer = Lexer::new(text, escape, vars, true);
    lexer.run()?;
    Ok(lexer.words)
}

/// Splits without expanding, keeping quotes and escapes: how `ENV` and
/// `LABEL` find their `key=value` pairs before each value is expanded.
pub fn raw_words(text: &str, escape: char) -> Result<Vec<String>, LexError> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) if c == q => {
                quote = None;
                word.push(c);
            }
            Some('"') if c == escape => {
                word.push(c);
                if let Some(next) = chars.next() {
                    word.push(next);
                }
            }
            Some(_) => word.push(c),
            None if c == escape => {
                word.push(c);
                if let Some(next) = chars.next() {
                    word.push(next);
                }
            }
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                word.push(c);
            }
            None if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            None => word.push(c),
        }
    }
    if let Some(q) = quote {
        return Err(LexError::Unterminated(if q == '"' {
            "double-quote"
        } else {
            "single-quote"
        }));
    }
    if !word.is_empty() {
        words.push(word);
    }
    Ok(words)
}

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    vars: &'a Vars,
    split: bool,
    words: Vec<String>,
    /// Whether the current word has begun (`""` is a word too).
    started: bool,
}

impl<'a> Lexer<'a> {
    fn new(text: &str, escape: char, vars: &'a Vars, split: bool) -> Lexer<'a> {
        Lexer {
            chars: text.chars().collect(),
            pos: 0,
            escape,
            vars,
            split,
            words: Vec::new(),
            started: false,
        }
    }

    fn push(&mut self, c: char) {
        if !self.started {
            self.words.push(String::new());
            self.started = true;
        }
        self.words.last_mut().expect("a word was started").push(c);
    }

    fn push_str(&mut self, s: &str) {
        for c in s.chars() {
            self.push(c);
        }
    }

    fn begin(&mut self) {
        if !self.started {
            self.words.push(String::new());
            self.started = true;
        }
    }

    fn end_word(&mut self) {
        self.started = false;
    }

    fn run(&mut self) -> Result<(), LexError> {
        while let Some(&c) = self.chars.get(self.pos) {
            self.pos += 1;
            if c == self.escape {
                match self.chars.get(self.pos) {
                    Some(&next) => {
                        self.pos += 1;
                        self.push(next);
                    }
                    None => self.push(c),
                }
            } else if c == '\'' {
                self.begin();
                loop {
                    match self.chars.get(self.pos) {
                        None => return Err(LexError::Unterminated("single-quote")),
                        Some('\'') => {
                            self.pos += 1;
                            break;
                        }
                        Some(&c) => {
                            self.pos += 1;
                            self.push(c);
                        }
                    }
                }
            } else if c == '"' {
                self.begin();
                loop {
                    match self.chars.get(self.pos) {
                        None => return Err(LexError::Unterminated("double-quote")),
                        Some('"') => {
                            self.pos += 1;
                            break;
                        }
                        Some(&e) if e == self.escape => {
                            self.pos += 1;
                            match self.chars.get(self.pos) {
                                Some(&n) if n == '"' || n == '$' || n == self.escape => {
                                    self.pos += 1;
                                    self.push(n);
                                }
                                _ => self.push(e),
                            }
                        }
                        Some('$') => {
                            self.pos += 1;
                            let value = self.dollar()?;
                            self.push_str(&value);
                        }
                        Some(&c) => {
                            self.pos += 1;
                            self.push(c);
                        }
                    }
                }
            } else if c == '$' {
                let value = self.dollar()?;
                if self.split {
                    // An unquoted value is split like the rest of the line.
                    let mut first = true;
                    let leading_space = value.starts_with(char::is_whitespace);
                    for part in value.split_whitespace() {
                        if !first || leading_space {
                            self.end_word();
                        }
                        self.push_str(part);
                        first = false;
                    }
                    if value.ends_with(char::is_whitespace) && !value.trim().is_empty() {
                        self.end_word();
                    }
                } else {
                    self.push_str(&value);
                }
            } else if self.split && c.is_whitespace() {
                self.end_word();
            } else {
                self.push(c);
            }
        }
        Ok(())
    }

    /// After a `$`: the variable's value, or `$` itself when no name follows.
    fn dollar(&mut self) -> Result<String, LexError> {
        match self.chars.get(self.pos) {
            Some('{') => {
                self.pos += 1;
                self.braced()
            }
            Some(&c) if c.is_ascii_alphabetic() || c == '_' => {
                let name = self.name();
                Ok(lookup(self.vars, &name).unwrap_or_default().to_owned())
            }
            _ => Ok("$".to_owned()),
        }
    }

    fn name(&mut self) -> String {
        let start = self.pos;
        while self
            .chars
            .get(self.pos)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
        {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    /// `${...}` after the `{`.
    fn braced(&mut self) -> Result<String, LexError> {
        let start = self.pos;
        let name = self.name();
        let shown = || format!("${{{}", self.chars[start..].iter().collect::<String>());
        if name.is_empty() {
            return Err(LexError::BadSubstitution(shown()));
        }
        let value = lookup(self.vars, &name).map(str::to_owned);
        let colon = self.chars.get(self.pos) == Some(&':');
        if colon {
            self.pos += 1;
        }
        let operator = match self.chars.get(self.pos) {
            Some('}') if !colon => {
                self.pos += 1;
                return Ok(value.unwrap_or_default());
            }
            Some(&op @ ('-' | '+' | '?')) => {
                self.pos += 1;
                op
            }
            _ => return Err(LexError::BadSubstitution(shown())),
        };
        let word_text = self.until_brace()?;
        // `:` also treats an empty value as unset.
        let set = match &value {
            Some(v) => !(colon && v.is_empty()),
            None => false,
        };
        let inner = || word(&word_text, self.escape, self.vars);
        Ok(match operator {
            '-' if set => value.unwrap_or_default(),
            '-' => inner()?,
            '+' if set => inner()?,
            '+' => String::new(),
            _ if set => value.unwrap_or_default(),
            _ => {
                let message = inner()?;
                return Err(LexError::Required {
                    name,
                    message: if message.is_empty() {
                        "is not allowed to be unset".to_owned()
                    } else {
                        message
                    },
                });
            }
        })
    }

    /// The raw text up to the `}` that closes the current `${`.
    fn until_brace(&mut self) -> Result<String, LexError> {
        let mut depth = 0;
        let mut text = String::new();
        while let Some(&c) = self.chars.get(self.pos) {
            self.pos += 1;
            if c == self.escape {
                text.push(c);
                if let Some(&next) = self.chars.get(self.pos) {
                    self.pos += 1;
                    text.push(next);
                }
                continue;
            }
            match c {
                '}' if depth == 0 => return Ok(text),
                '}' => depth -= 1,
                '{' if text.ends_with('$') => depth += 1,
                _ => {}
            }
            text.push(c);
        }
        Err(LexError::Unterminated("'}'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vec<(String, String)> {
        [
            ("A", "one"),
            ("B", "two words"),
            ("EMPTY", ""),
            ("A", "uno"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn expands_like_docker() {
        let v = vars();
        let w = |t: &str| word(t, '\\', &v).unwrap();
        assert_eq!(w("$A"), "uno");
        assert_eq!(w("${A}x"), "unox");
        assert_eq!(w("'$A'"), "$A");
        assert_eq!(w("\"$A\""), "uno");
        assert_eq!(w("\\$A"), "$A");
        assert_eq!(w("${MISSING:-dflt}"), "dflt");
        assert_eq!(w("${EMPTY:-dflt}"), "dflt");
        assert_eq!(w("${EMPTY-dflt}"), "");
        assert_eq!(w("${A:+set}"), "set");
        assert_eq!(w("${MISSING:+set}"), "");
        assert_eq!(w("${MISSING:-${A}}"), "uno");
        assert_eq!(w("a$"), "a$");
        assert_eq!(w("$1"), "$1");
        assert_eq!(w("\"a\\b\""), "a\\b");
        assert_eq!(w("\"a\\\"b\""), "a\"b");
        assert_eq!(
            word("${MISSING:?must be set}", '\\', &v).unwrap_err(),
            LexError::Required {
                name: "MISSING".into(),
                message: "must be set".into()
            }
        );
        assert!(word("'open", '\\', &v).is_err());
        assert!(word("${A", '\\', &v).is_err());
        assert!(word("${}", '\\', &v).is_err());
    }

    #[test]
    fn splits_after_expansion() {
        let v = vars();
        assert_eq!(
            words("src \"$B\" $B '' dest", '\\', &v).unwrap(),
            ["src", "two words", "two", "words", "", "dest"]
        );
        assert_eq!(words("a\\ b c", '\\', &v).unwrap(), ["a b", "c"]);
        assert_eq!(words("x${B}y", '\\', &v).unwrap(), ["xtwo", "wordsy"]);
        assert_eq!(words("a`$A", '`', &v).unwrap(), ["a$A"]);
    }

    #[test]
    fn raw_words_keep_quotes() {
        assert_eq!(
            raw_words("a=1 b=\"two words\" c='x y' d=e\\ f", '\\').unwrap(),
            ["a=1", "b=\"two words\"", "c='x y'", "d=e\\ f"]
        );
        assert!(raw_words("a=\"open", '\\').is_err());
    }
}
