//! `datastorage keys generate`: an Ed25519 key pair for `signing.keyFile`. The private key goes
//! to a file readable by its owner only; the public key is what auditors verify exports and
//! checkpoints with.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::Args;
use datastorage_api::signing::SigningKey;

/// `keys generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Folder to write `signing.key` (private, mode 0600) and `signing.pub` into.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

/// Writes a new key pair and prints its id, fingerprint and paths.
pub fn generate<W: Write>(args: &GenerateArgs, out: &mut W) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("--out: cannot create {}", args.out.display()))?;
    let private = args.out.join("signing.key");
    let public = args.out.join("signing.pub");
    for path in [&private, &public] {
        if path.exists() && !args.force {
            bail!("{} exists; pass --force to replace it", path.display());
        }
    }
    let key = SigningKey::generate();
    let pem = key.to_pem().map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options
        .open(&private)
        .and_then(|mut f| f.write_all(pem.as_bytes()))
        .with_context(|| format!("cannot write {}", private.display()))?;
    let public_pem = key.public_pem().map_err(|e| anyhow::anyhow!("{e}"))?;
    std::fs::write(&public, public_pem)
        .with_context(|| format!("cannot write {}", public.display()))?;
    writeln!(out, "key id:      {}", key.key_id())?;
    writeln!(out, "fingerprint: {}", key.fingerprint())?;
    writeln!(
        out,
        "private key: {} (signing.keyFile; keep it secret)",
        private.display()
    )?;
    writeln!(
        out,
        "public key:  {} (give it to auditors: datastorage export verify FILE --public-key {})",
        public.display(),
        public.display()
    )?;
    Ok(())
}
