"""Test-only nodes for the far side of ralph's ComfyUI client tests."""

import os

# A server on a GPU box holds millions of Python objects (torch, models), so the gc.collect()
# ComfyUI runs after a prompt stalls it for 0.25-0.35 s. bench/comfy_overhead.py sets this to
# give the CPU test server a heap that size; the tests leave it unset.
_BALLAST = [[i] for i in range(int(os.environ.get("RALPH_TEST_GC_BALLAST", "0")))]


class RalphReportOutput:
    """Reports an output file under a name the test chooses, as a hostile or broken
    server might, without writing anything: the client must refuse names that would
    escape its download folder before it asks /view for them."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE",),
                "filename": ("STRING", {"default": "../escape.png"}),
                "subfolder": ("STRING", {"default": ""}),
            }
        }

    RETURN_TYPES = ()
    FUNCTION = "report"
    OUTPUT_NODE = True
    CATEGORY = "ralph/test"

    def report(self, images, filename, subfolder):
        return {"ui": {"images": [{"filename": filename, "subfolder": subfolder, "type": "output"}]}}


class RalphSleep:
    """Holds the queue for a given time, passing its image through, so a test can act
    (drop the socket, kill the server, interrupt) while a prompt is surely running."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",), "seconds": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 600.0})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "sleep"
    CATEGORY = "ralph/test"

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        # NaN never equals itself: ComfyUI re-runs the node every time instead of caching it.
        return float("nan")

    def sleep(self, images, seconds):
        import time

        import comfy.model_management

        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            # Lets /interrupt stop it, as it stops real sampling between steps.
            comfy.model_management.throw_exception_if_processing_interrupted()
            time.sleep(0.05)
        return (images,)


class RalphFail:
    """Raises the given message while running, as a node that fails on the pod would."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",), "message": ("STRING", {"default": "failed"})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "fail"
    CATEGORY = "ralph/test"

    def fail(self, images, message):
        raise RuntimeError(message)


NODE_CLASS_MAPPINGS = {"RalphReportOutput": RalphReportOutput, "RalphSleep": RalphSleep, "RalphFail": RalphFail}
