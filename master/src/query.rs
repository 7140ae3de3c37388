//! The operator's side of discovery: ask a master for every node's status
//! (`quip-master status`) and print it as a table.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use quip_proto::limits::MAX_FRAME;
use quip_proto::relay::NodeStatus;
use quip_proto::{ClientToMaster, MasterToClient};
use quip_quic::{Limits, Trust, names};

use crate::MasterError;

/// Asks the master at `master` (`host:port`) for every node's status, verifying it per
/// `trust` (the cluster CA). The master's certificate is checked for the name `quip-master`.
/// Connecting and asking together may take up to `timeout` (QUIC gets no "connection
/// refused": an address where nobody listens just stays silent until then).
pub async fn query_status(
    master: &str,
    trust: &Trust,
    timeout: Duration,
) -> Result<Vec<NodeStatus>, MasterError> {
    let unreachable = |reason: String| MasterError::Unreachable {
        addr: master.to_owned(),
        reason,
    };
    let addr = tokio::net::lookup_host(master)
        .await
        .map_err(|err| unreachable(err.to_string()))?
        .next()
        .ok_or_else(|| unreachable("the name resolves to no address".into()))?;
    let limits = Limits::client();
    let config = quip_quic::client_config(trust, quip_proto::ALPN_DISCOVERY, None, &limits)?;
    let bind = if addr.is_ipv4() {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
    };
    let endpoint =
        quip_quic::client_endpoint(bind, &limits).map_err(|err| unreachable(err.to_string()))?;
    let asked = tokio::time::timeout(timeout, async {
        let conn = endpoint
            .connect_with(config, addr, names::MASTER)
            .map_err(|err| unreachable(err.to_string()))?
            .await
            .map_err(|err| unreachable(err.to_string()))?;
        let (mut send, mut recv, hello) = quip_quic::open_control(&conn, crate::AGENT, MAX_FRAME)
            .await
            .map_err(|err| unreachable(err.to_string()))?;
        hello.check_version().map_err(unreachable)?;
        send.send(&ClientToMaster::Status).await?;
        let answer = recv.expect::<MasterToClient>().await?;
        conn.close(0u32.into(), b"done");
        Ok::<_, MasterError>(answer)
    })
    .await
    .map_err(|_| unreachable(format!("no answer within {timeout:?}")))?;
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    match asked? {
        MasterToClient::Status(nodes) => Ok(nodes),
        MasterToClient::Error { code, message, .. } => Err(MasterError::Refused { code, message }),
        other => Err(MasterError::Unexpected(format!("{other:?}"))),
    }
}

/// Renders node statuses as an aligned table with a header row.
pub fn format_status(nodes: &[NodeStatus]) -> String {
    let header = [
        "NODE",
        "ADDRESS",
        "CLIENTS",
        "PENDING",
        "MSGS/S",
        "HEALTHY",
        "LAST SEEN",
    ];
    let rows: Vec<[String; 7]> = nodes
        .iter()
        .map(|n| {
            [
                n.node.to_string(),
                n.client_addr.clone(),
                n.load.clients.to_string(),
                n.load.pending.to_string(),
                n.load.msgs_per_sec.to_string(),
                if n.healthy { "yes" } else { "no" }.to_owned(),
                format!("{:.1}s ago", n.last_seen_ms as f64 / 1000.0),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(&header);
    for row in &rows {
        out.push_str(&line(&row.each_ref().map(String::as_str)));
    }
    if rows.is_empty() {
        out.push_str("(no nodes registered)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use quip_proto::relay::Load;

    use super::*;

    #[test]
    fn table_is_aligned() {
        let nodes = vec![
            NodeStatus {
                node: "node-a".parse().unwrap(),
                client_addr: "127.0.0.1:7001".into(),
                load: Load {
                    clients: 12,
                    pending: 1,
                    msgs_per_sec: 340,
                    max_clients: 100,
                },
                healthy: true,
                last_seen_ms: 420,
            },
            NodeStatus {
                node: "b".parse().unwrap(),
                client_addr: "[::1]:7002".into(),
                load: Load::default(),
                healthy: false,
                last_seen_ms: 2_500,
            },
        ];
        let expect = "\
NODE    ADDRESS         CLIENTS  PENDING  MSGS/S  HEALTHY  LAST SEEN
node-a  127.0.0.1:7001  12       1        340     yes      0.4s ago
b       [::1]:7002      0        0        0       no       2.5s ago
";
        assert_eq!(format_status(&nodes), expect);
        assert!(format_status(&[]).ends_with("(no nodes registered)\n"));
    }
}
