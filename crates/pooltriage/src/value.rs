//! Extracting a pool setting's value expression and deciding whether it is hard-coded.
//!
//! Rule: a value is [`ValueSource::Literal`] when it is a number, a quoted number or duration,
//! or arithmetic over those and well-known library constants and pure constructors
//! (`5 * time.Minute`, `Duration::from_secs(30)`, `TimeUnit.MINUTES.toMillis(5)`). Anything
//! that names a variable, field or other call is [`ValueSource::Config`]: the value comes from
//! somewhere a deployment can change. Named constants are deliberately not resolved, so
//! `SetMaxOpenConns(defaultMaxOpen)` counts as from-config (see the README's limitations).

use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// Whether a pool value is written into the code/manifest or comes from configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ValueSource {
    /// Hard-coded: numbers and arithmetic of numbers and library constants.
    Literal,
    /// Anything referencing a variable, field, call, template or environment.
    Config,
}

/// Library constants that stand for a number (replaced by `1` before tokenising).
static CONSTANTS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"\btime\.(?:Nanosecond|Microsecond|Millisecond|Second|Minute|Hour)\b|\b(?:u8|u16|u32|u64|usize|i32|i64)::MAX\b|\bmath\.MaxInt(?:32|64)?\b|\bInteger\.MAX_VALUE\b",
    )
    .expect("constant pattern compiles")
});

/// Pure wrappers around a literal (replaced by nothing, leaving their parentheses).
static WRAPPERS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"\btime\.Duration\b|(?:\b(?:std|core)::time::)?\bDuration::from_[a-z]+\b|\bSome\b|\bNonZeroU\d+::new\b|\b(?:java\.util\.concurrent\.)?TimeUnit\.[A-Z]+\.to[A-Za-z]+\b|\bDuration\.of[A-Za-z]+\b|\btimedelta\s*\(\s*(?:[a-z]+\s*=\s*)?|\b(?:int|float)\b",
    )
    .expect("wrapper pattern compiles")
});

/// Classifies a source-code expression (the argument of a setter, the right side of `=`).
pub fn classify_expr(expr: &str) -> ValueSource {
    let expr = expr.trim();
    if let Some(inner) = unquote(expr) {
        return classify_scalar_text(inner);
    }
    let replaced = CONSTANTS.replace_all(expr, "1");
    let replaced = WRAPPERS.replace_all(&replaced, "(");
    if is_arithmetic_of_numbers(&replaced) {
        ValueSource::Literal
    } else {
        ValueSource::Config
    }
}

/// Classifies a YAML scalar written in a manifest or Helm template. Templates (`{{ }}`) and
/// environment substitution (`${VAR}`, `$(VAR)`) are from-config; anything else written there is
/// a hard-coded value.
pub fn classify_yaml_scalar(raw: &str) -> ValueSource {
    let v = raw.trim();
    if v.contains("{{") || v.contains("${") || v.contains("$(") {
        ValueSource::Config
    } else {
        ValueSource::Literal
    }
}

fn classify_scalar_text(s: &str) -> ValueSource {
    static DURATION: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^\s*\d+(?:\.\d+)?(?:(?:ns|us|µs|ms|s|m|h|d)(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))*)?\s*$")
            .expect("duration pattern compiles")
    });
    if DURATION.is_match(s) {
        ValueSource::Literal
    } else {
        ValueSource::Config
    }
}

fn unquote(s: &str) -> Option<&str> {
    let first = s.chars().next()?;
    if matches!(first, '"' | '\'' | '`') && s.len() >= 2 && s.ends_with(first) {
        Some(&s[1..s.len() - 1])
    } else {
        None
    }
}

fn is_arithmetic_of_numbers(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let mut numbers = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_digit() {
            numbers += 1;
            // A literal with its suffix, base prefix, separators, fraction and exponent.
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                i += 1;
            }
        } else if matches!(
            c,
            b'+' | b'-' | b'*' | b'/' | b'%' | b'(' | b')' | b' ' | b'\t' | b'\r' | b'\n'
        ) {
            i += 1;
        } else {
            return false;
        }
    }
    numbers > 0
}

