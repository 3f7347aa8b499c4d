#!/usr/bin/env bash
# Set up a fresh machine for the talking-portrait server.
#   scripts/setup.sh          runtime only (parametric engine, server)
#   scripts/setup.sh --emo    + the diffusion engine (PyTorch CPU, diffusers, transformers)
#   scripts/setup.sh --test   + everything the test suite needs (emo, evaluation, pipecat, LiveKit Agents,
#                               Chromium, Playwright)
# Installs Debian packages with apt-get when run as root (or with password-less sudo), creates .venv
# in the project folder and installs the project into it. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

with_emo=0
with_test=0
for arg in "$@"; do
  case "$arg" in
    --emo) with_emo=1 ;;
    --test) with_test=1; with_emo=1 ;;
    *) echo "setup.sh: unknown option $arg (use --emo or --test)" >&2; exit 2 ;;
  esac
done

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "setup.sh: Python 3.11 or newer is needed (found: $("$python" --version 2>&1))" >&2
  exit 2
fi

# Debian packages: OpenCV's runtime libraries, espeak-ng (text to speech), Chromium for browser tests.
apt_packages=(libgl1 libglib2.0-0 espeak-ng)
# --test also: Janus (broadcast fan-out tests) and coturn (TURN relay tests); their services are not used.
if [ "$with_test" = 1 ]; then apt_packages+=(chromium janus coturn); fi
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ] && command -v apt-get >/dev/null; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    if sudo -n true 2>/dev/null; then sudo="sudo -n"; else
      echo "setup.sh: please install these Debian packages first: ${missing[*]}" >&2; exit 2
    fi
  fi
  echo "setup.sh: apt-get install ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then "$python" -m venv .venv; fi
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" --upgrade pip >/dev/null
extras=""
if [ "$with_emo" = 1 ]; then
  # The CPU build of PyTorch 2.13 (plain "torch" may pull a multi-GB CUDA build).
  "${pip[@]}" "torch==2.13.0"
  extras="emo"
fi
if [ "$with_test" = 1 ]; then extras="emo,eval,test"; fi
"${pip[@]}" -e ".${extras:+[$extras]}"
if [ "$with_test" = 1 ]; then
  # The [pipecat] and [livekit] extras need protobuf>=5, which mediapipe 0.10.14 declares it cannot take
  # (it runs on 6.x, see avatar/facemesh.py), so pip cannot resolve them with the project: a second step,
  # the requirements read from pyproject.toml. pip's warning about mediapipe's protobuf is expected.
  mapfile -t integrations < <(.venv/bin/python -c 'import tomllib
extras = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]
print("\n".join(extras["pipecat"] + extras["livekit"]))')
  pip_log=$(mktemp)
  if ! "${pip[@]}" "${integrations[@]}" >"$pip_log" 2>&1; then cat "$pip_log" >&2; rm -f "$pip_log"; exit 1; fi
  grep -v "dependency resolver does not currently\|mediapipe .* requires protobuf" "$pip_log" || true
  rm -f "$pip_log"
fi
echo "setup.sh: ready (.venv)"
