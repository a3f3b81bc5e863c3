//! The `.pooltriage.yaml` file: services, database owners, the allowlist, client patterns and
//! exclusions.
//!
//! Rules: fail fast. Unknown keys are errors that name the key; every allowlist entry needs a
//! non-empty `reason` (a suppression nobody can explain is a config error, exit 2); globs and
//! regexes are compiled at load time so a typo cannot silently match nothing. Everything is
//! optional: without a file, services are auto-detected, the owner is `datastorage`, and client
//! patterns are derived from the owner names.

use std::path::{Path, PathBuf};

use globset::{Glob, GlobMatcher};
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::names::normalize_name;
use crate::violation::ViolationRule;

/// File name looked up at the scanned root when `--config` is not given.
pub const CONFIG_FILE_NAME: &str = ".pooltriage.yaml";

/// The owner assumed when the configuration names none.
pub const DEFAULT_OWNER: &str = "datastorage";

/// A commented example configuration, printed by `pooltriage --print-example-config`.
pub const EXAMPLE_CONFIG: &str = r#"# .pooltriage.yaml — every key is optional.

# Services to check, in addition to the auto-detected ones (a configured service replaces an
# auto-detected one of the same name). A path without glob characters is a directory (or file)
# and everything under it; a path with `*`, `?` or `[` is a glob over paths relative to the root.
services:
  - name: datastorage
    paths: [cmd/datastorage, pkg/datastorage]
  - name: billing
    paths: ["services/billing/**", "libs/billing-db/**"]

# Set to false to check only the services listed above.
auto_detect_services: true

# Services allowed to open database connections. Names compare case- and separator-insensitively
# (`data-storage` == `DataStorage`). Default: [datastorage].
owners: [datastorage]

