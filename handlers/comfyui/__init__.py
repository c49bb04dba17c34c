"""ComfyUI: workflows from task files, validated offline, run over HTTP/WebSocket."""
