"""UNet goldens: inputs and diffusers outputs of the two tiny UNets, and the
original-LDM (single-file) naming of their weights.

Writes under tests/fixtures/unet/:
  <model>_<H>x<W>.safetensors   sample [2,4,H,W], timesteps [2] (F32, may be
                                fractional), encoder_hidden_states [2,77,D],
                                out [2,4,H,W] = UNet2DConditionModel(...).sample
  full_configs.json             config.json and parameter table (names, shapes)
                                of the real SD1.5 and SD2.1 UNets (meta device)
  <model>_ldm.safetensors       the UNet of tests/fixtures/<model>/unet under
                                "model.diffusion_model.<LDM name>" keys, F16,
                                plus a few non-UNet keys (VAE, text encoder,
                                EMA) that a key map must ignore.
where <model> is tiny-sd2 / tiny-sd1. Sizes include H, W not divisible by
2^(number of upsamplers), where each upsampler resizes to the skip's size
(diffusers' forward_upsample_size path).

The LDM names are built here from the mapping of
scripts/convert_diffusers_to_original_stable_diffusion.py generalised to any
layers_per_block, and verified by converting them back with diffusers' own
convert_ldm_unet_checkpoint: the result must equal the diffusers state dict
key for key and value for value.

Deterministic: fixed seeds, CPU, fp32. Needs gen_models.py to have run.
"""
import json
import pathlib

import torch
from safetensors.torch import save_file

CASES = {
    # name: (H, W, timesteps)
    "8x8": (8, 8, [999.0, 500.0]),
    "12x10": (12, 10, [1.5, 37.25]),
    "9x11": (9, 11, [0.0, 250.5]),
}
LDM_PREFIX = "model.diffusion_model."


def ldm_names(config: dict) -> dict:
    """diffusers prefix -> LDM prefix (without LDM_PREFIX) for every module."""
    lpb = config["layers_per_block"]
    n = len(config["block_out_channels"])
    m = {
        "time_embedding.linear_1.": "time_embed.0.",
        "time_embedding.linear_2.": "time_embed.2.",
        "conv_in.": "input_blocks.0.0.",
        "conv_norm_out.": "out.0.",
        "conv_out.": "out.2.",
        "mid_block.resnets.0.": "middle_block.0.",
        "mid_block.attentions.0.": "middle_block.1.",
        "mid_block.resnets.1.": "middle_block.2.",
    }
    for i in range(n):
        for j in range(lpb):
            k = 1 + i * (lpb + 1) + j
            m[f"down_blocks.{i}.resnets.{j}."] = f"input_blocks.{k}.0."
            m[f"down_blocks.{i}.attentions.{j}."] = f"input_blocks.{k}.1."
        if i < n - 1:
            m[f"down_blocks.{i}.downsamplers.0.conv."] = f"input_blocks.{(i + 1) * (lpb + 1)}.0.op."
    for i, kind in enumerate(config["up_block_types"]):
        has_attn = kind.startswith("CrossAttn")
        for j in range(lpb + 1):
            k = i * (lpb + 1) + j
            m[f"up_blocks.{i}.resnets.{j}."] = f"output_blocks.{k}.0."
            m[f"up_blocks.{i}.attentions.{j}."] = f"output_blocks.{k}.1."
        if i < n - 1:
            k = i * (lpb + 1) + lpb
            m[f"up_blocks.{i}.upsamplers.0.conv."] = f"output_blocks.{k}.{2 if has_attn else 1}.conv."
    return m


RESNET = {
    "norm1.": "in_layers.0.",
    "conv1.": "in_layers.2.",
    "time_emb_proj.": "emb_layers.1.",
    "norm2.": "out_layers.0.",
    "conv2.": "out_layers.3.",
    "conv_shortcut.": "skip_connection.",
}


