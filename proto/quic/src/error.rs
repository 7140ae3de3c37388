//! Errors of certificate handling and of frame I/O on streams.

use quip_proto::{DecodeError, EncodeError};

/// Building or loading certificates and TLS configurations failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rcgen could not make or parse a certificate or key.
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("TLS configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
    /// A verifier could not be built from the trusted roots.
    #[error("cannot build certificate verifier: {0}")]
    Verifier(String),
    /// A PEM file held no certificate or key.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: String,
        /// What was wrong.
        what: &'static str,
    },
    /// Reading or writing a certificate file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// quinn refused the rustls configuration (e.g. no TLS 1.3 suite).
    #[error("QUIC TLS configuration refused: {0}")]
    Quic(String),
}

/// Sending or receiving a frame on a stream failed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The bytes were not a valid frame.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The message could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// Reading the stream failed (reset, connection lost).
    #[error("stream read failed: {0}")]
    Read(#[from] quinn::ReadError),
    /// Writing the stream failed.
    #[error("stream write failed: {0}")]
    Write(#[from] quinn::WriteError),
    /// Opening a stream failed.
    #[error("connection failed: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// The stream was already finished.
    #[error("stream already closed")]
    Closed,
    /// The peer started a frame and did not finish it within the stream's frame deadline.
    #[error("the peer stalled inside a frame for more than {0:?}")]
    Stalled(std::time::Duration),
}
