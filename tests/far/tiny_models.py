"""Tiny random-weight models, named like RALPH-001's, for the test ComfyUI server.

No package ships usable weights and nothing can be downloaded, so the files are built at
test time with ComfyUI's own venv (ralph's venv has no torch):

- ``models/checkpoints/bigLove_xl1.safetensors``: an SD1.5-shaped checkpoint that ComfyUI
  detects as SD15 (model_channels=320, context_dim=768, no label_emb) but one level deep with
  no middle block; a full random CLIP-L text encoder (ComfyUI's SD1 CLIP is fixed at 12
  layers, and leaving it out gives black images or "clip input is invalid"); TAESD
  decoder/encoder keys so ComfyUI picks the tiny VAE. fp16 safetensors, ~290 MB.
- ``models/loras/elena_v4_cloud.safetensors``: a rank-4 LoRA on one attention projection.
- ``models/controlnet/instantid_controlnet.safetensors``: a tiny SD1.5 ControlNet (ldm
  layout), loaded for real by ControlNetLoader.
- ``models/instantid/ip-adapter.bin``: a small torch-pickled tensor dict for the stand-in
  InstantIDModelLoader.
- ``input/elena_face_ref.jpg``: a drawn face-like reference image.

Built once per cache directory (a marker holds ``VERSION``). Run by ralph's tests via
:func:`ensure_models`; the ``__main__`` part runs inside ComfyUI's venv.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

VERSION = "tiny-models-v1"
MARKER = ".ralph-tiny-models"

CHECKPOINT = "bigLove_xl1.safetensors"
LORA = "elena_v4_cloud.safetensors"
CONTROLNET = "instantid_controlnet.safetensors"
INSTANTID = "ip-adapter.bin"
FACE_REF = "elena_face_ref.jpg"

# Relative paths under the models root; the ComfyUI base directory mirrors this layout.
FILES = {
    CHECKPOINT: Path("models/checkpoints") / CHECKPOINT,
    LORA: Path("models/loras") / LORA,
    CONTROLNET: Path("models/controlnet") / CONTROLNET,
    INSTANTID: Path("models/instantid") / INSTANTID,
    FACE_REF: Path("input") / FACE_REF,
}


def comfyui_home() -> Path:
    """Where install_comfyui.sh puts ComfyUI unless told otherwise."""
    env = os.environ.get("RALPH_COMFYUI_HOME")
    return Path(env) if env else Path.home() / ".cache" / "ralph-test-comfyui"


def ensure_models(home: Path | None = None, dest: Path | None = None) -> Path:
    """Build the tiny models into ``dest`` (default ``home/tiny-models``) unless already
    built there, and return ``dest``. ``home`` is an install of install_comfyui.sh."""
    home = home or comfyui_home()
    dest = dest or home / "tiny-models"
    marker = dest / MARKER
    if marker.is_file() and marker.read_text() == VERSION and all((dest / p).is_file() for p in FILES.values()):
        return dest
    python = home / "venv" / "bin" / "python"
    comfyui = home / "ComfyUI"
    if not python.is_file() or not (comfyui / "main.py").is_file():
        raise FileNotFoundError(f"no ComfyUI install in {home} (run tests/far/install_comfyui.sh)")
    dest.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [str(python), str(Path(__file__).resolve()), "--comfyui", str(comfyui), "--dest", str(dest)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"building tiny models failed ({done.returncode}):\n{done.stderr[-4000:]}")
    marker.write_text(VERSION)
    return dest


# ---------------------------------------------------------------------------------------
# Everything below runs inside ComfyUI's venv (torch, safetensors, transformers, PIL).


def _init_random(module, torch) -> None:
    """ComfyUI's layers skip weight initialisation (they expect a checkpoint), so their
    parameters start as uninitialised memory: give each a small, finite random value."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim == 0:  # plain scalars (TAESD's scale/shift) are initialised already
                continue
            if name.endswith("bias"):
                p.zero_()
            elif p.ndim == 1:  # norm scales
                p.fill_(1.0)
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in**0.5)


