//! Quip's client library: the connection to a node, the logged-in session, end-to-end
//! crypto and the key store. The terminal program `quip` and the testnet's simulated users
//! are both built on it. Private keys exist only here.

pub mod client;
pub mod connection;
pub mod core;
pub mod display;
pub mod e2e;
pub mod group;

pub use client::{
    AutoSave, Client, ClientError, ImageMessage, Incoming, Listing, Message, user_dir,
};
pub use connection::{ConnectError, Connection, Event, discover};
pub use group::{Chat, Sent, VerifiedGroup};
