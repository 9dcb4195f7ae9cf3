//! Fast path for line-oriented JSON telemetry: a byte-level scanner for flat rows and parallel chunk aggregation.
