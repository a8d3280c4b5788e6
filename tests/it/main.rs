//! The integration tests: one test binary (one link on 2 cores instead of one per file), a
//! module per area. Each test starts what it needs against the real PostgreSQL, Redis and
//! broker (see `orderflow_tests`), isolated by its own database, key prefix, topics and groups.

mod acknowledged;
mod auth;
mod bad_input;
mod broker_outage;
mod chaos;
mod consumer_healing;
mod crash;
mod dependency_tls;
mod inventory;
mod lifecycle;
mod loadgen;
mod lock;
mod metrics;
mod notify;
mod order_path;
mod pipeline;
mod protection;
mod redis_cluster;
mod redis_outage;
mod schemas;
mod security;
mod servers;
mod tracing;
mod worker;
