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

/// Classifies a source-code expression like [`classify_expr`] and, for a value from
/// configuration, finds the literal it falls back to when the configuration is unset:
/// `Number(config.X) || 20`, `config.X ?? 20`, Python `settings.x or 20`,
/// `os.getenv("X", "20")`, `.get("x", 20)`, Rust `.unwrap_or(20)` / `.unwrap_or_else(|| 20)`,
/// Java `.orElse(20)` / `.getOrDefault(k, 20)`, Go `cmp.Or(cfg.X, 20)`, and helpers whose name
/// says default (`getEnvOrDefault("X", 20)`). Conversions around such an expression are looked
/// through when their other arguments are literals (`int(os.getenv("X", "20"))`,
/// `parseInt(process.env.X || "20", 10)`).
pub fn classify_expr_with_fallback(expr: &str) -> (ValueSource, Option<String>) {
    let source = classify_expr(expr);
    if source == ValueSource::Literal {
        return (source, None);
    }
    (source, literal_fallback(expr.trim(), 0))
}

fn literal_fallback(expr: &str, depth: usize) -> Option<String> {
    if depth > 4 || expr.is_empty() {
        return None;
    }
    let is_lit = |s: &str| !s.is_empty() && classify_expr(s) == ValueSource::Literal;
    // Binary fallback operators: the last top-level `||`, `??` or Python ` or `.
    if let Some((left, right)) = split_last_top_level(expr, &["||", "??", " or "]) {
        let right = right.trim();
        if is_lit(right) && !is_lit(left.trim()) {
            return Some(right.to_string());
        }
        return None;
    }
    // A call spanning the whole expression: `callee(args)`.
    let (callee, args) = whole_call(expr)?;
    let method = callee
        .rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    let args = split_top_level_args(args);
    let fallbackish = matches!(
        method.as_str(),
        "unwrap_or"
            | "unwrap_or_else"
            | "or_else"
            | "orelse"
            | "getordefault"
            | "getorelse"
            | "get"
            | "getenv"
            | "or"
    ) || method.contains("default")
        || method.contains("fallback");
    if fallbackish {
        let last = args.last()?.trim();
        let last = last.strip_prefix("||").map_or(last, str::trim); // Rust closure `|| 20`
        let last = last.strip_prefix("() ->").map_or(last, str::trim); // Java supplier
        let last = last.strip_prefix("lambda:").map_or(last, str::trim); // Python
        let last = last
            .split_once('=')
            .filter(|(k, _)| {
                k.trim()
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
            })
            .map_or(last, |(_, v)| v.trim()); // keyword argument `default=20`
        let needs_two = !matches!(
            method.as_str(),
            "unwrap_or" | "unwrap_or_else" | "or_else" | "orelse"
        );
        if is_lit(last) && (!needs_two || args.len() >= 2) {
            return Some(last.to_string());
        }
        return None;
    }
    // A conversion (`int(x)`, `parseInt(x, 10)`, `Duration::from_secs(x)`): its first argument.
    let (first, rest) = args.split_first()?;
    if rest.iter().all(|a| is_lit(a.trim())) {
        return literal_fallback(first.trim(), depth + 1);
    }
    None
}

/// The bytes of `s` outside string literals (`"..."`, `'...'`, `` `...` ``, with backslash
/// escapes), each with its byte index and the bracket depth before it: `(`, `[` and `{` open a
/// level, their partners close one. An opening quote is yielded; the literal and its closing
/// quote are not.
fn unquoted(s: &str) -> impl Iterator<Item = (usize, u8, i32)> + '_ {
    let mut depth = 0i32;
    let mut quote: Option<u8> = None;
    let mut escaped = false;
    s.bytes().enumerate().filter_map(move |(i, c)| {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            return None;
        }
        let before = depth;
        match c {
            b'"' | b'\'' | b'`' => quote = Some(c),
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            _ => {}
        }
        Some((i, c, before))
    })
}

/// Splits at the last occurrence of any (ASCII) operator outside brackets and quotes.
fn split_last_top_level<'a>(s: &'a str, ops: &[&str]) -> Option<(&'a str, &'a str)> {
    let mut found = None;
    let mut next = 0;
    for (i, _, depth) in unquoted(s) {
        if i < next || depth != 0 {
            continue;
        }
        if let Some(op) = ops
            .iter()
            .find(|op| s.as_bytes()[i..].starts_with(op.as_bytes()))
        {
            found = Some((i, op.len()));
            next = i + op.len();
        }
    }
    found.map(|(at, len)| (&s[..at], &s[at + len..]))
}

/// `callee(args)` when the call spans all of `s`: the callee text and the text between the
/// parentheses.
fn whole_call(s: &str) -> Option<(&str, &str)> {
    let s = s.trim();
    let last = s.len().checked_sub(1)?;
    if !s.ends_with(')') {
        return None;
    }
    let mut open_at = None;
    for (i, c, depth) in unquoted(s) {
        match c {
            b'(' if depth == 0 => open_at = Some(i),
            // `f(a).g(b)`: a group that closes before the end does not span the expression.
            b')' if depth == 1 && i != last => open_at = None,
            _ => {}
        }
    }
    let open = open_at?;
    let callee = s[..open].trim_end();
    // A call, not a parenthesised group: an identifier comes right before the parenthesis.
    let valid = callee
        .chars()
        .last()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then(|| (callee, &s[open + 1..last]))
}

