//! The integration tests: one crate, shared helpers in `helpers`.

mod apply;
mod cli;
mod daemon;
mod engine;
mod guards;
mod helpers;
mod invalid;
mod plans;
mod properties;
mod schedule;
mod schema;
mod trees;
