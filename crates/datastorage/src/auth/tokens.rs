//! `tokens` mode: bearer tokens whose SHA-256 hashes are listed, with names and scopes, in
//! `auth.tokensFile`. The file never holds a token itself, so reading it (a backup, a
//! ConfigMap by mistake) grants nothing.
//!
//! ```yaml
//! tokens:
//!   - name: gateway                # stored as ingested_by on every event it writes
//!     sha256: 9f86d081884c7d65...  # hex SHA-256 of the token (datastorage token create)
//!     scopes: [audit:write]
//!     expires: 2027-06-01T00:00:00Z   # optional
//! ```
//!
//! The file is re-read when it changes ([`crate::reload`]): a removed token stops working within
//! a second, without a restart. A file that no longer parses is reported and the previous list
//! stays in force.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, RwLock};

use anyhow::{bail, Context as _};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::error::AuthError;
use super::principal::Principal;
use super::scope::Scopes;

/// Prefix of every token `datastorage token create` makes, so a leaked one is easy to find
/// (secret scanners) and a plain token pasted into the file is recognised and refused.
pub const TOKEN_PREFIX: &str = "dst_";

/// Random bytes in a new token.
const TOKEN_BYTES: usize = 32;

/// A new random token (`dst_` + 43 characters of URL-safe base64, 256 bits).
pub fn generate() -> anyhow::Result<String> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::getrandom(&mut bytes).context("no random numbers from the operating system")?;
    Ok(format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// The hex SHA-256 of a token, as the tokens file lists it. Tokens are random and long, so a
/// fast hash is enough: there is nothing to guess.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    tokens: Vec<TokenEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    sha256: String,
    scopes: Vec<String>,
    #[serde(default)]
    expires: Option<DateTime<Utc>>,
}

/// One listed token.
#[derive(Debug, Clone)]
struct Token {
    principal: Principal,
    expires: Option<DateTime<Utc>>,
}

/// The tokens in force, by hash.
#[derive(Debug, Clone, Default)]
pub struct TokenList(HashMap<String, Token>);

impl TokenList {
    /// Parses a tokens file; errors name the entry and the rule.
    pub fn parse(text: &str, origin: &Path) -> anyhow::Result<Self> {
        let file: TokensFile = serde_norway::from_str(text)
            .with_context(|| format!("auth.tokensFile {}", origin.display()))?;
        let mut tokens = HashMap::new();
        let mut names = HashSet::new();
        for (i, e) in file.tokens.into_iter().enumerate() {
            let at = format!("auth.tokensFile {}: tokens[{i}]", origin.display());
            if e.name.trim().is_empty() || e.name.len() > 255 {
                bail!("{at}.name must be 1 to 255 characters");
            }
            if !names.insert(e.name.clone()) {
                bail!("{at}.name {:?} is listed twice", e.name);
            }
            if e.sha256.starts_with(TOKEN_PREFIX) {
                bail!("{at}.sha256 holds a token, not its hash: never write tokens into this file (datastorage token create prints the hash)");
            }
            let digest = e.sha256.to_ascii_lowercase();
            if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!("{at}.sha256 must be 64 hex digits (the SHA-256 of the token)");
            }
            let scopes =
                Scopes::parse(&e.scopes).map_err(|why| anyhow::anyhow!("{at}.scopes: {why}"))?;
            if scopes.is_empty() {
                bail!("{at}.scopes must name at least one scope");
            }
            let token = Token {
                principal: Principal::with_scopes(e.name, scopes),
                expires: e.expires,
            };
            if tokens.insert(digest, token).is_some() {
                bail!("{at}.sha256 repeats an earlier entry's hash");
            }
        }
        Ok(Self(tokens))
    }

    /// Reads and parses a tokens file.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("auth.tokensFile: cannot read {}", path.display()))?;
        Self::parse(&text, path)
    }

    /// How many tokens are listed.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no token is listed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The tokens in force, swapped whole when the file changes. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct TokenStore(Arc<RwLock<Arc<TokenList>>>);

impl TokenStore {
    /// A store holding `list`.
    pub fn new(list: TokenList) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(list))))
    }

    /// Puts `list` in force.
    pub fn replace(&self, list: TokenList) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(list);
    }

    fn current(&self) -> Arc<TokenList> {
        Arc::clone(&self.0.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The principal of `token`, or why there is none.
    pub fn authenticate(&self, token: &str, now: DateTime<Utc>) -> Result<Principal, AuthError> {
        let list = self.current();
        let Some(entry) = list.0.get(&hash(token)) else {
            return Err(AuthError::unauthenticated(
                "invalid",
                "the bearer token is not valid",
            ));
        };
        if entry.expires.is_some_and(|at| at <= now) {
            return Err(AuthError::unauthenticated(
                "expired",
                "the bearer token has expired",
            ));
        }
        Ok(entry.principal.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::principal::Grants;
    use crate::auth::scope::Scope;

    fn list(yaml: &str) -> anyhow::Result<TokenList> {
        TokenList::parse(yaml, Path::new("tokens.yaml"))
    }

    #[test]
    fn a_listed_token_authenticates_with_its_name_and_scopes() {
        let token = generate().unwrap();
        assert!(
            token.starts_with(TOKEN_PREFIX) && token.len() == 47,
            "{token}"
        );
        let yaml = format!(
            "tokens:\n  - name: gateway\n    sha256: {}\n    scopes: [audit:write]\n",
            hash(&token)
        );
        let store = TokenStore::new(list(&yaml).unwrap());
        let p = store.authenticate(&token, Utc::now()).unwrap();
        assert_eq!(p.name, "gateway");
        let Grants::Scopes(scopes) = p.grants else {
            panic!("fixed scopes")
        };
        assert!(scopes.allows(Scope::Write) && !scopes.allows(Scope::Read));
        let other = generate().unwrap();
        assert_eq!(
            store
                .authenticate(&other, Utc::now())
                .unwrap_err()
                .result_label(),
            "unauthenticated"
        );
    }

    #[test]
    fn an_expired_token_is_refused() {
        let token = generate().unwrap();
        let yaml = format!(
            "tokens:\n  - name: old\n    sha256: {}\n    scopes: [admin]\n    expires: 2020-01-01T00:00:00Z\n",
            hash(&token)
        );
        let store = TokenStore::new(list(&yaml).unwrap());
        match store.authenticate(&token, Utc::now()) {
            Err(AuthError::Unauthenticated { reason, .. }) => assert_eq!(reason, "expired"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_entries_are_named() {
        let h = hash("x");
        for (yaml, needle) in [
            ("tokens:\n  - name: a\n    sha256: dst_abc\n    scopes: [admin]\n".to_owned(), "holds a token"),
            ("tokens:\n  - name: a\n    sha256: abc\n    scopes: [admin]\n".to_owned(), "64 hex digits"),
            (format!("tokens:\n  - name: a\n    sha256: {h}\n    scopes: [audit:delete]\n"), "tokens[0].scopes"),
            (format!("tokens:\n  - name: a\n    sha256: {h}\n    scopes: []\n"), "at least one scope"),
            (
                format!("tokens:\n  - name: a\n    sha256: {h}\n    scopes: [admin]\n  - name: a\n    sha256: {}\n    scopes: [admin]\n", hash("y")),
                "tokens[1].name \"a\" is listed twice",
            ),
            (format!("tokens:\n  - name: a\n    sha256: {h}\n    scope: [admin]\n"), "scope"),
        ] {
            let e = format!("{:#}", list(&yaml).unwrap_err());
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }
}
