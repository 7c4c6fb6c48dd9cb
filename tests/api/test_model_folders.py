"""Model folders as current diffusers saves them (issue 11, first part):
Python's non-standard JSON numbers in a config. Real daemon, real folder."""
import io
import json
import shutil

import numpy as np
from PIL import Image

from conftest import MODEL, Client, Daemon, st_bytes, st_read

BODY = {"prompt": "a red circle", "seed": 7, "steps": 4, "width": 64, "height": 64}


def png_from(tmp_path, name, model):
    d = Daemon(tmp_path / name, extra=["--model", str(model)]).start()
    try:
        c = Client(d, d.admin_token())
        r = c.post("/generate", json=BODY, headers={"Accept": "image/png"})
        assert r.status_code == 200, r.text
        # pixels: the PNG's text names the model folder, which differs here
        return np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))
    finally:
        d.stop()


def test_scheduler_config_with_python_nonfinite_numbers(tmp_path):
    """diffusers writes `"lambda_min_clipped": -Infinity` (and Python writes
    NaN and Infinity bare): the folder loads, and the image is the same as
    the one from the folder without them."""
    folder = tmp_path / "model"
    shutil.copytree(MODEL, folder)
    cfg_path = folder / "scheduler" / "scheduler_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update({"lambda_min_clipped": float("-inf"), "some_nan": float("nan"),
                "some_inf": float("inf"), "note": "NaN and Infinity stay text here"})
    text = json.dumps(cfg, indent=2)  # Python's own writer: bare -Infinity, NaN, Infinity
    assert "-Infinity" in text and "NaN," in text
    cfg_path.write_text(text)
    odd, plain = png_from(tmp_path, "odd", folder), png_from(tmp_path, "plain", MODEL)
    assert odd.shape == plain.shape and (odd == plain).all()


def test_tokenizer_saved_as_tokenizer_json_alone(tmp_path):
    """transformers 5 saves the CLIP tokenizer as tokenizer.json (plus
    tokenizer_config.json) only: the daemon serves such a folder, with the
    same image as the original folder."""
    folder = tmp_path / "model"
    shutil.copytree(MODEL, folder)
    shutil.rmtree(folder / "tokenizer")
    shutil.copytree(MODEL.parent / "text" / "sd2-tokenizer-json", folder / "tokenizer")
    assert not (folder / "tokenizer" / "vocab.json").exists()
    odd, plain = png_from(tmp_path, "tj", folder), png_from(tmp_path, "plain", MODEL)
    assert odd.shape == plain.shape and (odd == plain).all()


def tokenizer_both_forms(tmp_path, edit=None):
    """MODEL with tokenizer.json (from transformers 5) beside its vocab.json
    and merges.txt; edit(tokenizer_json_dict) may change the JSON form."""
    folder = tmp_path / "model"
    shutil.copytree(MODEL, folder)
    tj = json.loads((MODEL.parent / "text" / "sd2-tokenizer-json" / "tokenizer.json").read_text())
    if edit:
        edit(tj)
    (folder / "tokenizer" / "tokenizer.json").write_text(json.dumps(tj))
    return folder


def test_tokenizer_in_both_forms_that_agree(tmp_path):
    """vocab.json + merges.txt and tokenizer.json together, saying the same
    thing: the folder serves the same image as the original."""
    folder = tokenizer_both_forms(tmp_path)
    both, plain = png_from(tmp_path, "both", folder), png_from(tmp_path, "plain", MODEL)
    assert both.shape == plain.shape and (both == plain).all()


def start_refused(tmp_path, name, folder):
    d = Daemon(tmp_path / name, extra=["--model", str(folder)])
    try:
        d.start()
    except RuntimeError as e:
        return str(e)
    try:
        c = Client(d, d.admin_token())
        r = c.post("/generate", json=BODY)
        assert r.status_code == 503, r.text
        return r.text + d.logs()
    finally:
        d.stop()


def test_tokenizer_forms_that_disagree_are_refused(tmp_path):
    """A token with another id, a merge dropped: the model is refused and
    the message names both files and the first difference."""
    def swap_ids(tj):
        v = tj["model"]["vocab"]
        v["a</w>"], v["b</w>"] = v["b</w>"], v["a</w>"]

    def drop_merge(tj):
        tj["model"]["merges"].pop(5)

    for name, edit, want in (("ids", swap_ids, 'token "'), ("merges", drop_merge, "merges against")):
        msg = start_refused(tmp_path, name, tokenizer_both_forms(tmp_path / name, edit))
        assert "vocab.json/merges.txt and tokenizer.json disagree" in msg and want in msg, msg


