//! quip-master (in progress)