/// The comma-separated arguments of a call (the text between its parentheses).
fn split_top_level_args(s: &str) -> Vec<&str> {
    if s.trim().is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut start = 0;
    for (i, c, depth) in unquoted(s) {
        if c == b',' && depth == 0 {
            out.push(&s[start..i]);
            start = i + 1;
        }
    }
    out.push(&s[start..]);
    out
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

/// Classifies a YAML scalar like [`classify_yaml_scalar`] and finds a literal fallback of a
/// templated value: Helm `{{ .Values.x | default 20 }}` or `{{ default 20 .Values.x }}`, shell
/// `${DB_MAX:-20}`.
pub fn classify_yaml_scalar_with_fallback(raw: &str) -> (ValueSource, Option<String>) {
    static HELM_DEFAULT: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r#"\|\s*default\s+["']?([0-9][0-9A-Za-z._]*)["']?|\{\{-?\s*default\s+["']?([0-9][0-9A-Za-z._]*)["']?\s"#)
            .expect("pattern compiles")
    });
    static SHELL_DEFAULT: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([0-9][0-9A-Za-z._]*)\}")
            .expect("pattern compiles")
    });
    let source = classify_yaml_scalar(raw);
    if source == ValueSource::Literal {
        return (source, None);
    }
    let fallback = HELM_DEFAULT
        .captures(raw)
        .and_then(|c| c.get(1).or_else(|| c.get(2)))
        .or_else(|| SHELL_DEFAULT.captures(raw).and_then(|c| c.get(1)))
        .map(|m| m.as_str().to_string())
        .filter(|f| classify_scalar_text(f) == ValueSource::Literal);
    (source, fallback)
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
    fn literal_fallbacks_of_config_values_are_found() {
        let cases = [
            ("Number(config.POSTGRES_POOL_SIZE) || 20", Some("20")),
            ("config.poolSize ?? 20", Some("20")),
            ("settings.pool_size or 5", Some("5")),
            ("int(os.getenv(\"POOL_SIZE\", \"10\"))", Some("\"10\"")),
            ("cfg.get(\"pool_size\", 10)", Some("10")),
            ("settings.max_connections.unwrap_or(20)", Some("20")),
            ("cfg.max.unwrap_or_else(|| 20)", Some("20")),
            ("Optional.ofNullable(cfg.max).orElse(15)", Some("15")),
            ("cmp.Or(cfg.MaxOpenConns, 25)", Some("25")),
            ("getEnvOrDefault(\"DB_MAX_OPEN\", 25)", Some("25")),
            ("time.Duration(cfg.Seconds) * time.Second", None),
            ("appCfg.Database.MaxOpenConns", None),
            ("a || b", None),
            ("rows.get(0)", None),
        ];
        for (expr, want) in cases {
            let (source, fallback) = classify_expr_with_fallback(expr);
            assert_eq!(source, ValueSource::Config, "{expr}");
            assert_eq!(fallback.as_deref(), want, "{expr}");
        }
        assert_eq!(
            classify_expr_with_fallback("25"),
            (ValueSource::Literal, None)
        );
        let yaml = [
            ("{{ .Values.db.maxOpenConns | default 20 }}", Some("20")),
            ("{{ default 20 .Values.db.maxOpenConns }}", Some("20")),
            ("\"${DB_MAX_OPEN_CONNS:-20}\"", Some("20")),
            ("{{ .Values.db.maxOpenConns }}", None),
        ];
        for (raw, want) in yaml {
            let (source, fallback) = classify_yaml_scalar_with_fallback(raw);
            assert_eq!(source, ValueSource::Config, "{raw}");
            assert_eq!(fallback.as_deref(), want, "{raw}");
        }
    }

    #[test]
    fn fallbacks_are_found_inside_conversions_with_literal_arguments() {
        // The usual Node idiom: the fallback sits inside parseInt, next to the radix.
        let (source, fallback) =
            classify_expr_with_fallback("parseInt(process.env.DB_POOL_MAX || \"10\", 10)");
        assert_eq!(source, ValueSource::Config);
        assert_eq!(fallback.as_deref(), Some("\"10\""));
        assert_eq!(
            classify_expr_with_fallback("Number.parseInt(cfg.max ?? 8, 10)").1,
            Some("8".to_string())
        );
        // Other arguments that are not literals: not a conversion of the first one.
        assert_eq!(
            classify_expr_with_fallback("pick(cfg.max || 8, other)").1,
            None
        );
    }

    #[test]
    fn non_ascii_expressions_do_not_panic() {
        assert_eq!(
            classify_expr_with_fallback("cfg.größe || 2"),
            (ValueSource::Config, Some("2".to_string()))
        );
        assert_eq!(
            classify_expr_with_fallback("größe(cfg.x, \"ü\")"),
            (ValueSource::Config, None)
        );
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