def test_folder_with_only_pickled_weights_is_refused(tmp_path):
    """A component that holds only pickled .bin weights is refused at start
    (never unpickled), and the message names the file and how to convert."""
    for part, st_name, bin_name in (
            ("unet", "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
            ("vae", "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
            ("text_encoder", "model.safetensors", "pytorch_model.bin")):
        folder = tmp_path / part / "model"
        shutil.copytree(MODEL, folder)
        (folder / part / st_name).unlink()
        # a pickle whose loading would run code: it must never be opened as one
        (folder / part / bin_name).write_bytes(b"\x80\x04cos\nsystem\n(S'touch PWNED'\ntR.")
        msg = start_refused(tmp_path / part, "d", folder)
        assert f"{part}/{bin_name} holds pickled PyTorch weights" in msg, msg
        assert "safe_serialization=True" in msg
        assert not (tmp_path / "PWNED").exists()


def shard_weights(folder, part, stem, n=2, edit=None):
    """Replaces <part>/<stem>.safetensors by n part files and the index
    transformers and diffusers write; edit(weight_map) may spoil the index."""
    src = folder / part / f"{stem}.safetensors"
    tensors, _ = st_read(src)
    names = sorted(tensors)
    weight_map = {}
    for i in range(n):
        fname = f"{stem}-{i + 1:05d}-of-{n:05d}.safetensors"
        mine = {k: tensors[k] for k in names[i::n]}
        (folder / part / fname).write_bytes(st_bytes(mine))
        weight_map.update({k: fname for k in mine})
    if edit:
        edit(weight_map)
    index = {"metadata": {"total_size": sum(t.nbytes for t in tensors.values())},
             "weight_map": weight_map}
    (folder / part / f"{stem}.safetensors.index.json").write_text(json.dumps(index))
    src.unlink()


def test_sharded_text_encoder_and_vae_weights(tmp_path):
    """text_encoder/model.safetensors.index.json and
    vae/diffusion_pytorch_model.safetensors.index.json with their parts: the
    folder serves the same image as the unsharded one."""
    folder = tmp_path / "model"
    shutil.copytree(MODEL, folder)
    shard_weights(folder, "text_encoder", "model", n=3)
    shard_weights(folder, "vae", "diffusion_pytorch_model")
    sharded, plain = png_from(tmp_path, "sharded", folder), png_from(tmp_path, "plain", MODEL)
    assert sharded.shape == plain.shape and (sharded == plain).all()


def test_bad_shard_indexes_and_a_sharded_unet_are_refused(tmp_path):
    def outside(m):
        m[next(iter(m))] = "../model.safetensors"

    def missing(m):
        m["text_model.not_there.weight"] = next(iter(m.values()))

    def unlisted(m):
        del m[next(iter(m))]

    cases = (("outside", outside, "not a .safetensors file name in the index's folder"),
             ("missing", missing, "is listed in the index but missing"),
             ("unlisted", unlisted, "which the index does not list"))
    for name, edit, want in cases:
        folder = tmp_path / name / "model"
        shutil.copytree(MODEL, folder)
        shard_weights(folder, "text_encoder", "model", edit=edit)
        msg = start_refused(tmp_path / name, "d", folder)
        assert want in msg, (name, msg)
    folder = tmp_path / "unet" / "model"
    shutil.copytree(MODEL, folder)
    shard_weights(folder, "unet", "diffusion_pytorch_model")
    msg = start_refused(tmp_path / "unet", "d", folder)
    assert "sharded UNet weights are not supported yet" in msg, msg


def test_weights_variant(tmp_path):
    """--variant fp16 reads unet/, vae/ and text_encoder/ weights from
    *.fp16.safetensors (diffusers' variant=), ignoring the plain files; a
    component without its variant file, or a variant that is not a file-name
    word, is refused naming it."""
    folder = tmp_path / "model"
    shutil.copytree(MODEL, folder)
    for part, stem in (("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"),
                       ("text_encoder", "model")):
        plain = folder / part / f"{stem}.safetensors"
        plain.rename(folder / part / f"{stem}.fp16.safetensors")
        plain.write_bytes(b"not safetensors: must not be read with --variant fp16")
    d = Daemon(tmp_path / "v", extra=["--model", str(folder), "--variant", "fp16"]).start()
    try:
        c = Client(d, d.admin_token())
        r = c.post("/generate", json=BODY, headers={"Accept": "image/png"})
        assert r.status_code == 200, r.text
        got = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))
    finally:
        d.stop()
    want = png_from(tmp_path, "plain", MODEL)
    assert got.shape == want.shape and (got == want).all()
    (folder / "vae" / "diffusion_pytorch_model.fp16.safetensors").unlink()
    for name, variant, want in (
            ("m", "fp16", "vae/diffusion_pytorch_model.fp16.safetensors: missing (--variant fp16)"),
            ("b", "../x", "is not a file-name word")):
        d = Daemon(tmp_path / name, extra=["--model", str(folder), "--variant", variant])
        try:
            d.start()
            raise AssertionError(f"started with --variant {variant}")
        except RuntimeError as e:
            assert want in str(e), str(e)
