#!/usr/bin/env bash
# Install promtool and the prometheus server binary (and nothing else) into DEST_DIR, e.g.
# `.venv/bin`, for the rule and metrics checks in tests/e2e/test_prometheus.py and the real
# scrape over mutual TLS in tests/e2e/test_prometheus_scrape.py.
#
#   usage: deploy/prometheus/install-promtool.sh DEST_DIR
#
# Why this way: the machines that build and test this project reach only package registries
# (PyPI, Debian, npm), so promtool's release tarball on GitHub is out of reach, and we found no
# PyPI wheel or npm package that ships promtool (building it with Go would need the Go toolchain
# and the whole Prometheus module graph). Debian's own `prometheus` package ships it (Debian 12:
# 2.42), so we fetch that .deb with `apt-get download` (checked against the signed archive
# lists; it resolves and installs no dependencies) and unpack only ./usr/bin/promtool and
# ./usr/bin/prometheus with dpkg-deb. Nothing is installed with dpkg, no prometheus user is
# created, no Prometheus server is started (the tests start one of their own, on a free port).
# Both are Go binaries that need only libc.
#
# Idempotent: exits 0 at once when DEST_DIR/promtool and DEST_DIR/prometheus already exist and run.
# Needs the apt package lists; run as root it fetches them itself when they are missing,
# otherwise run `apt-get update` first (as root).
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 DEST_DIR   (e.g. $0 .venv/bin)" >&2
  exit 2
fi
dest=$1
binaries=(promtool prometheus)

installed() {
  local name
  for name in "${binaries[@]}"; do
    [[ -x "$dest/$name" ]] && "$dest/$name" --version >/dev/null 2>&1 || return 1
  done
}

if installed; then
  exit 0
fi

for tool in apt-get apt-cache dpkg-deb tar; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "install-promtool: '$tool' not found; this script needs a Debian or Ubuntu machine." >&2
    echo "  Elsewhere, put promtool and prometheus (prometheus.io/download) in $dest by hand." >&2
    exit 1
  fi
done

candidate=$(apt-cache policy prometheus 2>/dev/null | awk '/Candidate:/ {print $2}')
if [[ (-z "$candidate" || "$candidate" == "(none)") && $(id -u) -eq 0 ]]; then
  # A fresh machine may have no package lists yet; as root, fetch them (registry only).
  apt-get update -qq >/dev/null 2>&1 || true
  candidate=$(apt-cache policy prometheus 2>/dev/null | awk '/Candidate:/ {print $2}')
fi
if [[ -z "$candidate" || "$candidate" == "(none)" ]]; then
  echo "install-promtool: apt knows no 'prometheus' package: the package lists are missing." >&2
  echo "  Run 'apt-get update' (as root, once), then run this script again:" >&2
  echo "    $0 $dest" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# apt's download sandbox user (_apt) must be able to write here, or apt warns and runs unsandboxed.
chmod 0755 "$work"
if id _apt >/dev/null 2>&1 && [[ $(id -u) -eq 0 ]]; then
  chown _apt "$work"
fi

if ! (cd "$work" && apt-get download -q "prometheus=$candidate" >download.log 2>&1); then
  cat "$work/download.log" >&2
  echo "install-promtool: could not download prometheus $candidate; the apt lists may be stale." >&2
  echo "  Run 'apt-get update' (as root), then run this script again: $0 $dest" >&2
  exit 1
fi

deb=$(find "$work" -maxdepth 1 -name 'prometheus_*.deb' -print -quit)
mkdir -p "$work/root"
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$work/root" ./usr/bin/promtool ./usr/bin/prometheus

mkdir -p "$dest"
for name in "${binaries[@]}"; do
  # Copy under a temporary name, then rename: a concurrent run never sees half a binary.
  install -m 0755 "$work/root/usr/bin/$name" "$dest/.$name.$$"
  mv -f "$dest/.$name.$$" "$dest/$name"
  "$dest/$name" --version >/dev/null
  echo "install-promtool: installed $("$dest/$name" --version 2>&1 | head -n1) at $dest/$name"
done
