//! The seed rule (see README): written next.
