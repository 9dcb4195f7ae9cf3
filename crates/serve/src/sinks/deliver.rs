//! Delivery from the outbox.
