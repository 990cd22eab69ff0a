//! mostro-box: a self-contained Mostro node. One process holds a private Nostr relay, the Mostro
//! order engine and an LDK Lightning node; the box's own state is in one redb file.
//!
//! Map: [`config`] settings; [`keys`] the node key; [`store`] redb tables and the grouped writer;
//! [`relay`] the embedded relay; [`protocol`] the Mostro wire; [`engine`] the order state
//! machine and the escrow worker; [`lightning`] the LDK node; [`publish`] public relays and
//! discovery; [`price`] market prices; [`api`] and [`cli`] the operator's side; [`metrics`]
//! Prometheus; [`logging`] the logger and its memory of recent errors; [`node`] start-up;
//! [`fuzzing`] what the fuzz targets run.

#![warn(missing_docs)]

pub mod api;
pub mod backup;
pub mod bench;
pub mod cli;
pub mod config;
pub mod engine;
pub mod fetch;
pub mod fuzzing;
pub mod keys;
pub mod lightning;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod price;
pub mod protocol;
pub mod publish;
pub mod regtest;
pub mod relay;
pub mod service;
pub mod store;
