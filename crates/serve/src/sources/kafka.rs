//! Kafka and Event Hubs.
