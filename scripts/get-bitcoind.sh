#!/bin/sh
# Provisions a regtest-capable bitcoind and bitcoin-cli from package registries alone, because
# Debian stable ships none. Used by .ci/run, by the test harness and by `mostro-box dev`.
#
#   scripts/get-bitcoind.sh DEST     ->  DEST/bin/bitcoind, DEST/bin/bitcoin-cli
#
# Prints the bitcoind path on its last line. Cheap to re-run: a working DEST/bin/bitcoind is kept.
# If `bitcoind` is already on PATH (a full-node owner), that one is used and nothing is fetched.
#
# Route 1 (~15 s): Bitcoin Knots, a Bitcoin Core derivative, from Debian sid's .deb, started
#                  through sid's own glibc loader so the host's older glibc does not matter.
# Route 2 (~10 min): Bitcoin Core built with cmake from the source tree vendored in the crates.io
#                  crate libbitcoinkernel-sys (no wallet; the box funds wallets with
#                  generatetoaddress, so none is needed).
set -eu
DEST=$(realpath -m "${1:?usage: get-bitcoind.sh DEST}")
BIN="$DEST/bin"

works() { [ -x "$1" ] && "$1" -version >/dev/null 2>&1; }

if works "$BIN/bitcoind"; then echo "$BIN/bitcoind"; exit 0; fi
if command -v bitcoind >/dev/null 2>&1 && command -v bitcoin-cli >/dev/null 2>&1 \
   && works "$(command -v bitcoind)"; then
  command -v bitcoind; exit 0
fi
mkdir -p "$BIN"

sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  dpkg -s "$@" >/dev/null 2>&1 && return 0
  echo "get-bitcoind: installing $* with apt" >&2
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

from_sid_deb() {
  case "$(uname -m)" in
    x86_64) TRIPLE=x86_64-linux-gnu; LOADER=ld-linux-x86-64.so.2 ;;
    aarch64) TRIPLE=aarch64-linux-gnu; LOADER=ld-linux-aarch64.so.1 ;;
    *) echo "no sid route for $(uname -m)"; return 1 ;;
  esac
  APT="$DEST/sid/apt"; ROOT="$DEST/sid/root"
  mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$APT/debs" "$ROOT"
  echo "deb http://deb.debian.org/debian sid main" > "$APT/sources.list"
  # A private apt state so the host's package lists and sources stay untouched.
  set -- -o Dir::Etc::sourcelist="$APT/sources.list" -o Dir::Etc::sourceparts=/nonexistent \
         -o Dir::State::Lists="$APT/lists" -o Dir::Cache="$APT/cache" -o Debug::NoLocking=1
  apt-get "$@" -qq update
  apt_install libevent-core-2.1-7 libevent-extra-2.1-7 libevent-pthreads-2.1-7 libzmq5 libsqlite3-0
  (cd "$APT/debs" && apt-get "$@" -qq download bitcoin-knots libc6 libstdc++6 libgcc-s1)
  for deb in "$APT"/debs/*.deb; do dpkg-deb -x "$deb" "$ROOT"; done
  LIB="$ROOT/usr/lib/$TRIPLE"
  for tool in bitcoind bitcoin-cli; do
    cat > "$BIN/$tool" <<WRAP
#!/bin/sh
exec "$LIB/$LOADER" --library-path "$LIB:/lib/$TRIPLE:/usr/lib/$TRIPLE" "$ROOT/usr/bin/$tool" "\$@"
WRAP
    chmod +x "$BIN/$tool"
  done
  works "$BIN/bitcoind"
}

from_core_source() {
  CRATE_VERSION=0.4.1
  FETCH="$DEST/core/fetch"; BUILD="$DEST/core/build"
  mkdir -p "$FETCH/src"
  apt_install cmake libboost-dev libevent-dev pkg-config
  cat > "$FETCH/Cargo.toml" <<TOML
[package]
name = "fetch-bitcoin-core"
version = "0.0.0"
edition = "2021"
[dependencies]
libbitcoinkernel-sys = "=$CRATE_VERSION"
TOML
  : > "$FETCH/src/lib.rs"
  (cd "$FETCH" && cargo fetch -q)
  CRATE_DIR=$(cd "$FETCH" && cargo metadata -q --format-version 1 | python3 -c '
import json, os, sys
meta = json.load(sys.stdin)
print(next(os.path.dirname(p["manifest_path"]) for p in meta["packages"] if p["name"] == "libbitcoinkernel-sys"))')
  cmake -S "$CRATE_DIR/bitcoin" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_DAEMON=ON -DBUILD_CLI=ON -DENABLE_WALLET=OFF -DWITH_ZMQ=OFF -DENABLE_IPC=OFF \
    -DWITH_EMBEDDED_ASMAP=OFF -DBUILD_TESTS=OFF -DBUILD_BENCH=OFF -DBUILD_KERNEL_LIB=OFF \
    -DBUILD_TX=OFF -DBUILD_UTIL=OFF -DBUILD_WALLET_TOOL=OFF -DBUILD_FUZZ_BINARY=OFF \
    -DBUILD_GUI=OFF -DBUILD_BITCOIN_BIN=OFF -DBUILD_UTIL_CHAINSTATE=OFF \
    -DENABLE_EXTERNAL_SIGNER=OFF >/dev/null
  cmake --build "$BUILD" -j"$(nproc)" --target bitcoind bitcoin-cli >/dev/null
  cp "$BUILD/bin/bitcoind" "$BUILD/bin/bitcoin-cli" "$BIN/"
  works "$BIN/bitcoind"
}

echo "get-bitcoind: fetching Bitcoin Knots from Debian sid into $DEST" >&2
if ! (from_sid_deb) >"$DEST/sid.log" 2>&1; then
  echo "get-bitcoind: the Debian sid route failed (see $DEST/sid.log);" \
       "building Bitcoin Core from source instead (~10 min on 2 cores)" >&2
  rm -f "$BIN/bitcoind" "$BIN/bitcoin-cli"
  from_core_source
fi
echo "$BIN/bitcoind"
