//! quip-node (in progress)
