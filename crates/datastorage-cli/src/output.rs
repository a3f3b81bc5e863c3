//! Standard output of the commands, for readers that stop early (`datastorage … | head -1`).
//!
//! Rust ignores `SIGPIPE`, so a write to a pipe whose reader has gone fails with `EPIPE`, and
//! `println!` panics on it. The commands write through [`Stdout`] instead and return the error.
//! [`Stdout::closed`] then tells the binary that the error was the reader going away, a quiet,
//! successful end, and not a broken pipe on a network or database socket, which stays an error.

use std::io::{self, Write};

/// Standard output that remembers whether its reader went away.
#[derive(Debug)]
pub struct Stdout {
    inner: io::Stdout,
    closed: bool,
}

impl Default for Stdout {
    fn default() -> Self {
        Self::new()
    }
}

impl Stdout {
    /// The process's standard output.
    pub fn new() -> Self {
        Self {
            inner: io::stdout(),
            closed: false,
        }
    }

    /// Whether a write or flush failed because the reader closed the pipe.
    pub fn closed(&self) -> bool {
        self.closed
    }

    fn note<T>(&mut self, result: io::Result<T>) -> io::Result<T> {
        if result
            .as_ref()
            .is_err_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
        {
            self.closed = true;
        }
        result
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let result = self.inner.write(buf);
        self.note(result)
    }

    fn flush(&mut self) -> io::Result<()> {
        let result = self.inner.flush();
        self.note(result)
    }
}

/// Whether `e` is a write that failed because the reader went away: an [`io::Error`] of kind
/// `BrokenPipe` in its chain, also inside a `serde_json` error. Only for errors of writing the
/// output, where no socket can be the cause.
pub fn reader_gone(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        let kind = c.downcast_ref::<io::Error>().map(io::Error::kind);
        let json = c.downcast_ref::<serde_json::Error>();
        kind.or_else(|| json.and_then(serde_json::Error::io_error_kind))
            == Some(io::ErrorKind::BrokenPipe)
    })
}

/// A line on standard error that never panics: a closed stderr loses the line, nothing else.
pub fn warn(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(io::stderr(), "{line}");
}

/// `code`, the answer of a command already decided, whatever became of printing it: a reader
/// that went away (`events verify … | head -1`) does not turn a verdict into success, and any
/// other write error stays an error.
pub fn keep_code(printed: anyhow::Result<()>, code: u8) -> anyhow::Result<u8> {
    match printed {
        Err(e) if !reader_gone(&e) => Err(e),
        _ => Ok(code),
    }
}
