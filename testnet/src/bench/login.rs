//! `bench login`: password logins against resumptions on one node at the production bcrypt
//! cost (12). Every user's stored hash is a real bcrypt hash of a known 32-byte login secret
//! (computed once with the `bcrypt` crate; the salt is random, as the node's would be), and
//! each operation is what a client does when it (re)connects: a fresh QUIC connection, the
//! hello exchange, then `Login { secret }` or `Resume { token }`, answered `LoggedIn`. N
//! clients do this back to back. Baseline: the same connect + one round trip against a bare
//! quinn server, so the table shows what the handshake alone allows.

use std::sync::Arc;

use quip_node::NodeConfig;
use quip_proto::{ClientToNode, NodeToClient};

use super::Options;
use super::report::{Latency, Report, Row};
use super::support::{Churn, churn, storage_name, users_with_hash};
use crate::fixtures::BenchNode;

/// The production cost (the node's default; `quip-node` refuses less).
const COST: u32 = 12;

pub(crate) async fn run(opts: &Options) -> anyhow::Result<Report> {
    let mut report = Report::new("login");
    let clients = if opts.quick { 4 } else { 16 };
    let node = Arc::new(BenchNode::start(opts.database_url.as_deref()).await?);
    let defaults = NodeConfig::new("n".parse()?, "127.0.0.1:0".parse()?, ".".into());
    anyhow::ensure!(
        defaults.bcrypt_cost == COST,
        "the node's bcrypt cost is {}, not {COST}",
        defaults.bcrypt_cost
    );
    let secret: [u8; 32] = super::support::random();
    let hash =
        tokio::task::spawn_blocking(move || bcrypt::non_truncating_hash(secret, COST)).await??;
    let people = Arc::new(users_with_hash(&node.storage, "login", clients, &hash).await?);
    let secs = opts.secs;
    let max = if opts.quick { 200 } else { 100_000 };

    let (n, p) = (node.clone(), people.clone());
    let logins = churn(clients, secs, max, move |i| {
        let (node, user) = (n.clone(), p[i].name.clone());
        async move {
            let conn = quip_cli::Connection::connect(
                node.handle.local_addr(),
                quip_quic::names::NODE,
                &node.trust,
            )
            .await?;
            let answer = conn
                .request(|req| ClientToNode::Login {
                    req,
                    user,
                    secret: secret.to_vec(),
                })
                .await?;
            tokio::spawn(conn.close());
            anyhow::ensure!(
                matches!(answer, NodeToClient::LoggedIn { .. }),
                "login answered {answer:?}"
            );
            Ok(())
        }
    })
    .await;

    let (n, p) = (node.clone(), people.clone());
    let resumes = churn(clients, secs, max * 100, move |i| {
        let (node, people) = (n.clone(), p.clone());
        async move {
            let conn = node.connect(&people[i]).await?;
            tokio::spawn(conn.close());
            Ok(())
        }
    })
    .await;

    let bare = super::baseline::handshakes(clients, secs).await?;
    let bare_lat = Latency::of(&mut bare.latencies.clone());
    let case = format!("{clients} clients");
    let (login_rate, resume_rate) = (logins.rate(), resumes.rate());
    push(
        &mut report,
        &format!("login, {case}"),
        logins,
        &bare,
        bare_lat,
    );
    push(
        &mut report,
        &format!("resume, {case}"),
        resumes,
        &bare,
        bare_lat,
    );
    report.rows.push(Row::new(
        "resume vs login",
        "rate ratio",
        resume_rate / login_rate.max(1e-9),
        "x",
    ));
    report.notes.push(format!(
        "bcrypt cost {COST}, at most {} at once on the node; each operation is a fresh QUIC \
         connection + hello + Login/Resume; baseline: connect + 1 round trip on bare quinn",
        defaults.bcrypt_parallelism
    ));
    report.notes.push(format!(
        "storage: {}",
        storage_name(opts.database_url.as_deref())
    ));
    Ok(report)
}

fn push(report: &mut Report, case: &str, mut run: Churn, bare: &Churn, bare_lat: Latency) {
    let lat = Latency::of(&mut run.latencies);
    report
        .rows
        .push(Row::new(case, "per second", run.rate(), "1/s").vs(bare.rate()));
    report
        .rows
        .push(Row::new(case, "p50", lat.p50_ms, "ms").vs(bare_lat.p50_ms));
    report
        .rows
        .push(Row::new(case, "p99", lat.p99_ms, "ms").vs(bare_lat.p99_ms));
    report
        .rows
        .push(Row::new(case, "failed", run.failed as f64, "ops"));
    if let Some(error) = run.first_error {
        report.notes.push(format!("{case}: first failure: {error}"));
    }
}
