//! [`BearerToken`]: the credential a [`Client`](crate::Client) sends as
//! `Authorization: Bearer …` on every request: a fixed string, the `DATASTORAGE_TOKEN`
//! environment variable, or a file that is re-read when it changes (a Kubernetes projected
//! ServiceAccount token, which the kubelet rotates).
//!
//! Rules this module keeps:
//! - The token never reaches a log line or `Debug` output: `Debug` prints where the token comes
//!   from and `<redacted>`, and the header value is marked sensitive.
//! - A file token is looked at on the request path, at most once per recheck interval
//!   ([`DEFAULT_TOKEN_RECHECK`], 1 s), and never with a blocking call on an async thread: the
//!   look is one `stat` on Tokio's blocking pool, and the file is read only when its identity
//!   (device, inode, size, modification time) changed. A request that comes while another one
//!   is looking sends the token in hand instead of waiting.
//! - A 401 or 403 answer expires the look, so the next request checks the file at once.
//! - A file that cannot be read, or holds no token, at construction is an error; later, the last
//!   good token stays in use and the problem is logged once per streak (with the path, never the
//!   content).

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::HeaderValue;

use crate::error::Error;

/// The environment variable [`BearerToken::from_env`] reads.
pub const TOKEN_ENV: &str = "DATASTORAGE_TOKEN";

/// How often a token file is checked for a new token, at most (on requests; an idle client does
/// not look).
pub const DEFAULT_TOKEN_RECHECK: Duration = Duration::from_secs(1);

/// A bearer token for every request of a [`Client`](crate::Client)
/// ([`ClientBuilder::bearer_token`](crate::ClientBuilder::bearer_token)). Cheap to clone; clones
/// share one cached token.
#[derive(Clone)]
pub struct BearerToken {
    source: Arc<Source>,
}

enum Source {
    /// A token fixed for the client's life.
    Fixed { header: HeaderValue, from_env: bool },
    /// A token file, re-read when it changes.
    File(TokenFile),
}

struct TokenFile {
    path: PathBuf,
    recheck: Duration,
    state: Mutex<FileState>,
    /// Held by the one request that is looking at the file.
    looking: tokio::sync::Mutex<()>,
}

struct FileState {
    header: HeaderValue,
    /// Identity of the file the token was read from.
    stamp: Stamp,
    /// When the file was last looked at; `None` makes the next request look.
    looked_at: Option<Instant>,
    /// Counts token changes, so a caller can tell that a retry would send a new token.
    generation: u64,
    /// The last look failed (so the next failure is not logged again).
    failing: bool,
}

/// What tells one version of a file from the next without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    dev: u64,
    ino: u64,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        let (dev, ino) = {
            use std::os::unix::fs::MetadataExt as _;
            (meta.dev(), meta.ino())
        };
        #[cfg(not(unix))]
        let (dev, ino) = (0, 0);
        Self {
            len: meta.len(),
            modified: meta.modified().ok(),
            dev,
            ino,
        }
    }
}

/// `Bearer <token>` as a sensitive header value; `what` names the source for the error.
fn header_of(token: &str, what: &str) -> Result<HeaderValue, Error> {
    let token = token.trim();
    if token.is_empty() {
        return Err(Error::InvalidSetting {
            what: "bearer token",
            reason: format!("{what} holds no token"),
        });
    }
    let mut header =
        HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| Error::InvalidSetting {
            what: "bearer token",
            reason: format!("{what} holds characters an HTTP header cannot carry"),
        })?;
    header.set_sensitive(true);
    Ok(header)
}

/// Reads the token file: its identity and its token as a header value.
fn read_token_file(path: &Path) -> Result<(Stamp, HeaderValue), Error> {
    let read_error = |source| Error::ReadFile {
        what: "bearer token",
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_error)?;
    let text = std::fs::read_to_string(path).map_err(read_error)?;
    let header = header_of(&text, &format!("the file {}", path.display()))?;
    Ok((Stamp::of(&meta), header))
}

/// Looks at the file: `None` when its identity is still `known`, else the new identity and token.
fn look_at_file(path: &Path, known: Stamp) -> Result<Option<(Stamp, HeaderValue)>, Error> {
    let meta = std::fs::metadata(path).map_err(|source| Error::ReadFile {
        what: "bearer token",
        path: path.to_owned(),
        source,
    })?;
    if Stamp::of(&meta) == known {
        return Ok(None);
    }
    read_token_file(path).map(Some)
}

