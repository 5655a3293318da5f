//! The integration tests: one crate, shared helpers in `helpers`.

mod apply;
mod cli;
mod crash;
mod daemon;
mod deletion;
mod engine;
mod full_disk;
mod fuzz;
mod guards;
mod helpers;
mod hooks;
mod invalid;
mod keys;
mod kinds;
mod limits;
mod output;
mod package;
mod paths;
mod plans;
mod postgres;
mod properties;
mod runbook;
mod schedule;
mod schema;
mod sqlite;
mod trees;
