#!/usr/bin/env bash
# Installs what the Kafka tests need: the Kafka-protocol broker tansu (a single binary; every
# test starts its own broker on a free 127.0.0.1 port with in-memory storage, so nothing else
# is set up here). Safe to run again: it does nothing when tansu is already installed.
set -euo pipefail

if command -v tansu >/dev/null 2>&1; then
    echo "kafka.sh: tansu already on PATH: $(command -v tansu) ($(tansu --version))"
    exit 0
fi
if [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/tansu" ]; then
    # The tests look there too, so PATH need not change.
    echo "kafka.sh: tansu already installed: ${CARGO_HOME:-$HOME/.cargo}/bin/tansu"
    exit 0
fi
# dynostore is the storage feature the tests' `--storage-engine memory://tansu/` needs.
echo "kafka.sh: installing tansu: cargo install tansu --locked --features dynostore"
cargo install tansu --locked --features dynostore
echo "kafka.sh: installed $(command -v tansu || echo "${CARGO_HOME:-$HOME/.cargo}/bin/tansu")"
