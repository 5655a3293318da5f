//! backplan: a declarative backup and restore daemon. See ARCHITECTURE.md for the map.

pub mod apply;
pub mod catalogue;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod diagnostic;
pub mod engine;
pub mod exit;
pub mod failpoint;
pub mod heartbeat;
pub mod http;
pub mod kinds;
pub mod listener;
pub mod metrics;
pub mod notify;
pub mod pipe;
pub mod plan;
pub mod query;
pub mod records;
pub mod state;
pub mod status_page;
pub mod storage;
pub mod verify;
pub mod views;
