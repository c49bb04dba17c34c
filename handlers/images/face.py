"""Face identity kept? ArcFace cosine similarity to the face reference, computed on the pod.

The pod already has what InstantID needs: insightface and its antelopev2 models (detector
+ glintr100 ArcFace recogniser) under ``ComfyUI/models/insightface``. Installing them here
would mean fetching model weights, so the measure runs there: a short Python script
started over SSH prints one JSON object, and nothing else is trusted.

Threshold (a starting point, not tuned on judged pairs): ArcFace embeddings of two
different people rarely exceed a cosine of 0.35 (py-feat's 5-person check measured a
maximum of 0.35 with insightface's r50; deepface verifies ArcFace at similarity ≥ 0.32),
while photos of one person typically read 0.5-0.8. 0.40 is above the impostor range with a
margin. A refiner pass on the same seed should barely move the face, so, when the previous
image was measured too, the new one may not lose more than 0.05 of similarity.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ralph.handlers.machines import remote_shell
from ralph.handlers.machines.base import Machine, MachineError

MIN_SIMILARITY = 0.40
MAX_DROP = 0.05
MODEL = "antelopev2"

# Runs on the pod. Arguments: insightface root, model name, reference, images...
# Reads images with cv2 when present (insightface depends on it), else PIL (ComfyUI's).
REMOTE_SCRIPT = r"""
import json, sys
out = {"ok": False}
try:
    import numpy as np
    from insightface.app import FaceAnalysis
except Exception as error:
    out["error"] = "insightface not importable: %s: %s" % (type(error).__name__, error)
    print(json.dumps(out)); sys.exit(0)
root, model, reference, images = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]

def load(path):
    try:
        import cv2
        image = cv2.imread(path)
        if image is not None:
            return image
    except ImportError:
        pass
    from PIL import Image
    return np.asarray(Image.open(path).convert("RGB"))[:, :, ::-1].copy()

def embed(path):
    faces = app.get(load(path))
    if not faces:
        return None, 0
    face = max(faces, key=lambda f: (f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]))
    vector = np.asarray(face.normed_embedding, dtype=np.float64)
    return vector / np.linalg.norm(vector), len(faces)