# Suppressions. Each entry needs a reason; `rule` and `line` narrow it down.
allowlist:
  - path: tools/migrate/**
    rule: non-owner-connection
    reason: "One-off migration job; runs with its own short-lived credentials."
  - path: pkg/legacy/db.go
    line: 42
    rule: hardcoded-pool-setting
    reason: "Legacy reporting pool, tracked in TICKET-123."

# Regexes that show how a service reaches an owner (searched in code, not comments).
# Default: derived from the owner names, e.g. DataStorageClient, DATA_STORAGE_URL,
# ".../datastorage/client".
client_patterns:
  - '(?i)data[-_]?storage[-_./]?(?:client|url|api)'

# Extra paths to skip (gitignore syntax), on top of .gitignore.
exclude:
  - "hack/**"
"#;

/// Errors in the configuration file; all of them end the run with exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The configuration file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML for this schema (unknown key, missing field, wrong type).
    #[error("{path}: {message}")]
    Parse {
        /// The configuration file.
        path: PathBuf,
        /// The parser's message, naming the key and position.
        message: String,
    },
    /// The file parses but breaks a rule (empty reason, bad glob, bad regex, ...).
    #[error("{path}: {message}")]
    Invalid {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong and where.
        message: String,
    },
}

/// The configuration as written in `.pooltriage.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Services named explicitly; they replace auto-detected services of the same name.
    pub services: Vec<ServiceConfig>,
    /// Whether to auto-detect services as well (default `true`).
    pub auto_detect_services: Option<bool>,
    /// Services allowed to open database connections (default `[datastorage]`).
    pub owners: Vec<String>,
    /// Suppressed violations, each with a reason.
    pub allowlist: Vec<AllowEntry>,
    /// Regexes for references to an owner's client (default: derived from `owners`).
    pub client_patterns: Vec<String>,
    /// Extra gitignore-style patterns of paths to skip.
    pub exclude: Vec<String>,
}

/// A service named in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The service's name, as reported and as compared with `owners`.
    pub name: String,
    /// Directories, files or globs (relative to the root) that make up the service.
    pub paths: Vec<String>,
}

/// One allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowEntry {
    /// Directory, file or glob (relative to the root) the entry covers.
    pub path: String,
    /// Only suppress this violation rule (`non-owner-connection`, `hardcoded-pool-setting`,
    /// `hardcoded-deploy-pool-value`); all rules when absent.
    #[serde(default)]
    pub rule: Option<String>,
    /// Only suppress findings on this line.
    #[serde(default)]
    pub line: Option<usize>,
    /// Why this is acceptable. Required and non-empty.
    pub reason: String,
}

/// A path pattern from the configuration: a directory/file prefix or a glob.
#[derive(Debug, Clone)]
pub enum PathPattern {
    /// Matches the path itself and everything under it.
    Prefix(String),
    /// Matches paths the glob matches.
    Glob(GlobMatcher),
}

impl PathPattern {
    /// Parses a configuration path; globs are recognised by `*`, `?` or `[`.
    pub fn parse(raw: &str) -> Result<PathPattern, String> {
        let trimmed = raw.trim().trim_start_matches("./");
        if trimmed.contains(['*', '?', '[']) {
            Glob::new(trimmed)
                .map(|g| PathPattern::Glob(g.compile_matcher()))
                .map_err(|e| format!("invalid glob `{raw}`: {e}"))
        } else {
            Ok(PathPattern::Prefix(
                trimmed.trim_end_matches('/').to_string(),
            ))
        }
    }

    /// True when `rel_path` (relative, forward slashes) is covered.
    pub fn matches(&self, rel_path: &str) -> bool {
        match self {
            PathPattern::Prefix(p) if p.is_empty() || p == "." => true,
            PathPattern::Prefix(p) => {
                rel_path == p
                    || (rel_path.starts_with(p.as_str())
                        && rel_path.as_bytes().get(p.len()) == Some(&b'/'))
            }
            PathPattern::Glob(g) => g.is_match(rel_path),
        }
    }
}

/// The configuration after validation, with patterns compiled.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Configured services and their path patterns.
    pub services: Vec<(ServiceConfig, Vec<PathPattern>)>,
    /// Whether services are auto-detected too.
    pub auto_detect_services: bool,
    /// Owner names as written.
    pub owners: Vec<String>,
    /// Allowlist entries with their compiled paths.
    pub allowlist: Vec<(AllowEntry, PathPattern)>,
    /// Owner-client patterns.
    pub client_patterns: Vec<Regex>,
    /// Extra exclusions (gitignore syntax).
    pub exclude: Vec<String>,
}

impl Config {
    /// Reads and parses a configuration file (validation happens in [`Config::resolve`]).
    pub fn read(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Parses configuration text (an empty document is the default configuration).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        if text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            return Ok(Config::default());
        }
        serde_norway::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from(CONFIG_FILE_NAME),
            message: e.to_string(),
        })
    }

    /// Validates cross-field rules and compiles patterns.
    pub fn resolve(self) -> Result<Resolved, String> {
        let mut services = Vec::new();
        for (i, s) in self.services.into_iter().enumerate() {
            if s.name.trim().is_empty() {
                return Err(format!("services[{i}]: `name` must not be empty"));
            }
            if s.paths.is_empty() {
                return Err(format!(
                    "services[{i}] ({}): `paths` must list at least one path",
                    s.name
                ));
            }
            let pats = s
                .paths
                .iter()
                .map(|p| {
                    PathPattern::parse(p).map_err(|e| format!("services[{i}] ({}): {e}", s.name))
                })
                .collect::<Result<Vec<_>, _>>()?;
            services.push((s, pats));
        }
        let mut allowlist = Vec::new();
        for (i, entry) in self.allowlist.into_iter().enumerate() {
            if entry.reason.trim().is_empty() {
                return Err(format!(
                    "allowlist[{i}] ({}): `reason` must explain the exception",
                    entry.path
                ));
            }
            if let Some(rule) = &entry.rule {
                if ViolationRule::from_id(rule).is_none() {
                    return Err(format!(
                        "allowlist[{i}] ({}): unknown rule `{rule}` (expected one of: {})",
                        entry.path,
                        ViolationRule::ALL.map(ViolationRule::id).join(", ")
                    ));
                }
            }
            let pat =
                PathPattern::parse(&entry.path).map_err(|e| format!("allowlist[{i}]: {e}"))?;
            allowlist.push((entry, pat));
        }
        let owners = if self.owners.is_empty() {
            vec![DEFAULT_OWNER.to_string()]
        } else {
            self.owners
        };
        let client_patterns = if self.client_patterns.is_empty() {
            owners
                .iter()
                .filter_map(|o| default_client_pattern(o))
                .collect()
        } else {
            self.client_patterns
                .iter()
                .enumerate()
                .map(|(i, p)| Regex::new(p).map_err(|e| format!("client_patterns[{i}]: {e}")))
                .collect::<Result<Vec<_>, _>>()?
        };
        for (i, g) in self.exclude.iter().enumerate() {
            Glob::new(g.trim_start_matches('!'))
                .map_err(|e| format!("exclude[{i}]: invalid glob `{g}`: {e}"))?;
        }
        Ok(Resolved {
            services,
            auto_detect_services: self.auto_detect_services.unwrap_or(true),
            owners,
            allowlist,
            client_patterns,
            exclude: self.exclude,
        })
    }
}

impl Default for Resolved {
    fn default() -> Self {
        Config::default()
            .resolve()
            .expect("the default configuration is valid")
    }
}

/// Builds the default client pattern for an owner: its name with optional separators between
/// letters (so `datastorage` also matches `DataStorage`, `data_storage`, `DATA-STORAGE`),
/// followed by a client-ish word (`client`, `url`, `api`, `addr`, `endpoint`, `host`,
/// `service`).
pub fn default_client_pattern(owner: &str) -> Option<Regex> {
    let norm = normalize_name(owner);
    if norm.is_empty() {
        return None;
    }
    let name: Vec<String> = norm
        .chars()
        .map(|c| regex::escape(&c.to_string()))
        .collect();
    let pattern = format!(
        r"(?i){}[-_./ ]?(?:new)?(?:client|url|api|addr|address|endpoint|host|service|svc)",
        name.join("[-_ ]?")
    );
    Regex::new(&pattern).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_is_valid() {
        let r = Config::parse(EXAMPLE_CONFIG).unwrap().resolve().unwrap();
        assert_eq!(r.services.len(), 2);
        assert_eq!(r.allowlist.len(), 2);
        assert_eq!(r.owners, ["datastorage"]);
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let err = Config::parse("owner: [x]\n").unwrap_err().to_string();
        assert!(err.contains("owner"), "{err}");
    }

    #[test]
    fn allowlist_entries_need_a_reason() {
        let err = Config::parse("allowlist:\n  - path: a/b.go\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("reason"), "{err}");
        let err = Config::parse("allowlist:\n  - path: a/b.go\n    reason: \"  \"\n")
            .unwrap()
            .resolve()
            .unwrap_err();
        assert!(err.contains("reason"), "{err}");
    }

    #[test]
    fn unknown_allowlist_rules_are_rejected() {
        let err = Config::parse("allowlist:\n  - {path: x, rule: nope, reason: because}\n")
            .unwrap()
            .resolve()
            .unwrap_err();
        assert!(err.contains("unknown rule `nope`"), "{err}");
    }

    #[test]
    fn defaults_name_datastorage_as_owner_with_derived_client_patterns() {
        let r = Resolved::default();
        assert_eq!(r.owners, ["datastorage"]);
        let p = &r.client_patterns[0];
        for hit in [
            "serverCfg.Infrastructure.DataStorageURL",
            "DATA_STORAGE_URL",
            "\"github.com/x/kubernaut/pkg/datastorage/client\"",
            "dsclient := datastorage.NewClient(u)",
        ] {
            assert!(p.is_match(hit), "{hit}");
        }
        assert!(!p.is_match("storage.NewClient"));
    }

    #[test]
    fn path_patterns_are_prefixes_or_globs() {
        let dir = PathPattern::parse("pkg/datastorage/").unwrap();
        assert!(dir.matches("pkg/datastorage/server/server.go"));
        assert!(!dir.matches("pkg/datastorage2/x.go"));
        let glob = PathPattern::parse("services/*/db/**").unwrap();
        assert!(glob.matches("services/a/db/pool.py"));
        assert!(!glob.matches("services/a/api/pool.py"));
    }
}
