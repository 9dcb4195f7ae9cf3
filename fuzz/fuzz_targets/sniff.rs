//! Format sniffing and compression detection on any bytes: a concrete format, never a panic.
#![no_main]

use floodwatch_ingest::{InputFormat, sniff};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    assert_ne!(sniff(data), InputFormat::Auto);
});
