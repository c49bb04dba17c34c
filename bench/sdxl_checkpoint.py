"""An SDXL-sized checkpoint with random weights, built with ComfyUI's own model classes.

No download: the UNet (2.57 B parameters, SDXL's config), both text encoders (CLIP-L and
bigG, saved the way ComfyUI saves an SDXL checkpoint) and the SD VAE are made with random
weights N(0, 1/fan_in), fp16, under the key prefixes a real SDXL checkpoint has, so ComfyUI
loads it as SDXL (its log says ``model_type EPS`` and ``Requested to load SDXL``) and a
generation costs what a real one does. Runs with ComfyUI's Python (torch, safetensors):

    python bench/sdxl_checkpoint.py --comfyui ComfyUI --out bigLove_xl1.safetensors [--device cuda]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

UNET = dict(  # what ComfyUI's model detection reads from an SDXL base checkpoint
    image_size=32, in_channels=4, out_channels=4, model_channels=320, num_res_blocks=[2, 2, 2],
    channel_mult=[1, 2, 4], transformer_depth=[0, 0, 2, 2, 10, 10], transformer_depth_middle=10,
    transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10], context_dim=2048, num_head_channels=64,
    use_linear_in_transformer=True, use_spatial_transformer=True, legacy=False, num_classes="sequential",
    adm_in_channels=2816, use_temporal_attention=False, use_temporal_resblock=False,
)
VAE = dict(double_z=True, z_channels=4, resolution=256, in_channels=3, out_ch=3, ch=128, ch_mult=[1, 2, 4, 4],
           num_res_blocks=2, attn_resolutions=[], dropout=0.0)


def randomise(module, torch, generator) -> None:
    """ComfyUI's layers skip initialisation (a checkpoint is expected): biases 0, norms 1, weights N(0, 1/fan_in)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif p.ndim <= 1:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 1.0 / p[0].numel() ** 0.5, generator=generator)


def build(comfyui: Path, out: Path, device: str) -> None:
    sys.path.insert(0, str(comfyui))
    import comfy.cli_args

    comfy.cli_args.args.cpu = device == "cpu"  # before model_management looks for a GPU
    import comfy.ops
    import comfy.sdxl_clip
    import comfy.supported_models
    import torch
    from comfy.ldm.models.autoencoder import AutoencoderKL
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    from safetensors.torch import save_file

    ops = comfy.ops.disable_weight_init
    dtype = torch.float16
    generator = torch.Generator(device=device).manual_seed(0)
    weights: dict[str, torch.Tensor] = {}

    def take(module, prefix: str) -> None:
        randomise(module, torch, generator)
        weights.update({prefix + k: v.to(dtype).contiguous().cpu() for k, v in module.state_dict().items()})

    unet = UNetModel(**UNET, dtype=dtype, device=device, operations=ops)
    take(unet, "model.diffusion_model.")
    del unet
    clip = comfy.sdxl_clip.SDXLClipModel(device=device, dtype=dtype)
    randomise(clip, torch, generator)
    clip_weights = {k: v.to(dtype).contiguous() for k, v in clip.state_dict().items()}
    sdxl = comfy.supported_models.SDXL(comfy.supported_models.SDXL.unet_config)
    weights.update({k: v.cpu() for k, v in sdxl.process_clip_state_dict_for_saving(clip_weights).items()})
    del clip, clip_weights
    vae = AutoencoderKL(ddconfig=VAE, embed_dim=4).to(device=device, dtype=torch.float32)
    take(vae, "first_stage_model.")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui", type=Path, required=True, help="ComfyUI's source folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    started = time.monotonic()
    build(args.comfyui.resolve(), args.out, args.device)
    print(f"{args.out}: {args.out.stat().st_size / 1e9:.2f} GB in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
