//! Which files are scanned, in which language, and how each one splits into code and comments.
//!
//! Rules: a file is scanned only when its name or extension maps to a [`Language`]; everything
//! else is counted as skipped without being read. [`split`] never changes byte offsets: the code
//! view has comments blanked to spaces and the comment view has code blanked, newlines kept in
//! both, so a match in either view maps to the same line of the original file.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The language (or file format) a scanned file is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Language {
    /// Go source (`*.go`).
    Go,
    /// `go.mod`, whose `require` lines name drivers.
    GoMod,
    /// Rust source (`*.rs`).
    Rust,
    /// TOML manifests (`Cargo.toml`, `pyproject.toml`, other `*.toml`).
    Toml,
    /// Python source (`*.py`).
    Python,
    /// pip requirement files (`requirements*.txt`).
    Requirements,
    /// Java and Kotlin source.
    Java,
    /// Maven `pom.xml`.
    Xml,
    /// Gradle build scripts.
    Gradle,
    /// JavaScript and TypeScript source.
    JavaScript,
    /// `package.json`.
    Json,
    /// YAML files, including Helm `templates/*.tpl`.
    Yaml,
    /// Prose: Markdown, reStructuredText, AsciiDoc, plain text. All of it counts as comment.
    Docs,
    /// PostgreSQL server configuration (`postgresql.conf`, `postgresql.auto.conf`, ...), read
    /// for `max_connections` and `superuser_reserved_connections`.
    PostgresConf,
}

impl Language {
    /// Maps a path to the language it is scanned as, or `None` when the file is not scanned.
    pub fn detect(path: &Path) -> Option<Language> {
        let name = path.file_name()?.to_str()?;
        let lower = name.to_ascii_lowercase();
        match lower.as_str() {
            "go.mod" => return Some(Language::GoMod),
            "package.json" => return Some(Language::Json),
            "pom.xml" => return Some(Language::Xml),
            "build.gradle" | "build.gradle.kts" => return Some(Language::Gradle),
            _ => {}
        }
        if lower.starts_with("requirements") && lower.ends_with(".txt") {
            return Some(Language::Requirements);
        }
        if lower.ends_with(".conf")
            && (lower.starts_with("postgres") || lower.ends_with("postgresql.conf"))
        {
            return Some(Language::PostgresConf);
        }
        let ext = lower.rsplit_once('.').map(|(_, e)| e)?;
        Some(match ext {
            "go" => Language::Go,
            "rs" => Language::Rust,
            "toml" => Language::Toml,
            "py" => Language::Python,
            "java" | "kt" => Language::Java,
            "js" | "mjs" | "cjs" | "jsx" | "ts" | "mts" | "cts" | "tsx" => Language::JavaScript,
            "yaml" | "yml" => Language::Yaml,
            // Helm helpers only matter inside a chart's templates directory.
            "tpl" if path.components().any(|c| c.as_os_str() == "templates") => Language::Yaml,
            "md" | "markdown" | "rst" | "adoc" | "txt" => Language::Docs,
            _ => return None,
        })
    }

    /// True for languages that carry program code (as opposed to manifests, YAML and prose).
    pub fn is_source(self) -> bool {
        matches!(
            self,
            Language::Go
                | Language::Rust
                | Language::Python
                | Language::Java
                | Language::JavaScript
        )
    }
}

/// A file split into two views of identical length: code with comments blanked, and comments
/// with code blanked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// The text with every comment byte replaced by a space (newlines kept).
    pub code: String,
    /// The text with every non-comment byte replaced by a space (newlines kept).
    pub comments: String,
}

/// How one language writes comments and strings; drives the single scanner in [`split`].
struct Syntax {
    line: &'static [&'static str],
    block: Option<(&'static str, &'static str)>,
    nested_blocks: bool,
    quotes: &'static [u8],
    /// Strings end at the end of the line (all but Rust): a stray quote cannot hide a file.
    single_line_strings: bool,
    /// Go raw strings and JavaScript templates.
    backtick_strings: bool,
    /// `#` starts a comment only at line start or after whitespace (YAML).
    hash_needs_space: bool,
    python: bool,
    rust: bool,
}

const C_LIKE: Syntax = Syntax {
    line: &["//"],
    block: Some(("/*", "*/")),
    nested_blocks: false,
    quotes: b"\"'",
    single_line_strings: true,
    backtick_strings: false,
    hash_needs_space: false,
    python: false,
    rust: false,
};

