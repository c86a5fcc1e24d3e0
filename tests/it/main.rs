//! One integration-test binary (one link) for the whole suite.

mod common;

mod api_base;
