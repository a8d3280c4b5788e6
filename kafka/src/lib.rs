//! Kafka for orderflow's services: the settings (`args`), the producer, consumer and admin
//! clients and the topics (`client`), the consume loop that applies batches of events with
//! offsets committed only after their effects (`consume`), and what a service learns from a
//! consumer group's committed offsets (`group_offsets`, `log_barrier`). Every setting is plain
//! Apache Kafka configuration: the same code runs against the local broker (tansu) and a
//! production cluster.

pub mod args;
mod blocking;
pub mod client;
pub mod consume;
pub mod group_offsets;
pub mod log_barrier;

pub use args::{ConsumerArgs, KafkaArgs, OrderLogArgs};
pub use client::with_trace_context;
