//! `quip-testnet bench SCENARIO`: seeded, time-bounded load against an in-process node, each
//! scenario with its bare-QUIC baseline measured in the same run, printed as a table or JSON.

mod baseline;
mod crypto;
mod dm;
mod drain;
mod fanout;
mod group;
mod hostile;
mod idle;
mod image;
mod login;
mod mls;
mod poison;
pub mod readme;
pub mod report;
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
pub const SCENARIOS: &[&str] = &[
    "image", "group", "fanout", "crypto", "mls", "login", "drain", "dm", "idle", "hostile",
    "poison",
];

/// Runs one scenario, or every one in turn for `all`.
///
/// `all` runs every scenario on SQLite; given a Postgres URL it then runs `dm` once more on
/// Postgres (reported as `dm postgres`), so one run covers both backends where they differ.
pub async fn run(scenario: &str, opts: &Options) -> anyhow::Result<Vec<report::Report>> {
    // The child processes `idle` starts (not scenarios of their own).
    if [idle::BARE_CHILD, idle::NODE_CHILD].contains(&scenario) {
        idle::child(scenario).await?;
        return Ok(Vec::new());
    }
    if scenario != "all" {
        return Ok(vec![one(scenario, opts).await?]);
    }
    let embedded = Options {
        database_url: None,
        ..opts.clone()
    };
    let mut reports = Vec::with_capacity(SCENARIOS.len() + 1);
    for name in SCENARIOS {
        reports.push(one(name, &embedded).await?);
    }
    if opts.database_url.is_some() {
        let mut postgres = one("dm", opts).await?;
        postgres.scenario = "dm postgres".into();
        reports.push(postgres);
    }
    Ok(reports)
}

/// Reports as tables, or as JSON (an array when there are several).
pub fn render(reports: &[report::Report], json: bool) -> anyhow::Result<String> {
    Ok(match (json, reports) {
        (true, [one]) => serde_json::to_string_pretty(one)? + "\n",
        (true, _) => serde_json::to_string_pretty(reports)? + "\n",
        (false, _) => reports
            .iter()
            .map(report::Report::table)
            .collect::<Vec<_>>()
            .join("\n"),
    })
}

/// Reads reports saved with `--json` (one or an array).
pub fn load(json: &str) -> anyhow::Result<Vec<report::Report>> {
    let value: serde_json::Value = serde_json::from_str(json)?;
    Ok(if value.is_array() {
        serde_json::from_value(value)?
    } else {
        vec![serde_json::from_value(value)?]
    })
}

async fn one(scenario: &str, opts: &Options) -> anyhow::Result<report::Report> {
    Ok(match scenario {
        "image" => image::run(opts).await?,
        "group" => group::run(opts).await?,
        "fanout" => fanout::run(opts).await?,
        "crypto" => crypto::run(opts).await?,
        "mls" => mls::run(opts).await?,
        "dm" => dm::run(opts).await?,
        "idle" => idle::run(opts).await?,
        "hostile" => hostile::run(opts).await?,
        "drain" => drain::run(opts).await?,
        "login" => login::run(opts).await?,
        "poison" => poison::run(opts).await?,
        other => anyhow::bail!("unknown scenario {other:?}; try one of {SCENARIOS:?} or all"),
    })
}
