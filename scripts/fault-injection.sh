#!/usr/bin/env bash
# The fault-injection suite at full size (tests/faults.rs, tests/crash.rs), on regtest with the
# real binary:
#   - kill -9 at random moments during FAULT_TRADES concurrent trades (default 50), FAULT_KILLS
#     times (default 5); every trade must end completed or refunded, paid at most once;
#   - bitcoind stopped and started again under the box mid-trade;
#   - the relay flooded from another address while trades run (steps within 2x quiet);
#   - a nearly full disk (needs root to mount a tmpfs): new orders refused, nothing lost;
#   - the crash points of tests/crash.rs.
# FAULT_SEED=N repeats a run's kill moments. .ci/run runs the same tests at their small default
# size (6 trades, 1 kill).
set -euo pipefail
cd "$(dirname "$0")/.."
BITCOIND_EXE=$(scripts/get-bitcoind.sh .cache/bitcoind | tail -n 1)
export BITCOIND_EXE
export FAULT_TRADES="${FAULT_TRADES:-50}" FAULT_KILLS="${FAULT_KILLS:-5}"
cargo test --locked --features fault-injection --test faults --test crash -- --test-threads=1 --nocapture 2>&1 |
  grep -E "^(faults:|flood:|test |test result)|panicked|left:|right:"