fn syntax(lang: Language) -> Option<Syntax> {
    Some(match lang {
        Language::Go => Syntax {
            backtick_strings: true,
            ..C_LIKE
        },
        Language::JavaScript => Syntax {
            backtick_strings: true,
            ..C_LIKE
        },
        Language::Java | Language::Gradle => C_LIKE,
        Language::Rust => Syntax {
            nested_blocks: true,
            quotes: b"\"",
            single_line_strings: false,
            rust: true,
            ..C_LIKE
        },
        Language::GoMod => Syntax {
            line: &["//"],
            block: None,
            quotes: b"\"",
            single_line_strings: true,
            ..C_LIKE
        },
        Language::Python => Syntax {
            line: &["#"],
            block: None,
            python: true,
            ..C_LIKE
        },
        Language::Yaml => Syntax {
            line: &["#"],
            block: None,
            single_line_strings: true,
            hash_needs_space: true,
            ..C_LIKE
        },
        Language::Toml | Language::Requirements | Language::PostgresConf => Syntax {
            line: &["#"],
            block: None,
            single_line_strings: true,
            ..C_LIKE
        },
        Language::Xml => Syntax {
            line: &[],
            block: Some(("<!--", "-->")),
            quotes: b"",
            ..C_LIKE
        },
        Language::Json => Syntax {
            line: &[],
            block: None,
            quotes: b"\"",
            ..C_LIKE
        },
        Language::Docs => return None,
    })
}

