//! `quip-testnet bench SCENARIO`: seeded, time-bounded load against an in-process node, each
//! scenario with its bare-QUIC baseline measured in the same run, printed as a table or JSON.

mod baseline;
mod group;
mod image;
pub(crate) mod report;
mod text;

/// Options every scenario understands.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seconds each measured phase runs.
    pub secs: f64,
    /// Postgres URL; SQLite in a temp directory without one.
    pub database_url: Option<String>,
    /// Smaller sizes, for a quick check.
    pub quick: bool,
}

/// Every scenario by name.
pub const SCENARIOS: &[&str] = &["image", "group"];

/// Runs one scenario; returns its table, or JSON with `json`.
pub async fn run(scenario: &str, opts: &Options, json: bool) -> anyhow::Result<String> {
    let report = match scenario {
        "image" => image::run(opts).await?,
        "group" => group::run(opts).await?,
        other => anyhow::bail!("unknown scenario {other:?}; try one of {SCENARIOS:?}"),
    };
    Ok(if json {
        serde_json::to_string_pretty(&report)?
    } else {
        report.table()
    })
}
