"""The clients people already use, unchanged, against the running daemon:
openai-python (Images API) and webuiapi (AUTOMATIC1111 API), from PyPI.
shared/reference/client-compat.md has the formats."""
import base64
import io
import json

import pytest

import openai  # installed by deploy/install.sh --test
import webuiapi
from PIL import Image

from test_generate import png_texts  # noqa: E402


def test_openai_client_gets_images(admin):
    client = openai.OpenAI(api_key=admin.token, base_url=admin.d.url + "/v1", max_retries=0)
    res = client.images.generate(prompt="a lighthouse", n=2, size="64x64",
                                 response_format="b64_json")
    assert res.created > 0 and len(res.data) == 2
    imgs = [base64.b64decode(d.b64_json) for d in res.data]
    assert imgs[0] != imgs[1]
    for raw in imgs:
        im = Image.open(io.BytesIO(raw))
        assert im.format == "PNG" and im.size == (64, 64)
    # also served without the /v1 prefix, as some clients join base URLs that way
    bare = openai.OpenAI(api_key=admin.token, base_url=admin.d.url, max_retries=0)
    assert len(bare.images.generate(prompt="x", size="64x64",
                                    response_format="b64_json").data) == 1


def test_openai_client_sees_errors(admin):
    client = openai.OpenAI(api_key=admin.token, base_url=admin.d.url + "/v1", max_retries=0)
    with pytest.raises(openai.UnprocessableEntityError):
        client.images.generate(prompt="x", size="65x64", response_format="b64_json")
    bad = openai.OpenAI(api_key="nope", base_url=admin.d.url + "/v1", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.images.generate(prompt="x", size="64x64")


def test_webuiapi_client_gets_images(admin):
    api = webuiapi.WebUIApi(host="127.0.0.1", port=admin.d.port)
    api.set_auth("soupd", admin.token)  # HTTP Basic: the password is the token
    res = api.txt2img(prompt="a lighthouse", negative_prompt="fog", steps=3, width=64, height=64,
                      seed=7, cfg_scale=5.0)
    assert res.image.size == (64, 64)
    assert res.info["all_seeds"] == [7] and res.info["seed"] == 7
    assert res.parameters["prompt"] == "a lighthouse"
    again = api.txt2img(prompt="a lighthouse", negative_prompt="fog", steps=3, width=64,
                        height=64, seed=7, cfg_scale=5.0)
    assert again.image.tobytes() == res.image.tobytes()


def test_a1111_png_infotext_parses_like_a1111(admin):
    r = admin.post("/sdapi/v1/txt2img", json={"prompt": "a, b: c", "steps": 3, "width": 64,
                                               "height": 64, "seed": 9, "cfg_scale": 7,
                                               "sampler_name": "Euler"})
    assert r.status_code == 200, r.text
    body = r.json()
    text = png_texts(base64.b64decode(body["images"][0]))["parameters"]
    lines = text.split("\n")
    assert lines[0] == "a, b: c"
    params = lines[-1]
    assert params.startswith("Steps: 3, Sampler: Euler, CFG scale: 7.0, Seed: 9, Size: 64x64")
    info = json.loads(body["info"])
    assert info["sd_model_hash"] and info["soup_hash"] == admin.soup()["hash"]


def test_a1111_unknown_sampler_is_422(admin):
    r = admin.post("/sdapi/v1/txt2img", json={"prompt": "x", "sampler_name": "LMS Karras"})
    assert r.status_code == 422
    assert admin.get("/sdapi/v1/sd-models").json()[0]["sha256"]
