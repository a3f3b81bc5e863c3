//! `datastorage token create`: a new bearer token for `auth.mode: tokens`. The token is printed
//! once; the tokens file gets only its hash, so the file grants nothing to whoever reads it.

use std::io::Write;

use anyhow::{bail, Context as _};
use chrono::{DateTime, SecondsFormat, Utc};
use clap::Args;
use datastorage::auth::{tokens, Scopes};

/// `token create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The principal's name: stored as `ingested_by` on every event it writes, and in access
    /// records (1 to 255 characters).
    #[arg(long)]
    pub name: String,
    /// Scopes, comma-separated: audit:write, audit:read, audit:verify, audit:export,
    /// audit:hold, admin.
    #[arg(long, value_delimiter = ',', required = true)]
    pub scopes: Vec<String>,
    /// When the token stops working: an RFC 3339 time or a duration from now (`90d`, `12h`).
    #[arg(long, value_name = "WHEN")]
    pub expires: Option<String>,
    /// Print JSON (token, name, sha256, scopes, expires) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Parses `--expires`.
fn expiry(text: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    let span = humantime::parse_duration(text).with_context(|| {
        format!(
            "--expires {text:?}: write an RFC 3339 time (2027-06-01T00:00:00Z) or a duration (90d)"
        )
    })?;
    Ok(now + chrono::Duration::from_std(span).context("--expires: too far")?)
}

/// Makes a token and prints it with the entry for the tokens file.
pub fn create<W: Write>(args: &CreateArgs, out: &mut W) -> anyhow::Result<()> {
    let name = args.name.trim();
    if name.is_empty() || name.chars().count() > 255 {
        bail!("--name must be 1 to 255 characters");
    }
    let scopes = Scopes::parse(&args.scopes).map_err(|e| anyhow::anyhow!("--scopes: {e}"))?;
    let now = Utc::now();
    let expires = args
        .expires
        .as_deref()
        .map(|e| expiry(e, now))
        .transpose()?;
    if expires.is_some_and(|at| at <= now) {
        bail!("--expires is in the past");
    }
    let token = tokens::generate()?;
    let sha256 = tokens::hash(&token);
    let names = scopes.names();
    let expires = expires.map(|at| at.to_rfc3339_opts(SecondsFormat::Secs, true));
    if args.json {
        let value = serde_json::json!({
            "name": name,
            "token": token,
            "sha256": sha256,
            "scopes": names,
            "expires": expires,
        });
        writeln!(out, "{value}")?;
        return Ok(());
    }
    writeln!(
        out,
        "token for {name} (shown once; hand it to the client, never commit it):"
    )?;
    writeln!(out, "{token}")?;
    writeln!(out)?;
    writeln!(
        out,
        "add to the tokens file (auth.tokensFile), under `tokens:`:"
    )?;
    writeln!(out, "  - name: {}", serde_json::to_string(name)?)?;
    writeln!(out, "    sha256: {sha256}")?;
    writeln!(out, "    scopes: [{}]", names.join(", "))?;
    if let Some(at) = expires {
        writeln!(out, "    expires: {at}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_printed_entry_authenticates_the_printed_token() {
        let args = CreateArgs {
            name: "gateway".into(),
            scopes: vec!["audit:write".into(), "audit:read".into()],
            expires: Some("30d".into()),
            json: false,
        };
        let mut out = Vec::new();
        create(&args, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut lines = text.lines();
        lines.next();
        let token = lines.next().unwrap();
        let entry = text.split("`tokens:`:\n").nth(1).unwrap();
        let file = format!("tokens:\n{entry}");
        let list = tokens::TokenList::parse(&file, std::path::Path::new("t.yaml")).unwrap();
        let store = tokens::TokenStore::new(list);
        let p = store.authenticate(token, Utc::now()).unwrap();
        assert_eq!(p.name, "gateway");
        assert!(store
            .authenticate(token, Utc::now() + chrono::Duration::days(31))
            .is_err());
    }

    #[test]
    fn bad_arguments_are_named() {
        for (scopes, expires, needle) in [
            (vec!["audit:delete"], None, "--scopes"),
            (vec!["admin"], Some("2020-01-01T00:00:00Z"), "past"),
            (vec!["admin"], Some("soon"), "--expires"),
        ] {
            let args = CreateArgs {
                name: "x".into(),
                scopes: scopes.into_iter().map(str::to_owned).collect(),
                expires: expires.map(str::to_owned),
                json: false,
            };
            let e = create(&args, &mut Vec::new()).unwrap_err().to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }
}
