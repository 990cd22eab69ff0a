#!/usr/bin/env bash
# Builds mostro-box for a Raspberry Pi 4/5 running a 64-bit OS (aarch64), on a Debian or Ubuntu
# PC, and prints the binary's path last. Copy it to the Pi and run raspberry-pi/install.sh PATH.
#   raspberry-pi/cross-build.sh            # release build
#   PROFILE=dev raspberry-pi/cross-build.sh  # quicker unoptimised build (what CI checks)
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${PROFILE:-release}"
target=aarch64-unknown-linux-gnu

if ! command -v aarch64-linux-gnu-gcc >/dev/null; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get install -y --no-install-recommends gcc-aarch64-linux-gnu libc6-dev-arm64-cross
fi
rustup target list --installed | grep -qx "$target" || rustup target add "$target"

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
cargo build --locked --profile "$profile" --target "$target" >&2
dir="$profile"; [ "$profile" = dev ] && dir=debug
echo "${CARGO_TARGET_DIR:-target}/$target/$dir/mostro-box"
