//! quip-testnet (in progress)
