//! Rendering a [`Report`] as Markdown (for people), JSON (for scripts) or SARIF 2.1.0 (for
//! code-scanning UIs).
//!
//! Rules: every format is a pure function of the report, so the same scan renders identically
//! each time; nothing here decides policy.

mod markdown;
mod sarif;

use crate::report::Report;

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// A Markdown report mirroring a hand-written triage (the default).
    #[default]
    Markdown,
    /// The full report as pretty-printed JSON.
    Json,
    /// SARIF 2.1.0 with one result per violation.
    Sarif,
}

/// Renders `report` in `format`.
pub fn render(report: &Report, format: Format) -> String {
    match format {
        Format::Markdown => markdown::render(report),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(report).expect("reports always serialize");
            s.push('\n');
            s
        }
        Format::Sarif => {
            let mut s = serde_json::to_string_pretty(&sarif::render(report))
                .expect("SARIF always serializes");
            s.push('\n');
            s
        }
    }
}
