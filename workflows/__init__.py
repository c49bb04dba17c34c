"""ComfyUI workflow templates (API format), installed as ``ralph.workflows``."""