try:
    app = FaceAnalysis(name=model, root=root, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    app.prepare(ctx_id=0, det_size=(640, 640))
    ref, count = embed(reference)
    out["reference_faces"] = count
    out["images"] = []
    for path in images:
        vector, faces = embed(path)
        similarity = None if ref is None or vector is None else float(np.dot(ref, vector))
        out["images"].append({"path": path, "faces": faces, "similarity": similarity})
    out["ok"] = True
except Exception as error:
    out["error"] = "%s: %s" % (type(error).__name__, error)
print(json.dumps(out))
"""


# Runs on the machine: is insightface there? Found, not imported (its import alone takes seconds).
PROBE = "import importlib.util, sys; sys.exit(importlib.util.find_spec('insightface') is None)"
_missing: dict[tuple[str, str], str] = {}  # (machine id, Python) → why the measure cannot run there


@dataclass(frozen=True)
class FaceMeasure:
    """Similarities of images to the reference; ``available`` False when nothing was measured."""

    available: bool
    reason: str  # why not measured, or how it was
    reference_faces: int = 0
    similarities: dict[str, float | None] = field(default_factory=dict)  # local path → cosine (None: no face)
    faces: dict[str, int] = field(default_factory=dict)

    def as_data(self) -> dict[str, Any]:
        return {
            "available": self.available,
            "reason": self.reason,
            "reference_faces": self.reference_faces,
            "similarities": {k: None if v is None else round(v, 4) for k, v in self.similarities.items()},
            "faces": self.faces,
            "threshold": MIN_SIMILARITY,
            "max_drop": MAX_DROP,
        }


def unavailable(reason: str) -> FaceMeasure:
    return FaceMeasure(False, reason)


def measure_faces(
    provider: Machine,
    images: dict[str, str],
    reference: str,
    *,
    insightface_root: str,
    python: str = "python3",
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> FaceMeasure:
    """Run the ArcFace script on ``provider`` (the pod).

    ``images`` maps a local name (what the caller reports) to the image's path on the pod;
    ``reference`` is the face reference's path there. Machine errors and a script that does
    not answer with its JSON give an unavailable measure with the reason, never a verdict.
    """
    command = remote_shell.join(python, "-c", REMOTE_SCRIPT, insightface_root, MODEL, reference, *images.values())
    try:
        answer = provider.run(command, check=False, timeout=timeout, env=env)
    except MachineError as error:
        return unavailable(f"face script could not run on the pod: {error}")
    lines = [line for line in answer.stdout.splitlines() if line.startswith("{")]
    try:
        report = json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = (answer.stderr or answer.stdout).strip()[-300:]
        return unavailable(f"face script gave no answer (exit {answer.exit_code}): {tail}")
    if not report.get("ok"):
        return unavailable(str(report.get("error", "face script failed")))
    by_remote = {entry["path"]: entry for entry in report.get("images", [])}
    similarities = {name: by_remote.get(remote, {}).get("similarity") for name, remote in images.items()}
    faces = {name: int(by_remote.get(remote, {}).get("faces", 0)) for name, remote in images.items()}
    count = int(report.get("reference_faces", 0))
    how = f"ArcFace ({MODEL}) cosine to {reference} on the pod"
    if count == 0:
        return FaceMeasure(False, f"no face found in the reference {reference}", count, similarities, faces)
    return FaceMeasure(True, how, count, similarities, faces)


def missing_insightface(provider: Machine, machine: str, python: str = "python3", shown: str = "") -> str:
    """Why the face measure cannot run on ``machine`` with ``python`` (named ``shown`` for people),
    "" when it can.

    Probed once per machine and Python in this process and remembered, so that a machine without
    insightface costs one Python start on it, not an upload and a script at every evaluation.
    Machine errors are not remembered: they propagate, and the next evaluation probes again.
    """
    key = (machine, python)
    if key not in _missing:
        answer = provider.run(remote_shell.join(python, "-c", PROBE), check=False, timeout=60)
        if answer.exit_code == 1 and not answer.stderr.strip():
            _missing[key] = f"insightface not importable by {shown or python} on the machine"
        elif not answer.ok:
            _missing[key] = (f"{shown or python} did not run on the machine (exit {answer.exit_code}): "
                             f"{answer.stderr.strip()[-200:]}")
        else:
            _missing[key] = ""
    return _missing[key]


def upload_images(provider: Machine, local: list[Path], remote_dir: str) -> dict[str, str]:
    """Copy local images to ``remote_dir`` on the pod; local path → remote path."""
    provider.run(remote_shell.join("mkdir", "-p", remote_dir))
    placed = {}
    for path in local:
        remote = posixpath.join(remote_dir, path.name)
        provider.put(path, remote)
        placed[str(path)] = remote
    return placed


@dataclass(frozen=True)
class FaceVerdict:
    verified: bool | None
    detail: str


def judge(measure: dict[str, Any] | None, image: str | None, previous: str | None) -> FaceVerdict:
    """The criterion "qualité visage maintenue" for ``image`` from a recorded measure
    (``FaceMeasure.as_data``): never verified without a similarity."""
    if not measure or not measure.get("available"):
        reason = (measure or {}).get("reason", "no face identity measure was made")
        return FaceVerdict(None, f"face identity not measured ({reason}); a person must compare the faces")
    similarity = measure["similarities"].get(image)
    if similarity is None:
        if measure["faces"].get(image, 0) == 0 and image in measure["faces"]:
            return FaceVerdict(False, f"no face detected in {image} by {MODEL}")
        return FaceVerdict(None, f"{image} was not measured")
    text = f"ArcFace similarity to the reference {similarity:.3f} (needs >= {MIN_SIMILARITY})"
    before = measure["similarities"].get(previous) if previous else None
    if before is not None:
        text += f"; previous image {before:.3f} (may drop <= {MAX_DROP})"
    if similarity < MIN_SIMILARITY:
        return FaceVerdict(False, text + ": identity lost")
    if before is not None and similarity < before - MAX_DROP:
        return FaceVerdict(False, text + ": identity weaker than before")
    return FaceVerdict(True, text)
