//! `bench all --readme README.md`: the README's results table, regenerated from one run.
//!
//! The table holds each scenario's headline rows (picked here, in one place) and is written
//! between two markers, so the rest of the README is never touched.

use std::fmt::Write as _;

use super::report::Report;

/// The README's table lives between these lines.
pub const START: &str = "<!-- bench:start (quip-testnet bench all --readme README.md) -->";
/// The end marker.
pub const END: &str = "<!-- bench:end -->";

/// Which rows make the README: scenario, and the start of the metric's name.
const HEADLINES: &[(&str, &str)] = &[
    ("dm", "max sustainable rate"),
    ("dm", "max rate, p99 < 50 ms"),
    ("dm", "p99 at"),
    ("group", "deliveries/s"),
    ("group", "p99 to last member"),
    ("fanout", "deliveries/s"),
    ("fanout", "p99 to last member"),
    ("image", "p99 alone"),
    ("image", "p99 during upload"),
    ("image", "upload (median)"),
    ("login", "per second"),
    ("drain", "messages/s"),
    ("idle", "connected"),
    ("idle", "RSS per connection"),
    ("idle", "connects/s"),
    ("idle", "idle CPU"),
    ("hostile", "RSS per connection"),
    ("crypto", "sender seal p50"),
    ("crypto", "receiver open p50"),
];

/// The markdown table of `reports`' headline rows.
pub fn table(reports: &[Report]) -> String {
    let mut out = String::from(
        "| scenario | case | metric | Quip | bare QUIC | ratio |\n|---|---|---|---|---|---|\n",
    );
    for report in reports {
        let family = report
            .scenario
            .split_whitespace()
            .next()
            .unwrap_or_default();
        for row in report.rows.iter().filter(|row| {
            HEADLINES
                .iter()
                .any(|(s, m)| *s == family && row.metric.starts_with(m))
        }) {
            let (base, ratio) = match row.baseline {
                Some(b) if b != 0.0 => (figure(b), format!("{:.2}", row.value / b)),
                _ => (String::new(), String::new()),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} {} | {} | {} |",
                report.scenario,
                row.case,
                row.metric,
                figure(row.value),
                row.unit,
                base,
                ratio
            );
        }
    }
    let machine = reports.first().map_or("", |r| r.machine.as_str());
    let _ = writeln!(
        out,
        "\n{machine}; one run of `quip-testnet bench all`; the baseline, where one applies, is a bare \
         quinn program doing the same transfer in the same run."
    );
    out
}

/// `readme` with the text between the markers replaced by `table`.
pub fn splice(readme: &str, table: &str) -> anyhow::Result<String> {
    let (Some(start), Some(end)) = (readme.find(START), readme.find(END)) else {
        anyhow::bail!(
            "the README has no results markers; add these two lines where the table goes:\n{START}\n{END}"
        );
    };
    anyhow::ensure!(
        start < end,
        "the README's end marker comes before its start marker"
    );
    let before = &readme[..start + START.len()];
    let after = &readme[end..];
    Ok(format!("{before}\n{table}{after}"))
}

/// A figure with as many digits as it deserves.
fn figure(value: f64) -> String {
    match value.abs() {
        v if v >= 1000.0 => format!("{value:.0}"),
        v if v >= 10.0 => format!("{value:.1}"),
        _ => format!("{value:.2}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::Row;

    fn reports() -> Vec<Report> {
        let mut dm = Report::new("dm");
        dm.rows
            .push(Row::new("same node", "max sustainable rate", 20000.0, "msg/s").vs(100000.0));
        dm.rows
            .push(Row::new("same node", "p50 at 20000/s", 17.5, "ms"));
        let mut login = Report::new("login");
        login
            .rows
            .push(Row::new("login", "per second", 10.2, "1/s").vs(11.0));
        vec![dm, login]
    }

    #[test]
    fn the_table_holds_the_headline_rows_with_their_ratios() {
        let table = table(&reports());
        assert!(
            table.contains(
                "| dm | same node | max sustainable rate | 20000 msg/s | 100000 | 0.20 |"
            ),
            "{table}"
        );
        assert!(
            table.contains("| login | login | per second | 10.2 1/s | 11.0 | 0.93 |"),
            "{table}"
        );
        assert!(!table.contains("p50 at"), "not a headline: {table}");
    }

    #[test]
    fn splicing_replaces_only_what_is_between_the_markers() {
        let readme = format!("# Quip\nintro\n{START}\nold table\n{END}\nafter\n");
        let new = splice(&readme, "new table\n").unwrap();
        assert_eq!(
            new,
            format!("# Quip\nintro\n{START}\nnew table\n{END}\nafter\n")
        );
        assert_eq!(splice(&new, "new table\n").unwrap(), new, "idempotent");
        let err = splice("# no markers\n", "t").unwrap_err().to_string();
        assert!(err.contains("no results markers"), "{err}");
    }
}
