//! Payloads of each sink, as pure functions of a notification.
