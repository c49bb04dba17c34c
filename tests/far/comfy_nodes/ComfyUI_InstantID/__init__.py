"""Stand-ins for cubiq/ComfyUI_InstantID's nodes, with the identical schema.

The graph around them (checkpoint, LoRA, ControlNet, text encoders, samplers, decode,
save) runs for real; only the face-identity step is a pass-through, because insightface's
antelopev2 weights cannot be obtained offline.
"""
import os

import comfy.utils
import folder_paths

# The real extension registers models/instantid the same way, so file lists match.
INSTANTID_DIR = os.path.join(folder_paths.models_dir, "instantid")
if "instantid" not in folder_paths.folder_names_and_paths:
    folder_paths.folder_names_and_paths["instantid"] = ([INSTANTID_DIR], folder_paths.supported_pt_extensions)


class InstantIDModelLoader:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"instantid_file": (folder_paths.get_filename_list("instantid"),)}}

    RETURN_TYPES = ("INSTANTID",)
    FUNCTION = "load_model"
    CATEGORY = "InstantID"

    def load_model(self, instantid_file):
        # Really read the file, so a missing or corrupt model fails as it would upstream.
        path = folder_paths.get_full_path_or_raise("instantid", instantid_file)
        return (comfy.utils.load_torch_file(path, safe_load=True),)


class InstantIDFaceAnalysis:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"provider": (["CPU", "CUDA", "ROCM", "CoreML"],)}}

    RETURN_TYPES = ("FACEANALYSIS",)
    FUNCTION = "load_insight_face"
    CATEGORY = "InstantID"

    def load_insight_face(self, provider):
        return ({"provider": provider},)


class ApplyInstantID:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "instantid": ("INSTANTID",),
                "insightface": ("FACEANALYSIS",),
                "control_net": ("CONTROL_NET",),
                "image": ("IMAGE",),
                "model": ("MODEL",),
                "positive": ("CONDITIONING",),
                "negative": ("CONDITIONING",),
                "weight": ("FLOAT", {"default": 0.8, "min": 0.0, "max": 5.0, "step": 0.01}),
                "start_at": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001}),
                "end_at": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001}),
            },
            "optional": {
                "image_kps": ("IMAGE",),
                "mask": ("MASK",),
            },
        }

    RETURN_TYPES = ("MODEL", "CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("MODEL", "positive", "negative")
    FUNCTION = "apply_instantid"
    CATEGORY = "InstantID"

    def apply_instantid(self, instantid, insightface, control_net, image, model, positive, negative,
                        weight, start_at, end_at, image_kps=None, mask=None):
        # Upstream fails on a reference without a face; the nearest offline check is an image.
        if image.ndim != 4 or image.shape[0] < 1:
            raise ValueError("Reference Image: No face detected.")
        return (model, positive, negative)


NODE_CLASS_MAPPINGS = {
    "InstantIDModelLoader": InstantIDModelLoader,
    "InstantIDFaceAnalysis": InstantIDFaceAnalysis,
    "ApplyInstantID": ApplyInstantID,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "InstantIDModelLoader": "Load InstantID Model",
    "InstantIDFaceAnalysis": "InstantID Face Analysis",
    "ApplyInstantID": "Apply InstantID",
}