/// Splits `text` into its code and comment views according to `lang`'s comment syntax.
///
/// Prose ([`Language::Docs`]) is all comment. Python docstrings (a triple-quoted string that
/// starts a statement) count as comments; other strings stay code, because import paths and
/// DSNs live in strings.
pub fn split(lang: Language, text: &str) -> Split {
    let bytes = text.as_bytes();
    let mut code = bytes.to_vec();
    let mut comments: Vec<u8> = bytes
        .iter()
        .map(|&b| if b == b'\n' { b'\n' } else { b' ' })
        .collect();
    let mut mark = |from: usize, to: usize| {
        for i in from..to.min(bytes.len()) {
            if bytes[i] != b'\n' {
                comments[i] = bytes[i];
                code[i] = b' ';
            }
        }
    };
    match syntax(lang) {
        None => mark(0, bytes.len()),
        Some(syn) => scan(&syn, bytes, &mut mark),
    }
    Split {
        code: String::from_utf8(code)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        comments: String::from_utf8(comments)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

fn scan(syn: &Syntax, b: &[u8], mark: &mut impl FnMut(usize, usize)) {
    let n = b.len();
    let mut i = 0;
    while i < n {
        let c = b[i];
        // Line comments.
        if let Some(tok) = syn.line.iter().find(|t| b[i..].starts_with(t.as_bytes())) {
            let hash_ok =
                !syn.hash_needs_space || i == 0 || matches!(b[i - 1], b' ' | b'\t' | b'\n');
            if hash_ok {
                let end = line_end(b, i + tok.len());
                mark(i, end);
                i = end;
                continue;
            }
        }
        // Block comments.
        if let Some((open, close)) = syn.block {
            if b[i..].starts_with(open.as_bytes()) {
                let end = block_end(b, i + open.len(), open, close, syn.nested_blocks);
                mark(i, end);
                i = end;
                continue;
            }
        }
        if syn.python && (b[i..].starts_with(b"\"\"\"") || b[i..].starts_with(b"'''")) {
            let delim = &b[i..i + 3];
            let end = find(b, i + 3, delim).map_or(n, |p| p + 3);
            if starts_statement(b, i) {
                mark(i, end);
            }
            i = end;
            continue;
        }
        if syn.rust {
            if let Some(end) = rust_raw_string(b, i) {
                i = end;
                continue;
            }
            if c == b'\'' {
                i = rust_char_or_lifetime(b, i);
                continue;
            }
        }
        if syn.quotes.contains(&c) {
            i = string_end(b, i + 1, c, syn.single_line_strings);
            continue;
        }
        if syn.backtick_strings && c == b'`' {
            i = string_end(b, i + 1, b'`', false);
            continue;
        }
        i += 1;
    }
}

fn line_end(b: &[u8], from: usize) -> usize {
    b[from..]
        .iter()
        .position(|&c| c == b'\n')
        .map_or(b.len(), |p| from + p)
}

fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    if from >= b.len() {
        return None;
    }
    b[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
}

fn block_end(b: &[u8], mut i: usize, open: &str, close: &str, nested: bool) -> usize {
    let mut depth = 1usize;
    while i < b.len() {
        if b[i..].starts_with(close.as_bytes()) {
            depth -= 1;
            i += close.len();
            if depth == 0 {
                return i;
            }
        } else if nested && b[i..].starts_with(open.as_bytes()) {
            depth += 1;
            i += open.len();
        } else {
            i += 1;
        }
    }
    b.len()
}

/// Returns the index just past the closing quote (escapes honoured, except in backtick strings
/// of Go which have none; JavaScript templates are treated the same way, which is close enough).
fn string_end(b: &[u8], mut i: usize, quote: u8, single_line: bool) -> usize {
    while i < b.len() {
        let c = b[i];
        if c == b'\\' && quote != b'`' {
            i += 2;
            continue;
        }
        if c == quote {
            return i + 1;
        }
        if c == b'\n' && single_line {
            return i;
        }
        i += 1;
    }
    b.len()
}

/// True when only whitespace and string prefixes precede position `i` on its line, i.e. the
/// triple-quoted string is a statement of its own (a docstring), not an expression.
fn starts_statement(b: &[u8], i: usize) -> bool {
    let start = b[..i]
        .iter()
        .rposition(|&c| c == b'\n')
        .map_or(0, |p| p + 1);
    b[start..i]
        .iter()
        .all(|c| matches!(c, b' ' | b'\t' | b'r' | b'u' | b'R' | b'U'))
}

fn rust_raw_string(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i;
    if b.get(j) == Some(&b'b') {
        j += 1;
    }
    if b.get(j) != Some(&b'r') {
        return None;
    }
    if i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_') {
        return None;
    }
    j += 1;
    let hashes = b[j..].iter().take_while(|&&c| c == b'#').count();
    j += hashes;
    if b.get(j) != Some(&b'"') {
        return None;
    }
    let mut close = vec![b'"'];
    close.extend(std::iter::repeat_n(b'#', hashes));
    Some(find(b, j + 1, &close).map_or(b.len(), |p| p + close.len()))
}

fn rust_char_or_lifetime(b: &[u8], i: usize) -> usize {
    match b.get(i + 1) {
        Some(b'\\') => {
            // Escaped char literal: skip to the closing quote on this line.
            let mut j = i + 2;
            while j < b.len() && b[j] != b'\'' && b[j] != b'\n' {
                j += 1;
            }
            j + 1
        }
        Some(&c) => {
            let width = utf8_width(c);
            if b.get(i + 1 + width) == Some(&b'\'') {
                i + 2 + width
            } else {
                i + 1 // a lifetime or label
            }
        }
        None => i + 1,
    }
}

fn utf8_width(first: u8) -> usize {
    match first {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn views(lang: Language, text: &str) -> (String, String) {
        let s = split(lang, text);
        assert_eq!(s.code.len(), text.len(), "code view keeps offsets");
        assert_eq!(s.comments.len(), text.len(), "comment view keeps offsets");
        (s.code, s.comments)
    }

    #[test]
    fn go_line_and_block_comments_move_to_the_comment_view() {
        let (code, com) = views(
            Language::Go,
            "db.SetMaxOpenConns(1) // db.SetMaxOpenConns(2)\n/* sql.Open(\"x\") */ x := `// not a comment`\n",
        );
        assert!(code.contains("SetMaxOpenConns(1)"));
        assert!(!code.contains("SetMaxOpenConns(2)"));
        assert!(com.contains("SetMaxOpenConns(2)"));
        assert!(com.contains("sql.Open"));
        assert!(code.contains("`// not a comment`"), "raw strings are code");
    }

    #[test]
    fn comment_markers_inside_strings_are_not_comments() {
        let (code, com) = views(Language::Go, "dsn := \"postgres://h/db?x=1 // y\"\n");
        assert!(code.contains("// y"));
        assert!(com.trim().is_empty());
    }

    #[test]
    fn rust_nested_block_comments_and_lifetimes_are_handled() {
        let (code, com) = views(
            Language::Rust,
            "fn f<'a>(x: &'a str) {} /* outer /* inner */ PgPool::connect() */ let c = '\"'; PgPool::connect(u)\n",
        );
        assert!(com.contains("PgPool::connect()"));
        assert!(code.contains("PgPool::connect(u)"));
    }

    #[test]
    fn python_docstrings_are_comments_but_other_strings_are_code() {
        let text = "def f():\n    \"\"\"Call psycopg2.connect(dsn) here.\"\"\"\n    q = \"\"\"psycopg2.connect(x)\"\"\"\n";
        let (code, com) = views(Language::Python, text);
        assert!(com.contains("Call psycopg2.connect(dsn)"));
        assert!(code.contains("\"\"\"psycopg2.connect(x)\"\"\""));
    }

    #[test]
    fn yaml_hash_needs_leading_space_to_start_a_comment() {
        let (code, com) = views(
            Language::Yaml,
            "url: http://h/#frag # max: 1\nkey: 'a # b'\n",
        );
        assert!(code.contains("http://h/#frag"));
        assert!(com.contains("max: 1"));
        assert!(code.contains("'a # b'"));
    }

    #[test]
    fn prose_is_entirely_comment() {
        let (code, com) = views(Language::Docs, "db.SetMaxOpenConns(25)\n");
        assert!(code.trim().is_empty());
        assert!(com.contains("SetMaxOpenConns(25)"));
    }

    #[test]
    fn languages_are_detected_from_names_and_extensions() {
        assert_eq!(
            Language::detect(Path::new("a/go.mod")),
            Some(Language::GoMod)
        );
        assert_eq!(
            Language::detect(Path::new("x/requirements-dev.txt")),
            Some(Language::Requirements)
        );
        assert_eq!(
            Language::detect(Path::new("chart/templates/_h.tpl")),
            Some(Language::Yaml)
        );
        assert_eq!(Language::detect(Path::new("misc/_h.tpl")), None);
        assert_eq!(
            Language::detect(Path::new("deploy/pg/postgresql.conf")),
            Some(Language::PostgresConf)
        );
        assert_eq!(Language::detect(Path::new("etc/nginx.conf")), None);
        assert_eq!(Language::detect(Path::new("img.png")), None);
        assert_eq!(
            Language::detect(Path::new("src/app.spec.ts")),
            Some(Language::JavaScript)
        );
    }
}
