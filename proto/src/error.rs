//! Errors of the codec and of validated identifiers.

/// A frame could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The encoded body is larger than the frame limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Encoded length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// postcard refused the value.
    #[error("cannot encode frame: {0}")]
    Postcard(#[from] postcard::Error),
}

/// Bytes could not be decoded into a message. Never a panic, never an allocation beyond the
/// frame limit.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The length prefix announces more than the limit; nothing was allocated.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The stream ended inside a frame.
    #[error("stream ended {missing} bytes short of a whole frame")]
    Truncated {
        /// Bytes still missing.
        missing: usize,
    },
    /// The body is not a valid message of the expected type.
    #[error("malformed frame: {0}")]
    Malformed(postcard::Error),
    /// The body decoded but bytes were left over.
    #[error("malformed frame: {extra} trailing bytes")]
    TrailingBytes {
        /// Bytes left over.
        extra: usize,
    },
}

/// An identifier or name failed validation.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum InvalidId {
    /// Too short or too long.
    #[error("{what} must be {min} to {max} characters long (got {len})")]
    Length {
        /// What was being validated.
        what: &'static str,
        /// Shortest allowed.
        min: usize,
        /// Longest allowed.
        max: usize,
        /// What was given.
        len: usize,
    },
    /// A character outside the allowed set.
    #[error("{what}: {allowed}")]
    Charset {
        /// What was being validated.
        what: &'static str,
        /// The rule.
        allowed: &'static str,
    },
    /// A fixed-size id of the wrong length.
    #[error("{what} must be {expected} bytes (got {len})")]
    Bytes {
        /// What was being validated.
        what: &'static str,
        /// Required length.
        expected: usize,
        /// What was given.
        len: usize,
    },
}