def to_ldm(state: dict, config: dict) -> dict:
    prefixes = sorted(ldm_names(config).items(), key=lambda kv: -len(kv[0]))
    out = {}
    for key, value in state.items():
        for dp, lp in prefixes:
            if key.startswith(dp):
                rest = key[len(dp) :]
                if ".resnets." in dp or dp.startswith("mid_block.resnets"):
                    for a, b in RESNET.items():
                        if rest.startswith(a):
                            rest = b + rest[len(a) :]
                            break
                    else:
                        raise KeyError(key)
                out[LDM_PREFIX + lp + rest] = value
                break
        else:
            raise KeyError(f"no LDM name for {key}")
    assert len(out) == len(state)
    return out


def check_ldm(ldm: dict, state: dict, config: dict):
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    back = convert_ldm_unet_checkpoint(dict(ldm), dict(config))
    assert sorted(back) == sorted(state), set(back) ^ set(state)
    for k, v in state.items():
        assert torch.equal(back[k], v), k


def gen_model(fixtures: pathlib.Path, model: str, seed: int):
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(fixtures / model / "unet").eval().float()
    config = json.loads((fixtures / model / "unet" / "config.json").read_text())
    dst = fixtures / "unet"
    dst.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    cross = config["cross_attention_dim"]
    for name, (h, w, ts) in CASES.items():
        sample = torch.randn(2, 4, h, w, generator=g)  # [B, 4, H, W]
        ctx = torch.randn(2, 77, cross, generator=g)  # [B, 77, D]
        t = torch.tensor(ts, dtype=torch.float32)  # [B]
        with torch.no_grad():
            out = unet(sample, t, encoder_hidden_states=ctx).sample  # [B, 4, H, W]
        assert out.shape == sample.shape and torch.isfinite(out).all()
        save_file(
            {"sample": sample, "timesteps": t, "encoder_hidden_states": ctx, "out": out.contiguous()},
            dst / f"{model}_{name}.safetensors",
            # one key only: safetensors writes metadata in hash order
            metadata={"source": f"{model}: diffusers UNet2DConditionModel, fp32, CPU"},
        )
        print(f"  {model} {name}: max|out| {out.abs().max():.4f}")

    state = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    ldm = to_ldm(state, config)
    check_ldm(ldm, state, config)
    ldm = {k: v.to(torch.float16).contiguous() for k, v in ldm.items()}
    # Keys of the other models in a single-file checkpoint: a UNet key map ignores them.
    ldm["first_stage_model.decoder.conv_in.weight"] = torch.zeros(4, 4, 3, 3, dtype=torch.float16)
    ldm["cond_stage_model.transformer.text_model.final_layer_norm.weight"] = torch.ones(
        8, dtype=torch.float16
    )
    ldm["model_ema.decay"] = torch.tensor(0.9999, dtype=torch.float16)
    ldm["model_ema.diffusion_modelout2weight"] = torch.zeros(4, dtype=torch.float16)
    save_file(ldm, dst / f"{model}_ldm.safetensors", metadata={"model": model})


def gen_full_tables(fixtures: pathlib.Path):
    """Config and parameter table (diffusers names and shapes) of the real
    SD1.5 and SD2.1 UNets, built on the meta device (no weights)."""
    from diffusers import UNet2DConditionModel

    full = {}
    configs = {
        "sd15": dict(sample_size=64, cross_attention_dim=768, attention_head_dim=8),
        "sd21": dict(
            sample_size=96,
            cross_attention_dim=1024,
            attention_head_dim=[5, 10, 20, 20],
            use_linear_projection=True,
            upcast_attention=True,
        ),
    }
    for name, kw in configs.items():
        with torch.device("meta"):
            unet = UNet2DConditionModel(**kw)
        full[name] = {
            "config": json.loads(unet.to_json_string()),
            "params": [[k, list(v.shape)] for k, v in unet.state_dict().items()],
        }
    (fixtures / "unet" / "full_configs.json").write_text(json.dumps(full, indent=0) + "\n")


def main(fixtures: pathlib.Path):
    torch.manual_seed(0)
    gen_full_tables(fixtures)
    gen_model(fixtures, "tiny-sd2", seed=31)
    gen_model(fixtures, "tiny-sd1", seed=32)


if __name__ == "__main__":
    main(pathlib.Path(__file__).resolve().parent.parent / "fixtures")
