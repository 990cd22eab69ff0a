#!/usr/bin/env bash
# The box as an operator runs it (the release binary, `mostro-box run`, on a regtest bitcoind),
# measured from outside, and its relay next to nostr-rs-relay on the same workload:
#   - binary size; cold start to READY=1 (the systemd notification); RSS idle and under load;
#   - `mostro-box bench relay` against the box's relay, then against nostr-rs-relay 0.8.12
#     (built from crates.io into .cache on first use; needs protoc: apt install protobuf-compiler).
# Usage: scripts/bench-box.sh            (figures go to stdout; BENCHMARKS.md quotes them)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss() { awk -v k="$2:" '$1==k {print int($2/1024)}' "/proc/$1/status"; }

echo "== build (release)"
cargo build --release --locked --quiet
bin=target/release/mostro-box
echo "binary: $(stat -c %s $bin | awk '{printf "%.1f MB", $1/1e6}') ($bin, not stripped)"
strip -o "$work/stripped" $bin && echo "binary stripped: $(stat -c %s "$work/stripped" | awk '{printf "%.1f MB", $1/1e6}')"

echo "== regtest bitcoind"
bitcoind=$(scripts/get-bitcoind.sh .cache/bitcoind | tail -n 1)
rpc=$(port)
mkdir -p "$work/bitcoind"
"$bitcoind" -regtest -datadir="$work/bitcoind" -rpcport="$rpc" -port="$(port)" -rpcuser=u -rpcpassword=p \
  -server=1 -listen=0 -disablewallet=1 -fallbackfee=0.00001 -printtoconsole=0 &
pids+=($!)
for _ in $(seq 100); do
  curl -sf -u u:p -d '{"method":"getblockcount"}' "http://127.0.0.1:$rpc/" >/dev/null && break
  sleep 0.2
done
curl -sf -u u:p -d '{"method":"generatetoaddress","params":[1,"bcrt1qs758ursh4q9z627kt3pp5yysm78ddny6txaqgw"]}' \
  "http://127.0.0.1:$rpc/" >/dev/null

echo "== the box: cold start to READY=1"
relay=$(port)
data="$work/box"
$bin --data-dir "$data" init >/dev/null
sock="$work/notify.sock"
python3 - "$sock" > "$work/ready" <<'EOF' &
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
while True:
    msg = s.recv(4096).decode()
    if "READY=1" in msg:
        print(time.monotonic())
        break
EOF
pids+=($!)
while [ ! -S "$sock" ]; do sleep 0.05; done
start=$(python3 -c 'import time; print(time.monotonic())')
NOTIFY_SOCKET="$sock" $bin --data-dir "$data" run \
  --set relay.listen=127.0.0.1:$relay --set relay.public_url=ws://127.0.0.1:$relay \
  --set relay.events_per_minute_per_ip=100000000 --set relay.max_connections_per_ip=1000 \
  --set relay.connections_per_minute_per_ip=100000000 --set relay.bytes_per_second_per_ip=1000000000 \
  --set lightning.network=regtest --set lightning.chain_source=bitcoind \
  --set lightning.bitcoind_rpc_address=127.0.0.1:$rpc --set lightning.bitcoind_rpc_user=u \
  --set lightning.bitcoind_rpc_password=p --set lightning.listen=127.0.0.1:$(port) \
  --set status.listen=127.0.0.1:0 --set price.api_url=http://127.0.0.1:9 \
  2> "$work/box.log" &
box=$!
pids+=($box)
for _ in $(seq 600); do [ -s "$work/ready" ] && break; sleep 0.05; done
[ -s "$work/ready" ] || { echo "the box never sent READY=1:"; tail "$work/box.log"; exit 1; }
python3 -c "print('cold start to READY=1: %.2f s (empty store, warm page cache)' % ($(cat "$work/ready") - $start))"
sleep 10
echo "RSS idle (10 s after ready): $(rss $box VmRSS) MB"

echo "== bench relay: the box"
$bin bench relay "ws://127.0.0.1:$relay" | tee "$work/box.txt"
echo "RSS of the box after the relay load: $(rss $box VmRSS) MB, peak $(rss $box VmHWM) MB"

echo "== bench relay: nostr-rs-relay"
nrr=.cache/nostr-rs-relay/bin/nostr-rs-relay
if [ ! -x "$nrr" ]; then
  echo "building nostr-rs-relay 0.8.12 into .cache (once, about 15 min)..."
  CARGO_TARGET_DIR=.cache/nostr-rs-relay-target cargo install --quiet --locked nostr-rs-relay \
    --version 0.8.12 --root .cache/nostr-rs-relay
  rm -rf .cache/nostr-rs-relay-target
fi
other=$(port)
mkdir -p "$work/nrr"
cat > "$work/nrr/config.toml" <<EOF
[info]
relay_url = "ws://127.0.0.1:$other/"
[database]
data_directory = "$work/nrr"
[network]
address = "127.0.0.1"
port = $other
EOF
(cd "$work/nrr" && exec "$root/$nrr" --config config.toml --db "$work/nrr" 2> "$work/nrr.log") &
nrr_pid=$!
pids+=($nrr_pid)
for _ in $(seq 100); do curl -sf -H 'Accept: application/nostr+json' "http://127.0.0.1:$other/" >/dev/null && break; sleep 0.1; done
$bin bench relay "ws://127.0.0.1:$other" | tee "$work/nrr.txt"
echo "RSS of nostr-rs-relay after the relay load: $(rss $nrr_pid VmRSS) MB, peak $(rss $nrr_pid VmHWM) MB"

echo "== ratio (box / nostr-rs-relay, same run)"
python3 - "$work/box.txt" "$work/nrr.txt" <<'EOF'
import re, sys
def figures(path):
    t = open(path).read()
    rate = float(re.search(r"= (\d+) events/s", t).group(1))
    ok = [float(x) for x in re.search(r"OK latency:\s+p50 ([\d.]+) ms, p99 ([\d.]+) ms", t).groups()]
    q = [float(x) for x in re.search(r"query to EOSE:\s+p50 ([\d.]+) ms, p99 ([\d.]+) ms", t).groups()]
    return rate, ok, q
b, n = figures(sys.argv[1]), figures(sys.argv[2])
print("ingest events/s: box %.0f, nostr-rs-relay %.0f: ratio %.2f" % (b[0], n[0], b[0] / n[0]))
print("OK latency p50: box %.1f ms, nostr-rs-relay %.1f ms" % (b[1][0], n[1][0]))
print("query p50: box %.1f ms, nostr-rs-relay %.1f ms: ratio %.2f" % (b[2][0], n[2][0], b[2][0] / n[2][0]))
print("query p99: box %.1f ms, nostr-rs-relay %.1f ms" % (b[2][1], n[2][1]))
EOF
