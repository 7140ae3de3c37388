//! quip-cli (in progress)