def _fp16(sd: dict, prefix: str, torch) -> dict:
    return {prefix + k: v.detach().to(torch.float16).contiguous() for k, v in sd.items()}


def _unet_kwargs(ops) -> dict:
    # The keys ComfyUI's SD15 detection reads, with the depth cut to one level.
    return dict(
        image_size=32, in_channels=4, model_channels=320, num_res_blocks=[1], channel_mult=[1],
        use_spatial_transformer=True, transformer_depth=[1], context_dim=768, num_heads=8,
        num_head_channels=-1, use_linear_in_transformer=False, adm_in_channels=None, legacy=False,
        operations=ops,
    )


def _build(comfyui: Path, dest: Path) -> None:
    sys.path.insert(0, str(comfyui))
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # before model_management is imported: no GPU here
    import comfy.ops
    import torch
    from comfy.cldm.cldm import ControlNet
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    from comfy.taesd.taesd import TAESD
    from PIL import Image, ImageDraw
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    ops = comfy.ops.disable_weight_init
    for rel in FILES.values():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)

    unet = UNetModel(out_channels=4, transformer_depth_output=[1, 1], transformer_depth_middle=-2, **_unet_kwargs(ops))
    _init_random(unet, torch)
    clip_cfg = CLIPTextConfig(
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
        num_attention_heads=12, max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu",
    )
    clip = CLIPTextModel(clip_cfg)  # transformers initialises its own weights
    taesd = TAESD(latent_channels=4)
    _init_random(taesd, torch)
    ckpt = {}
    ckpt.update(_fp16(unet.state_dict(), "model.diffusion_model.", torch))
    ckpt.update(_fp16(clip.state_dict(), "cond_stage_model.transformer.", torch))
    ckpt.update(_fp16(taesd.state_dict(), "first_stage_model.", torch))
    save_file(ckpt, str(dest / FILES[CHECKPOINT]))

    # Kohya-style names for input_blocks.1.1.transformer_blocks.0.attn1.to_q (320x320).
    lora_key = "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q"
    rank = 4
    lora = {
        f"{lora_key}.lora_down.weight": torch.randn(rank, 320) * 0.01,
        f"{lora_key}.lora_up.weight": torch.randn(320, rank) * 0.01,
        f"{lora_key}.alpha": torch.tensor(float(rank)),
    }
    save_file(_fp16(lora, "", torch), str(dest / FILES[LORA]))

    control = ControlNet(hint_channels=3, transformer_depth_middle=1, **_unet_kwargs(ops))
    _init_random(control, torch)
    save_file(_fp16(control.state_dict(), "control_model.", torch), str(dest / FILES[CONTROLNET]))

    torch.save(
        {"image_proj": {"proj.weight": torch.randn(16, 16)}, "ip_adapter": {"1.to_k_ip.weight": torch.randn(16, 16)}},
        dest / FILES[INSTANTID],
    )

    img = Image.new("RGB", (256, 256), (205, 190, 170))
    draw = ImageDraw.Draw(img)
    draw.ellipse((68, 40, 188, 210), fill=(224, 182, 150))
    draw.ellipse((98, 100, 118, 112), fill=(80, 60, 40))
    draw.ellipse((138, 100, 158, 112), fill=(80, 60, 40))
    draw.line((128, 115, 122, 145), fill=(170, 120, 100), width=3)
    draw.arc((103, 150, 153, 180), 20, 160, fill=(150, 70, 70), width=4)
    img.save(dest / FILES[FACE_REF], quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui", type=Path, required=True, help="ComfyUI source directory")
    parser.add_argument("--dest", type=Path, required=True, help="models root to write")
    args = parser.parse_args()
    _build(args.comfyui, args.dest)


if __name__ == "__main__":
    main()
