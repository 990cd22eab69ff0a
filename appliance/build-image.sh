#!/usr/bin/env bash
# Builds the mostro-box container image from binaries built on this machine, with podman (or
# docker): no base image is pulled, the root file system comes from Debian's own packages.
#
#   appliance/build-image.sh TAG AMD64_BINARY [ARM64_BINARY]
#
# e.g. after `cargo build --release` and `raspberry-pi/cross-build.sh`:
#   appliance/build-image.sh localhost/mostro-box:0.1.0 target/release/mostro-box \
#     target/aarch64-unknown-linux-gnu/release/mostro-box
# With one binary it makes TAG for amd64; with two, TAG-amd64 and TAG-arm64 and, with podman,
# TAG as an image index of both. Needs mmdebstrap (apt install mmdebstrap) and, as root,
# nothing else: the arm64 image has no RUN step, so no emulator is needed.
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,12p' "$0" >&2; exit 2; }
tag=$1 amd64=$2 arm64=${3:-}
here="$(cd "$(dirname "$0")" && pwd)"
engine=${CONTAINER_ENGINE:-$(command -v podman || command -v docker || true)}
[ -n "$engine" ] || { echo "needs podman or docker (apt install podman)" >&2; exit 1; }
command -v mmdebstrap >/dev/null || { echo "needs mmdebstrap (apt install mmdebstrap)" >&2; exit 1; }
cache="${MOSTRO_BOX_IMAGE_CACHE:-$here/../.cache/image}"
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT

rootfs() { # ARCH: Debian bookworm's libc and a shell, unpacked without running any script
  local out="$cache/rootfs-$1.tar"
  if [ ! -s "$out" ]; then
    mkdir -p "$cache"
    echo "making the $1 root file system from Debian's packages..."
    mmdebstrap --quiet --mode=chrootless --variant=extract --arch="$1" \
      --include=base-files,libc6,libgcc-s1,dash bookworm "$cache/.part-$1.tar"
    mv "$cache/.part-$1.tar" "$out"
  fi
  cp "$out" "$ctx/rootfs-$1.tar"
}

cp "$here/Containerfile" "$ctx/"
printf 'root:x:0:0:root:/root:/usr/sbin/nologin\nmostro-box:x:1000:1000::/data:/usr/sbin/nologin\n' > "$ctx/passwd"
printf 'root:x:0:\nmostro-box:x:1000:\n' > "$ctx/group"
install -d -m 0700 "$ctx/data"

build() { # ARCH BINARY TAG
  rootfs "$1"
  install -m 0755 "$2" "$ctx/mostro-box-$1"
  "$engine" build --quiet --platform "linux/$1" --build-arg "TARGETARCH=$1" \
    -f "$ctx/Containerfile" -t "$3" "$ctx" >/dev/null
  rm "$ctx/mostro-box-$1"
  echo "built $3 (linux/$1)"
}

if [ -z "$arm64" ]; then
  build amd64 "$amd64" "$tag"
else
  build amd64 "$amd64" "$tag-amd64"
  build arm64 "$arm64" "$tag-arm64"
  if [ "$(basename "$engine")" = podman ]; then
    podman manifest rm "$tag" >/dev/null 2>&1 || true
    podman manifest create "$tag" >/dev/null
    podman manifest add "$tag" "containers-storage:$tag-amd64" >/dev/null
    podman manifest add "$tag" "containers-storage:$tag-arm64" >/dev/null
    echo "built $tag: an image index of linux/amd64 and linux/arm64"
  fi
fi
