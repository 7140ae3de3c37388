//! `quip-testnet bench SCENARIO`: seeded, time-bounded load against an in-process node, each
//! scenario with its bare-QUIC baseline measured in the same run, printed as a table or JSON.

mod baseline;
mod crypto;
mod dm;
mod drain;
mod group;
mod idle;
mod image;
mod login;
pub(crate) mod report;
pub(crate) mod support;
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
pub const SCENARIOS: &[&str] = &["image", "group", "crypto", "login", "drain", "dm", "idle"];

/// Runs one scenario, or every one in turn for `all`; returns the tables, or JSON with
/// `json` (an array for `all`).
pub async fn run(scenario: &str, opts: &Options, json: bool) -> anyhow::Result<String> {
    // The child processes `idle` starts (not scenarios of their own).
    if [idle::BARE_CHILD, idle::NODE_CHILD].contains(&scenario) {
        idle::child(scenario).await?;
        return Ok(String::new());
    }
    if scenario == "all" {
        let mut reports = Vec::with_capacity(SCENARIOS.len());
        for name in SCENARIOS {
            reports.push(one(name, opts).await?);
        }
        return Ok(if json {
            serde_json::to_string_pretty(&reports)? + "\n"
        } else {
            reports
                .iter()
                .map(report::Report::table)
                .collect::<Vec<_>>()
                .join("\n")
        });
    }
    let report = one(scenario, opts).await?;
    Ok(if json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        report.table()
    })
}

async fn one(scenario: &str, opts: &Options) -> anyhow::Result<report::Report> {
    Ok(match scenario {
        "image" => image::run(opts).await?,
        "group" => group::run(opts).await?,
        "crypto" => crypto::run(opts).await?,
        "dm" => dm::run(opts).await?,
        "idle" => idle::run(opts).await?,
        "drain" => drain::run(opts).await?,
        "login" => login::run(opts).await?,
        other => anyhow::bail!("unknown scenario {other:?}; try one of {SCENARIOS:?} or all"),
    })
}