/// Extracts the value expression that starts at byte `start` of `text`: leading whitespace is
/// skipped, then text is taken up to the first `,` `)` `]` `}` `;` or newline outside brackets
/// and quotes. Returns `None` for an empty value or an `==` comparison.
pub fn extract(text: &str, start: usize) -> Option<(usize, usize)> {
    let b = text.as_bytes();
    let mut i = start;
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\r' | b'\n') {
        i += 1;
    }
    if i >= b.len() || b[i] == b'=' {
        return None;
    }
    let from = i;
    let mut depth = 0usize;
    let mut quote: Option<u8> = None;
    while i < b.len() {
        let c = b[i];
        if let Some(q) = quote {
            if c == b'\\' {
                i += 2;
                continue;
            }
            if c == q {
                quote = None;
            } else if c == b'\n' {
                break;
            }
            i += 1;
            continue;
        }
        match c {
            b'"' | b'\'' | b'`' => quote = Some(c),
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' if depth == 0 => break,
            b')' | b']' | b'}' => depth -= 1,
            b',' | b';' | b'\n' if depth == 0 => break,
            _ => {}
        }
        i += 1;
    }
    let value = text.get(from..i.min(b.len()))?.trim_end();
    if value.is_empty() {
        None
    } else {
        Some((from, from + value.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_arithmetic_of_constants_are_literal() {
        let literal = [
            ("25", "integer"),
            ("5*time.Minute", "Go duration arithmetic"),
            (
                "time.Duration(30) * time.Second",
                "Go conversion of a literal",
            ),
            ("10u32", "Rust suffix"),
            ("10_000", "separators"),
            ("Duration::from_secs(30)", "Rust duration constructor"),
            (
                "Some(std::time::Duration::from_secs(1800))",
                "Option-wrapped duration",
            ),
            ("TimeUnit.MINUTES.toMillis(5)", "Java TimeUnit"),
            ("\"100\"", "quoted number"),
            ("'5m'", "quoted duration"),
            ("1e3", "exponent"),
            ("timedelta(minutes=5)", "Python timedelta"),
        ];
        for (expr, why) in literal {
            assert_eq!(classify_expr(expr), ValueSource::Literal, "{expr}: {why}");
        }
    }

    #[test]
    fn anything_naming_a_variable_field_or_call_is_config() {
        let config = [
            ("appCfg.Database.MaxOpenConns", "field"),
            ("maxOpen", "variable (named constants are not resolved)"),
            (
                "time.Duration(cfg.Seconds) * time.Second",
                "field inside arithmetic",
            ),
            ("settings.max_connections", "Rust field"),
            ("int(os.environ['POOL'])", "environment"),
            ("getMax()", "call"),
            ("\"{{ .Values.x }}\"", "template"),
            ("", "empty"),
        ];
        for (expr, why) in config {
            assert_eq!(classify_expr(expr), ValueSource::Config, "{expr:?}: {why}");
        }
    }

    #[test]
    fn yaml_scalars_are_literal_unless_templated() {
        assert_eq!(classify_yaml_scalar("\"100\""), ValueSource::Literal);
        assert_eq!(classify_yaml_scalar("100"), ValueSource::Literal);
        assert_eq!(
            classify_yaml_scalar("{{ .Values.db.max }}"),
            ValueSource::Config
        );
        assert_eq!(classify_yaml_scalar("\"${DB_MAX}\""), ValueSource::Config);
    }

    #[test]
    fn extraction_stops_at_the_argument_boundary() {
        let text = "db.SetConnMaxLifetime(time.Duration(c.X) * time.Second, y)\n";
        let start = text.find('(').unwrap() + 1;
        let (a, b) = extract(text, start).unwrap();
        assert_eq!(&text[a..b], "time.Duration(c.X) * time.Second");
        let kw = "create_engine(url, pool_size=5)\n";
        let s = kw.find("pool_size=").unwrap() + "pool_size=".len();
        let (a, b) = extract(kw, s).unwrap();
        assert_eq!(&kw[a..b], "5");
        assert_eq!(
            extract("x.MaxConns == 3", "x.MaxConns =".len()),
            None,
            "comparison"
        );
    }
}
