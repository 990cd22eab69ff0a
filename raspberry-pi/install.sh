#!/usr/bin/env bash
# Installs mostro-box as a systemd service on Raspberry Pi OS bookworm (64-bit) or any Debian
# with systemd. One command, as root, from a checkout of the repository:
#
#   sudo raspberry-pi/install.sh [PATH/TO/mostro-box]
#
# Without a path it uses target/release/mostro-box, building it with cargo if needed (slow on a
# Pi: cross-compile on a PC with raspberry-pi/cross-build.sh and copy the binary instead).
# It creates the `mostro-box` system user, installs the binary and the hardened unit, writes the
# key, the Lightning seed and the annotated settings into /var/lib/mostro-box, and tells you
# what to set before the first start. Run it again to upgrade the binary: data is never touched.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
data=/var/lib/mostro-box

[ "$(id -u)" = 0 ] || { echo "run as root: sudo $0 $*" >&2; exit 1; }
command -v systemctl >/dev/null || { echo "this installer needs systemd" >&2; exit 1; }

bin="${1:-$here/target/release/mostro-box}"
if [ ! -x "$bin" ]; then
  if [ $# -eq 0 ] && command -v cargo >/dev/null; then
    echo "building mostro-box (this takes a while on a Raspberry Pi)..."
    (cd "$here" && cargo build --release --locked)
  else
    echo "no mostro-box binary at $bin: build one or pass its path" >&2
    exit 1
  fi
fi
arch="$(uname -m)"
if command -v file >/dev/null && ! file -L "$bin" | grep -qiE "$( [ "$arch" = aarch64 ] && echo aarch64 || echo x86-64 )"; then
  echo "$bin is not built for this machine ($arch): $(file -L "$bin")" >&2
  exit 1
fi

if ! id mostro-box >/dev/null 2>&1; then
  useradd --system --home-dir "$data" --shell /usr/sbin/nologin mostro-box
fi
install -d -o mostro-box -g mostro-box -m 0700 "$data"
was_running=no
if systemctl is-active --quiet mostro-box; then
  was_running=yes
  echo "stopping the running box to upgrade it..."
  systemctl stop mostro-box
fi
install -m 0755 "$bin" /usr/local/bin/mostro-box
install -m 0644 "$here/systemd/mostro-box.service" /etc/systemd/system/mostro-box.service
systemctl daemon-reload
# Fills in only what is missing: an existing key, seed or settings file is never replaced.
fresh=no
[ -e "$data/mostro-box.toml" ] || fresh=yes
runuser -u mostro-box -- /usr/local/bin/mostro-box --data-dir "$data" init
# A new box opens its status page to the home network, for the operator's phone (on a server
# the default is this machine only).
if [ "$fresh" = yes ]; then
  sed -i 's|^listen = "127.0.0.1:7778"|listen = "0.0.0.0:7778"|' "$data/mostro-box.toml"
fi
systemctl enable mostro-box >/dev/null

if [ "$was_running" = yes ]; then
  systemctl start mostro-box
  echo "upgraded and started again: systemctl status mostro-box"
  exit 0
fi
cat <<NEXT

mostro-box is installed (not started yet).

1. Settings: $data/mostro-box.toml (edit as root, keep it owned by mostro-box).
   - lightning.network: "bitcoin" for real money; "signet" or "testnet" to try it first.
   - lightning.chain_source: "esplora" (a public server, the default), or "bitcoind" with
     bitcoind_rpc_* if this Pi runs a full node.
   - relay.public_url: the address traders will use, e.g. "wss://mostro.example.org" behind
     a tunnel, or "ws://YOUR_PUBLIC_IP:7777" with a port forward.
2. Ports: the relay listens on 7777 and the Lightning node on 9735; the status page on
   7778 (your home network only: never forward it). With ufw:
     ufw allow 7777/tcp && ufw allow 9735/tcp && ufw allow from 192.168.0.0/16 to any port 7778 proto tcp
   and forward 7777 and 9735 on your router (or use a tunnel for 7777).
3. Back up the seed words now, on paper:
     sudo -u mostro-box mostro-box --data-dir $data seed show
4. Start it and watch it:
     systemctl start mostro-box && journalctl -u mostro-box -f
     sudo -u mostro-box mostro-box --data-dir $data status
5. Open the status page on your phone: scan the QR code this prints.
     sudo -u mostro-box mostro-box --data-dir $data status-page
NEXT
