"""A few calls of soupd's HTTP API, as the demo's evaluation and tests use
them (requests, numpy and Pillow only)."""
import base64
import io
import pathlib

import numpy as np
import requests
from PIL import Image

STEPS, GUIDANCE = 20, 5.0


class Soupd:
    def __init__(self, url, token):
        self.url, self.h = url.rstrip("/"), {"Authorization": f"Bearer {token}"}

    def _ok(self, r, status=(200,)):
        if r.status_code not in status:
            raise RuntimeError(f"{r.request.method} {r.url}: {r.status_code} {r.text[:500]}")
        return r.json()

    def register(self, path, name):
        """Uploads a shard file; returns the shard id."""
        r = requests.post(self.url + "/shards", params={"name": name},
                          data=pathlib.Path(path).read_bytes(),
                          headers={**self.h, "Content-Type": "application/octet-stream"},
                          timeout=300)
        return self._ok(r, (201,))["shard"]["id"]

    def withdraw(self, shard_id, reason="demo"):
        r = requests.post(f"{self.url}/shards/{shard_id}/withdraw", json={"reason": reason},
                          headers=self.h, timeout=300)
        return self._ok(r)

    def reweight(self, shard_id, weight):
        r = requests.patch(f"{self.url}/shards/{shard_id}", json={"weight": weight},
                           headers=self.h, timeout=300)
        return self._ok(r)

    def soup(self):
        return self._ok(requests.get(self.url + "/soup", headers=self.h, timeout=60))

    def generate(self, prompt, seed, n=1, steps=STEPS, guidance=GUIDANCE):
        """n images (uint8 [64, 64, 3]) for seeds seed .. seed+n-1 and the soup that drew them."""
        r = requests.post(self.url + "/generate", headers=self.h, timeout=600,
                          json={"prompt": prompt, "seed": seed, "n": n, "steps": steps,
                                "guidance_scale": guidance})
        j = self._ok(r)
        imgs = [np.asarray(Image.open(io.BytesIO(base64.b64decode(i["png_base64"]))).convert("RGB"))
                for i in j["images"]]
        return imgs, j["soup"]
