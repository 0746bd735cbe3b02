#!/usr/bin/env bash
# Make a base image for deploy/container/Containerfile from Debian's own packages, for machines
# that reach Debian's archive but no container registry (the Containerfile's default base is
# docker.io/library/python:3.11-slim-bookworm):
#
#   deploy/container/debian-base.sh [IMAGE]     # default localhost/qtestbed-base:bookworm
#   podman build --format docker --build-arg BASE_IMAGE=localhost/qtestbed-base:bookworm \
#       -f deploy/container/Containerfile -t qtestbed:0.1.0 .
#
# debootstrap (minbase) with python3 and python3-venv, imported with `podman import`. Needs
# root, debootstrap and podman (apt-get install debootstrap podman). Idempotent: does nothing
# when IMAGE exists.
set -euo pipefail

image=${1:-localhost/qtestbed-base:bookworm}
if podman image exists "$image"; then
  exit 0
fi
for tool in debootstrap podman tar; do
  command -v "$tool" >/dev/null 2>&1 || { echo "debian-base: '$tool' not found" >&2; exit 1; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$work/rootfs" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 || {
  tail -n 20 "$work/debootstrap.log" >&2
  exit 1
}
rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/*
tar -C "$work/rootfs" -c . | podman import - "$image" >/dev/null
echo "debian-base: made $image"
