//! `datastorage export verify`: checks a signed export offline, with no server: the signature
//! over the exact bytes of every event, the count, and for NDJSON and JSON exports every event
//! (edited content, removed, added or reordered lines, broken links) and every chain inside it.
//! CSV exports are checked for their signature and digest.

use std::io::{BufReader, Read as _, Write};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use datastorage_api::export::{
    verify_json_export, verify_ndjson, Trailer, VerifyReport, TRAILER_KEY,
};
use datastorage_api::signing::{Keyring, VerifyingKey};
use sha2::{Digest as _, Sha256};

/// `export verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The export: NDJSON (`format=ndjson`), JSON (`format=json`) or CSV (`format=csv`),
    /// told apart by its content; `-` reads standard input.
    pub file: PathBuf,
    /// Public key PEM of the signer (the `signing.pub` of `datastorage keys generate`);
    /// repeat it for retired keys.
    #[arg(long = "public-key", value_name = "KEY", required = true)]
    pub public_keys: Vec<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Verifies; true when the export is intact.
pub fn verify<W: Write>(args: &VerifyArgs, out: &mut W) -> anyhow::Result<bool> {
    let mut keys = Keyring::new();
    for path in &args.public_keys {
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("--public-key: cannot read {}", path.display()))?;
        keys.insert(
            VerifyingKey::from_pem(&pem)
                .map_err(|e| anyhow::anyhow!("--public-key {}: {e}", path.display()))?,
        );
    }
    let mut input: Box<dyn std::io::Read> = if args.file.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(
            std::fs::File::open(&args.file)
                .with_context(|| format!("cannot open {}", args.file.display()))?,
        )
    };
    let mut first = [0u8; 1];
    let n = input.read(&mut first)?;
    let input = std::io::Cursor::new(first[..n].to_vec()).chain(input);
    let report = match first.first() {
        Some(b'{') => {
            // NDJSON lines, or one JSON object: an NDJSON export's first line is an event, whose
            // first key is event_id; a JSON export starts with its events array.
            let mut reader = BufReader::new(input);
            let mut bytes = Vec::new();
            std::io::BufRead::read_until(&mut reader, b'[', &mut bytes)?;
            let json = bytes.starts_with(b"{\"events\":[");
            let rest = std::io::Cursor::new(bytes).chain(reader);
            if json {
                let mut all = Vec::new();
                BufReader::new(rest).read_to_end(&mut all)?;
                verify_json_export(&all, &keys)
            } else {
                verify_ndjson(BufReader::new(rest), &keys)
            }
        }
        Some(_) => {
            let mut all = Vec::new();
            BufReader::new(input).read_to_end(&mut all)?;
            return csv(&all, &keys, args.json, out);
        }
        None => anyhow::bail!("{} is empty", args.file.display()),
    };
    print(&report, args.json, out)?;
    Ok(report.ok)
}

fn print<W: Write>(report: &VerifyReport, json: bool, out: &mut W) -> anyhow::Result<()> {
    if json {
        serde_json::to_writer_pretty(&mut *out, report)?;
        writeln!(out)?;
    } else {
        write!(out, "{report}")?;
    }
    Ok(())
}

/// A CSV export: a header line, rows, then `#{"export_signature": …}`. The digest covers the
/// bytes of the rows as shipped; rows are not parsed back into events.
fn csv<W: Write>(all: &[u8], keys: &Keyring, json: bool, out: &mut W) -> anyhow::Result<bool> {
    let body_start = all
        .iter()
        .position(|b| *b == b'\n')
        .map_or(all.len(), |i| i + 1);
    let marker = format!("\n#{{\"{TRAILER_KEY}\":");
    let trailer_at = all
        .windows(marker.len())
        .rposition(|w| w == marker.as_bytes())
        .map(|i| i + 1)
        .context(
            "no signature trailer: the file ends without its #{\"export_signature\": …} line",
        )?;
    let rows = &all[body_start.min(trailer_at)..trailer_at];
    let value: serde_json::Value = serde_json::from_slice(&all[trailer_at + 1..])
        .context("the signature trailer is not JSON")?;
    let trailer: Trailer = serde_json::from_value(value[TRAILER_KEY].clone())
        .context("the signature trailer has not the expected fields")?;
    let digest = hex::encode(Sha256::digest(rows));
    let digest_ok = digest == trailer.events_sha256;
    let signature_ok = datastorage_api::export::verify_trailer(&trailer, keys);
    let ok = digest_ok && signature_ok.is_ok();
    if json {
        serde_json::to_writer_pretty(
            &mut *out,
            &serde_json::json!({
                "ok": ok,
                "format": "csv",
                "total_events": trailer.total_events,
                "digest_valid": digest_ok,
                "signature_valid": signature_ok.is_ok(),
                "key_id": trailer.key_id,
                "problems": signature_ok.err().into_iter().chain((!digest_ok).then(|| "the rows changed after signing: their SHA-256 differs from the trailer's".to_owned())).collect::<Vec<_>>(),
            }),
        )?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "csv export of {} events, key {}",
            trailer.total_events, trailer.key_id
        )?;
        writeln!(
            out,
            "signature: {}",
            match &signature_ok {
                Ok(()) => "valid".to_owned(),
                Err(e) => format!("INVALID: {e}"),
            }
        )?;
        writeln!(
            out,
            "digest:    {}",
            if digest_ok {
                "valid"
            } else {
                "INVALID: the rows changed after signing"
            }
        )?;
        writeln!(out, "{}", if ok { "OK" } else { "FAILED" })?;
    }
    Ok(ok)
}