impl BearerToken {
    /// A token fixed for the client's life. Surrounding white space is ignored; an empty token,
    /// or one with characters a header cannot carry, is an error.
    pub fn new(token: impl AsRef<str>) -> Result<Self, Error> {
        Ok(Self {
            source: Arc::new(Source::Fixed {
                header: header_of(token.as_ref(), "the given string")?,
                from_env: false,
            }),
        })
    }

    /// The token in `DATASTORAGE_TOKEN` ([`TOKEN_ENV`]); `Ok(None)` when the variable is unset.
    /// Set but empty (or not UTF-8) is an error: a credential that was meant to be there is not.
    pub fn from_env() -> Result<Option<Self>, Error> {
        Self::from_env_value(std::env::var_os(TOKEN_ENV))
    }

    fn from_env_value(value: Option<OsString>) -> Result<Option<Self>, Error> {
        let Some(value) = value else {
            return Ok(None);
        };
        let what = format!("the environment variable {TOKEN_ENV}");
        let value = value.into_string().map_err(|_| Error::InvalidSetting {
            what: "bearer token",
            reason: format!("{what} is not UTF-8"),
        })?;
        Ok(Some(Self {
            source: Arc::new(Source::Fixed {
                header: header_of(&value, &what)?,
                from_env: true,
            }),
        }))
    }

    /// The token in the file at `path` (surrounding white space ignored), looked at again at
    /// most every [`DEFAULT_TOKEN_RECHECK`] and re-read when it changed (see the module docs).
    ///
    /// The file is read once here, so a missing or empty file fails at start rather than at the
    /// first request. For a Kubernetes projected token, pass the mounted path (for example
    /// `/var/run/secrets/tokens/datastorage`): the kubelet swaps it atomically, which changes its
    /// identity.
    pub fn from_file(path: impl Into<PathBuf>) -> Result<Self, Error> {
        Self::from_file_rechecked(path, DEFAULT_TOKEN_RECHECK)
    }

    /// Like [`from_file`](Self::from_file), looked at most every `recheck` (zero: on every
    /// request, still off the async threads).
    pub fn from_file_rechecked(path: impl Into<PathBuf>, recheck: Duration) -> Result<Self, Error> {
        let path = path.into();
        let (stamp, header) = read_token_file(&path)?;
        Ok(Self {
            source: Arc::new(Source::File(TokenFile {
                path,
                recheck,
                state: Mutex::new(FileState {
                    header,
                    stamp,
                    looked_at: Some(Instant::now()),
                    generation: 0,
                    failing: false,
                }),
                looking: tokio::sync::Mutex::new(()),
            })),
        })
    }

    /// The `Authorization` header value to send now.
    pub(crate) async fn header(&self) -> HeaderValue {
        match &*self.source {
            Source::Fixed { header, .. } => header.clone(),
            Source::File(file) => file.header().await,
        }
    }

    /// Counts the token's changes; a fixed token never changes.
    pub(crate) fn generation(&self) -> u64 {
        match &*self.source {
            Source::Fixed { .. } => 0,
            Source::File(file) => file.lock().generation,
        }
    }

    /// The server refused the token: the next request looks at the file at once.
    pub(crate) fn expire(&self) {
        if let Source::File(file) = &*self.source {
            file.lock().looked_at = None;
        }
    }

    /// Looks at the file now (waiting for a look under way), whatever the interval.
    pub(crate) async fn reload(&self) {
        if let Source::File(file) = &*self.source {
            let _looking = file.looking.lock().await;
            file.look().await;
        }
    }
}

