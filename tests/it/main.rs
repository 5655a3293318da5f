//! The integration tests: one crate, shared helpers in `helpers`.

mod cli;
mod guards;
mod helpers;
mod invalid;
mod plans;
mod properties;
mod schema;
