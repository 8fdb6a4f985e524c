#!/usr/bin/env bash
# Sourced by scripts/demo and scripts/test: makes .venv with the pinned requirements and the
# Debian packages the tests and the demo need. Safe to run again: each step checks first.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

need_debs=()
command -v sqlite3 >/dev/null || need_debs+=(sqlite3)
command -v sqldiff >/dev/null || need_debs+=(sqlite3-tools)  # the tests compare tables with it
[ -x /usr/sbin/sshd ] || need_debs+=(openssh-server)
command -v sudo >/dev/null || need_debs+=(sudo)
command -v ssh-keygen >/dev/null || need_debs+=(openssh-client)
# molecule/systemd boots real systemd machines with systemd-nspawn (no container engine needed)
command -v systemd-nspawn >/dev/null || need_debs+=(systemd-container)
# the reflink backup's tests and bench make an XFS (reflink=1) loop mount with mkfs.xfs
[ -x /usr/sbin/mkfs.xfs ] || [ -x /sbin/mkfs.xfs ] || need_debs+=(xfsprogs)
if [ ${#need_debs[@]} -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${need_debs[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_debs[@]}" >/dev/null
fi

PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating $VENV"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.requirements.sha256"
want="$(sha256sum "$ROOT/requirements.txt" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: installing pinned requirements"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$ROOT/requirements.txt"
  echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
export VIRTUAL_ENV="$VENV"
cd "$ROOT"
