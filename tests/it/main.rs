//! The integration tests: one crate, shared helpers in `helpers`.

mod apply;
mod cli;
mod daemon;
mod deletion;
mod engine;
mod full_disk;
mod guards;
mod helpers;
mod hooks;
mod invalid;
mod keys;
mod kinds;
mod limits;
mod paths;
mod plans;
mod postgres;
mod properties;
mod schedule;
mod schema;
mod sqlite;
mod storage;
mod trees;
