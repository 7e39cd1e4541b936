//! Path patterns: Go's `filepath.Match` (what COPY and ADD sources use)
//! and `.dockerignore`'s rules on top of it (`**` across directories, `!`
//! exceptions, the last matching line wins, a directory's pattern covers
//! everything below it).

/// One piece of a compiled pattern.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    Char(char),
    /// `?`: one character other than `/`.
    One,
    /// `*`: any run of characters other than `/`.
    Star,
    /// `**/` or `**` inside a `.dockerignore` pattern: any number of whole
    /// directories, none included.
    Dirs,
    /// `**` ending a `.dockerignore` pattern: anything at all.
    Rest,
    /// `[...]`: ranges, negated with `^` or `!`.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad pattern {pattern:?}: {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: &'static str,
}

impl Pattern {
    /// `filepath.Match` syntax: `*`, `?`, `[a-z]`, `[^a]`, `\` escapes.
    pub fn glob(pattern: &str) -> Result<Pattern, PatternError> {
        Pattern::compile(pattern, false)
    }

    /// `.dockerignore` syntax: the same, and `**` for any directories.
    pub fn ignore(pattern: &str) -> Result<Pattern, PatternError> {
        Pattern::compile(pattern, true)
    }

    fn compile(pattern: &str, double_star: bool) -> Result<Pattern, PatternError> {
        let bad = |reason| PatternError {
            pattern: pattern.to_owned(),
            reason,
        };
        let mut tokens = Vec::new();
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '*' if double_star && chars.peek() == Some(&'*') => {
                    chars.next();
                    if chars.peek() == Some(&'/') {
                        chars.next();
                    }
                    tokens.push(if chars.peek().is_none() {
                        Token::Rest
                    } else {
                        Token::Dirs
                    });
                }
                '*' => tokens.push(Token::Star),
                '?' => tokens.push(Token::One),
                '\\' => tokens.push(Token::Char(
                    chars.next().ok_or_else(|| bad("a trailing \\"))?,
                )),
                '[' => {
                    let negated = matches!(chars.peek(), Some('^' | '!'));
                    if negated {
                        chars.next();
                    }
                    let mut ranges = Vec::new();
                    let mut closed = false;
                    while let Some(c) = chars.next() {
                        let low = match c {
                            ']' if !ranges.is_empty() => {
                                closed = true;
                                break;
                            }
                            '\\' => chars.next().ok_or_else(|| bad("a trailing \\"))?,
                            c => c,
                        };
                        let high = if chars.peek() == Some(&'-') {
                            chars.next();
                            match chars.next() {
                                Some('\\') => chars.next().ok_or_else(|| bad("a trailing \\"))?,
                                Some(']') | None => return Err(bad("an unfinished range")),
                                Some(c) => c,
                            }
                        } else {
                            low
                        };
                        if high < low {
                            return Err(bad("a range goes down"));
                        }
                        ranges.push((low, high));
                    }
                    if !closed {
                        return Err(bad("an unclosed ["));
                    }
                    tokens.push(Token::Class { negated, ranges });
                }
                c => tokens.push(Token::Char(c)),
            }
        }
        Ok(Pattern { tokens })
    }

    /// Whether the pattern matches all of `path` (`/`-separated).
    pub fn matches(&self, path: &str) -> bool {
        let text: Vec<char> = path.chars().collect();
        match_at(&self.tokens, &text)
    }

    /// Whether the pattern has any wildcard at all.
    pub fn is_literal(&self) -> bool {
        self.tokens.iter().all(|t| matches!(t, Token::Char(_)))
    }
}

fn match_at(tokens: &[Token], text: &[char]) -> bool {
    let Some((token, rest)) = tokens.split_first() else {
        return text.is_empty();
    };
    match token {
        Token::Char(c) => text.first() == Some(c) && match_at(rest, &text[1..]),
        Token::One => text.first().is_some_and(|&c| c != '/') && match_at(rest, &text[1..]),
        Token::Class { negated, ranges } => {
            text.first().is_some_and(|&c| {
                c != '/' && ranges.iter().any(|&(l, h)| l <= c && c <= h) != *negated
            }) && match_at(rest, &text[1..])
        }
        Token::Star => {
            let run = text.iter().take_while(|&&c| c != '/').count();
            (0..=run).any(|n| match_at(rest, &text[n..]))
        }
        Token::Rest => true,
        Token::Dirs => {
            // Nothing, or anything up to and including a `/`.
            match_at(rest, text)
                || text
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| **c == '/')
                    .any(|(i, _)| match_at(rest, &text[i + 1..]))
        }
    }
}

