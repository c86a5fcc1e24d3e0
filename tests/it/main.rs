//! One integration-test binary (one link) for the whole suite.

mod common;

mod api_auth;
mod api_base;
mod api_bearer;
mod api_blobs;
mod api_listing;
mod api_manifests;
mod api_uploads;
mod backup;
mod busy;
mod cli_accounts;
mod cli_tokens;
mod config_cli;
mod crash;
mod disk;
mod e2e_auth;
mod e2e_docker;
mod e2e_gc;
mod e2e_refusals;
mod e2e_skopeo;
mod gc;
mod htpasswd;
mod import;
mod install;
mod limits;
mod listeners;
mod memory;
mod ops;
mod proxy;
mod retention;
mod secrecy;
mod soak;
mod store_contract;
mod tls;