impl TokenFile {
    fn lock(&self) -> MutexGuard<'_, FileState> {
        // Every update is a few assignments with nothing that can panic in between.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn header(&self) -> HeaderValue {
        {
            let st = self.lock();
            if st.looked_at.is_some_and(|at| at.elapsed() < self.recheck) {
                return st.header.clone();
            }
        }
        // Due: one request looks; the others send the token in hand rather than wait.
        if let Ok(_looking) = self.looking.try_lock() {
            self.look().await;
        }
        self.lock().header.clone()
    }

    /// Looks at the file (the caller holds `looking`) and updates the cached token.
    async fn look(&self) {
        let known = self.lock().stamp;
        let path = self.path.clone();
        let looked = tokio::task::spawn_blocking(move || look_at_file(&path, known)).await;
        let mut st = self.lock();
        st.looked_at = Some(Instant::now());
        match looked {
            Ok(Ok(None)) => st.failing = false,
            Ok(Ok(Some((stamp, header)))) => {
                st.stamp = stamp;
                st.failing = false;
                if header != st.header {
                    st.header = header;
                    st.generation += 1;
                    tracing::info!(file = %self.path.display(), "bearer token file changed; sending the new token");
                }
            }
            Ok(Err(e)) => {
                if !st.failing {
                    tracing::warn!(error = %crate::deliver::chain_of(&e), "cannot use the bearer token file; keeping the last token read");
                }
                st.failing = true;
            }
            Err(join) => tracing::error!(error = %join, "bearer token file task failed"),
        }
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("BearerToken");
        match &*self.source {
            Source::Fixed { from_env: true, .. } => d.field("source", &TOKEN_ENV),
            Source::Fixed { .. } => d.field("source", &"string"),
            Source::File(file) => d.field("file", &file.path).field("recheck", &file.recheck),
        };
        d.field("token", &"<redacted>").finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cr3t-token-value";

    fn token_text(header: &HeaderValue) -> String {
        header.to_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn a_fixed_token_is_sent_as_a_sensitive_bearer_header_and_never_printed() {
        let token = BearerToken::new(format!("  {SECRET}\n")).unwrap();
        let header = token.header().await;
        assert_eq!(token_text(&header), format!("Bearer {SECRET}"));
        assert!(header.is_sensitive());
        let debug = format!("{token:?}");
        assert!(
            !debug.contains(SECRET) && debug.contains("<redacted>"),
            "{debug}"
        );
        assert_eq!(token.generation(), 0);
    }

    #[test]
    fn empty_or_unusable_tokens_are_refused_without_echoing_them() {
        for bad in ["", "  \n", "line\nbreak", "bell\u{7}"] {
            let e = BearerToken::new(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidSetting { .. }), "{bad:?}: {e}");
            if bad.len() > 3 {
                assert!(!e.to_string().contains(bad.trim()), "{e}");
            }
        }
    }

    #[tokio::test]
    async fn the_environment_variable_is_optional_but_not_empty() {
        assert!(BearerToken::from_env_value(None).unwrap().is_none());
        let token = BearerToken::from_env_value(Some(SECRET.into()))
            .unwrap()
            .unwrap();
        assert_eq!(
            token_text(&token.header().await),
            format!("Bearer {SECRET}")
        );
        assert!(format!("{token:?}").contains(TOKEN_ENV));
        let e = BearerToken::from_env_value(Some("".into())).unwrap_err();
        assert!(e.to_string().contains(TOKEN_ENV), "{e}");
    }

    #[test]
    fn a_missing_or_empty_token_file_fails_at_construction_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let e = BearerToken::from_file(&path).unwrap_err();
        assert!(matches!(e, Error::ReadFile { .. }), "{e}");
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        std::fs::write(&path, "\n").unwrap();
        let e = BearerToken::from_file(&path).unwrap_err();
        assert!(matches!(e, Error::InvalidSetting { .. }), "{e}");
    }

    /// Replaces the file the way the kubelet does: a new file renamed over the old one.
    fn rotate(path: &Path, token: &str) {
        let next = path.with_extension("next");
        std::fs::write(&next, format!("{token}\n")).unwrap();
        std::fs::rename(&next, path).unwrap();
    }

    #[tokio::test]
    async fn a_rotated_file_is_read_once_the_recheck_interval_passed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").unwrap();
        let token = BearerToken::from_file_rechecked(&path, Duration::from_millis(200)).unwrap();
        assert_eq!(token_text(&token.header().await), "Bearer first");
        assert!(!format!("{token:?}").contains("first"));

        rotate(&path, "second");
        // Within the interval the token in hand is sent without looking at the file.
        assert_eq!(token_text(&token.header().await), "Bearer first");
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(token_text(&token.header().await), "Bearer second");
        assert_eq!(token.generation(), 1);

        // A refusal makes the next request look at once.
        rotate(&path, "third");
        token.expire();
        assert_eq!(token_text(&token.header().await), "Bearer third");
        assert_eq!(token.generation(), 2);
    }

    #[tokio::test]
    async fn a_file_that_disappears_or_empties_keeps_the_last_good_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "good").unwrap();
        let token = BearerToken::from_file_rechecked(&path, Duration::ZERO).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(token_text(&token.header().await), "Bearer good");
        rotate(&path, "");
        assert_eq!(token_text(&token.header().await), "Bearer good");
        rotate(&path, "better");
        token.reload().await;
        assert_eq!(token_text(&token.header().await), "Bearer better");
    }
}
