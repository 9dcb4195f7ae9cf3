#!/usr/bin/env bash
# Builds the cargo-fuzz targets (libFuzzer, AddressSanitizer) and runs each for a bounded time,
# seeded from testdata/formats and testdata/fuzz. A crash fails the run; its input is kept under
# fuzz/artifacts/<target>/ and must become a regression test: copy it to
# testdata/fuzz/<target>/ with a name that says what it is, where
# crates/ingest/tests/fuzz_regressions.rs replays it with the target's own checks.
#
# The toolchain here is stable: RUSTC_BOOTSTRAP=1 lets it take the sanitizer flags cargo-fuzz
# passes. FUZZ_SECONDS (default 20) is the time per target.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${FUZZ_SECONDS:-20}"
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
cd fuzz
cargo fuzz build -O
for target in sniff line readers; do
  corpus="corpus/$target"
  mkdir -p "$corpus"
  # Seeds: every fixture; the line target also gets each fixture line on its own, and the
  # readers target each fixture behind every format-picking first byte it uses.
  for f in ../testdata/formats/*.json ../testdata/formats/*.csv ../testdata/formats/*.gz ../testdata/formats/*.zst; do
    name="$(basename "$f")"
    case "$target" in
      sniff) cp "$f" "$corpus/$name" ;;
      line) split -l 1 -d -a 3 "$f" "$corpus/$name." 2>/dev/null || true ;;
      readers)
        for pick in 0 1 2 3 4 5 6 7 8 9 11; do
          { printf "\\x$(printf %02x "$pick")"; cat "$f"; } > "$corpus/$name.$pick"
        done
        ;;
    esac
  done
  # And every input a target ever crashed on (kept as regression inputs).
  if [ -d "../testdata/fuzz/$target" ]; then
    find "../testdata/fuzz/$target" -type f -exec cp {} "$corpus"/ \;
  fi
  echo "fuzzing $target for ${secs}s"
  cargo fuzz run -O "$target" "$corpus" -- -max_total_time="$secs" -rss_limit_mb=2048 -max_len=262144 -print_final_stats=1
done
