//! Integration tests: every test drives the real `claude-max-market` binary
//! (or, for admission races, the library) against a temporary data folder.

mod admission;
mod audit;
mod bundles;
mod c_plugins;
mod clients;
mod commands;
mod compliance;
mod config;
mod consent;
mod crypt;
mod docker_support;
mod execute;
mod images;
mod jobs;
mod market;
mod market_tasks;
mod metrics;
mod nats;
mod oci;
mod python_plugins;
mod reports;
mod sandbox;
mod shell;
mod status;
mod support;
