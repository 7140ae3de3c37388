//! QUIC transport limits and endpoints. quinn's defaults are generous (100 + 100 streams of
//! 1.25 MB each, no per-connection receive cap, no keep-alive); Quip sets every limit from
//! what its protocol needs, and enlarges the UDP socket buffers, which quinn leaves at the
//! kernel default (208 KiB drops datagrams under load on Linux).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::{IdleTimeout, TransportConfig, VarInt};
use socket2::{Domain, Protocol, Socket, Type};

/// Transport limits for one kind of connection.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Concurrent bidirectional streams the peer may open (control + images in flight).
    pub max_bi_streams: u32,
    /// Concurrent unidirectional streams the peer may open.
    pub max_uni_streams: u32,
    /// Receive window per stream, bytes.
    pub stream_window: u32,
    /// Receive window per connection (all streams), bytes: the most a peer can make us buffer.
    pub conn_window: u32,
    /// Send window per connection, bytes.
    pub send_window: u64,
    /// Connection closes after this long without any packet.
    pub idle_timeout: Duration,
    /// Keep-alive interval; below the idle timeout so idle sessions stay up.
    pub keep_alive: Duration,
    /// SO_RCVBUF / SO_SNDBUF for server sockets (the kernel caps it at `net.core.rmem_max`).
    pub socket_buffer: usize,
}

impl Limits {
    /// Client ↔ node: one control stream plus a few concurrent image transfers.
    pub fn client() -> Self {
        Self {
            max_bi_streams: 8,
            max_uni_streams: 0,
            stream_window: 1024 * 1024 + 64 * 1024,
            conn_window: 4 * 1024 * 1024,
            send_window: 8 * 1024 * 1024,
            // A dead node is noticed within seconds (quinn ignores ICMP; silence is the only
            // sign of a killed peer), so its clients move on quickly.
            idle_timeout: Duration::from_secs(5),
            keep_alive: Duration::from_millis(1500),
            socket_buffer: 4 * 1024 * 1024,
        }
    }

    /// Node ↔ master: one relay stream plus many concurrent relayed images.
    pub fn relay() -> Self {
        Self {
            max_bi_streams: 64,
            conn_window: 16 * 1024 * 1024,
            send_window: 32 * 1024 * 1024,
            // A killed master is noticed within 4 s and the node starts polling storage.
            idle_timeout: Duration::from_secs(4),
            keep_alive: Duration::from_secs(1),
            ..Self::client()
        }
    }

    pub(crate) fn transport(&self) -> Arc<TransportConfig> {
        let mut t = TransportConfig::default();
        t.max_concurrent_bidi_streams(VarInt::from_u32(self.max_bi_streams))
            .max_concurrent_uni_streams(VarInt::from_u32(self.max_uni_streams))
            .stream_receive_window(VarInt::from_u32(self.stream_window))
            .receive_window(VarInt::from_u32(self.conn_window))
            .send_window(self.send_window)
            .keep_alive_interval(Some(self.keep_alive))
            .max_idle_timeout(IdleTimeout::try_from(self.idle_timeout).ok());
        Arc::new(t)
    }
}

fn udp_socket(addr: SocketAddr, buffer: usize) -> std::io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false).ok();
    }
    // Best effort: the kernel clamps to net.core.{r,w}mem_max.
    socket.set_recv_buffer_size(buffer).ok();
    socket.set_send_buffer_size(buffer).ok();
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// A server endpoint on `addr` (port 0 picks one) with enlarged socket buffers.
pub fn server_endpoint(
    addr: SocketAddr,
    config: quinn::ServerConfig,
    limits: &Limits,
) -> std::io::Result<quinn::Endpoint> {
    let socket = udp_socket(addr, limits.socket_buffer)?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(config),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
}

/// A client endpoint on an ephemeral loopback-or-any port, for connecting out.
pub fn client_endpoint(bind: SocketAddr, limits: &Limits) -> std::io::Result<quinn::Endpoint> {
    let socket = udp_socket(bind, limits.socket_buffer.min(1024 * 1024))?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket,
        Arc::new(quinn::TokioRuntime),
    )
}