/// Cleans a relative path as Go's `filepath.Clean` would, without a
/// leading `/` or `./`: `a//b/./c/` → `a/b/c`; `..` above the top stays
/// at the top. The empty path is `.`.
pub fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        ".".to_owned()
    } else {
        parts.join("/")
    }
}

/// The lines of a `.dockerignore`, compiled.
#[derive(Debug, Clone, Default)]
pub struct IgnoreList {
    rules: Vec<(Pattern, bool)>,
}

impl IgnoreList {
    /// Reads `.dockerignore`: one pattern a line, `#` comments, blank
    /// lines skipped, `!` for an exception.
    pub fn parse(text: &str) -> Result<IgnoreList, PatternError> {
        let mut rules = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (exception, pattern) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let pattern = clean(pattern);
            if pattern == "." {
                // `.` or `/` would ignore the whole context: Docker drops it.
                continue;
            }
            rules.push((Pattern::ignore(&pattern)?, exception));
        }
        Ok(IgnoreList { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether `path` (relative, clean) is left out of the context: the
    /// last rule matching it or one of its parent directories decides.
    pub fn excludes(&self, path: &str) -> bool {
        let mut excluded = false;
        for (pattern, exception) in &self.rules {
            if matches_or_parent(pattern, path) {
                excluded = !exception;
            }
        }
        excluded
    }

    /// Whether some exception could bring back something below `dir`, so
    /// an excluded directory must still be looked into.
    pub fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|(_, exception)| *exception)
    }
}

fn matches_or_parent(pattern: &Pattern, path: &str) -> bool {
    if pattern.matches(path) {
        return true;
    }
    let mut parent = path;
    while let Some((p, _)) = parent.rsplit_once('/') {
        if pattern.matches(p) {
            return true;
        }
        parent = p;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_go() {
        let cases = [
            ("*.txt", "a.txt", true),
            ("*.txt", "dir/a.txt", false),
            ("dir/*", "dir/a", true),
            ("dir/*", "dir/a/b", false),
            ("a?c", "abc", true),
            ("a?c", "a/c", false),
            ("[a-c]x", "bx", true),
            ("[^a-c]x", "bx", false),
            ("[!a-c]x", "dx", true),
            ("\\*", "*", true),
            ("\\*", "a", false),
            ("file", "file", true),
            ("*", "", true),
        ];
        for (pattern, path, want) in cases {
            assert_eq!(
                Pattern::glob(pattern).unwrap().matches(path),
                want,
                "{pattern} {path}"
            );
        }
        assert!(Pattern::glob("[a").is_err());
        assert!(Pattern::glob("a\\").is_err());
        assert!(Pattern::glob("a").unwrap().is_literal());
        assert!(!Pattern::glob("a*").unwrap().is_literal());
    }

    #[test]
    fn double_stars_cross_directories_in_ignore_files() {
        let p = Pattern::ignore("**/*.log").unwrap();
        for path in ["a.log", "x/a.log", "x/y/a.log"] {
            assert!(p.matches(path), "{path}");
        }
        assert!(!p.matches("a.txt"));
        let p = Pattern::ignore("build/**").unwrap();
        assert!(p.matches("build/a/b"));
        let p = Pattern::ignore("a/**/z").unwrap();
        for path in ["a/z", "a/b/z", "a/b/c/z"] {
            assert!(p.matches(path), "{path}");
        }
        assert!(!p.matches("b/z"));
    }

    #[test]
    fn dockerignore_rules_with_exceptions_and_directories() {
        let list = IgnoreList::parse(
            "# comment\n\n/secret\n*.md\n!README.md\nnode_modules\n./build/\ntmp*\n!tmpkeep\n",
        )
        .unwrap();
        assert!(list.excludes("secret"));
        assert!(list.excludes("secret/key"));
        assert!(list.excludes("notes.md"));
        assert!(!list.excludes("README.md"));
        assert!(!list.excludes("docs/notes.md"));
        assert!(list.excludes("node_modules/x/y.js"));
        assert!(list.excludes("build/out"));
        assert!(list.excludes("tmpfile"));
        assert!(!list.excludes("tmpkeep"));
        assert!(!list.excludes("src/main.rs"));
        assert!(list.has_exceptions());
    }

    #[test]
    fn paths_clean_like_go() {
        assert_eq!(clean("./a//b/./c/"), "a/b/c");
        assert_eq!(clean("/a/../../b"), "b");
        assert_eq!(clean(""), ".");
        assert_eq!(clean("/"), ".");
    }
}
