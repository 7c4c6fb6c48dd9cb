"""Golden fixtures for the CLIP tokenizer and the CLIP text encoder.

Writes tests/fixtures/text/:
  tokenizer_cases.json   {"folders": {name: tokenizer dir relative to fixtures},
                          "cases": [{"text": str, "ids": {name: [77 ints]}}]}
      ids as diffusers' pipeline tokenizes (transformers 5.24 CLIPTokenizer,
      padding="max_length", max_length=77, truncation=True) for the tiny SD1
      and SD2 folders and for two folders whose special-token files are
      written like the Hub's SD1.5 / SD2.1 ones (objects, normalized=true);
      those hold symlinks to the tiny folders' vocab.json and merges.txt.
  text_encoder_sd1.safetensors, text_encoder_sd2.safetensors
      ids [B,77] I32, last_hidden_state [B,77,D] F32 and clip_skip1 [B,77,D]
      F32 (hidden_states[-2] then final_layer_norm, as the pipeline does for
      clip_skip=1), from CLIPTextModel in fp32 on the CPU with the F16 weights
      of tiny-sd{1,2}/text_encoder widened to fp32.

Depends on tiny-sd1/ and tiny-sd2/ (gen_models.py). Deterministic.
"""
import json
import os
import pathlib
import random

HUB_SPECIAL = {"content": None, "lstrip": False, "normalized": True, "rstrip": False,
               "single_word": False}

HAND = [
    "", " ", "   ", "\t\n", "a", "A", "a photo of a cat", "A Photo Of A CAT",
    "an astronaut riding a horse on mars, highly detailed, 8k, trending on artstation",
    "  leading and trailing spaces  ", "multiple     spaces\tand\ttabs\nand\nnewlines\r\nok",
    "don't stop, it's what we've done; I'm sure they'll say he'd go, you're right",
    "DON'T IT'S WE'VE I'M THEY'LL HE'D YOU'RE", "o'clock 'tis rock'n'roll '''quoted'''",
    "\u2019s curly apostrophe\u2019s", "hello!!! what??? ...", "! !! !!!", "hi!there", "?!?",
    "wow!", "!start", "end!", "a!b!c", "1234567890", "3.14159 and 2,718 and 1e-5",
    "$100 or \u20ac50 or \u00a330", "100% of 50% = 25%", "12:30pm 2024-01-01",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber stra\u00dfe", "cafe\u0301 (decomposed)",
    "A\u030a vs \u00c5 vs \u212b", "\u1e9b\u0323 and \u0071\u0307\u0323", "\uac00\ud7a3 \u1100\u1161\u11a8",
    "\u4e00\u53ea\u732b\u5728\u6708\u4eae\u4e0a", "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8 \u30ab\u30bf\u30ab\u30ca",
    "\ud55c\uad6d\uc5b4 \ubb38\uc7a5", "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
    "\u05e9\u05dc\u05d5\u05dd", "\u041f\u0440\u0438\u0432\u0435\u0442 \u041c\u0418\u0420", "\u0395\u039b\u039b\u0397\u039d\u0399\u039a\u0391 \u03a3\u039f\u03a6\u0399\u0391\u03a3",
    "\u0130stanbul \u0131\u015f\u0131k", "\u00c6sir \u0152uvre \u00df\u1e9e", "\u0915\u094d\u0937 \u0939\u093f\u0928\u094d\u0926\u0940 \u0967\u0968\u0969",
    "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35", "emoji \U0001f600\U0001f431\U0001f680 fire\U0001f525",
    "\U0001f468\u200d\U0001f469\u200d\U0001f467 family \U0001f44d\U0001f3fd", "flag \U0001f1ef\U0001f1f5",
    "&amp; &lt;tag&gt; &quot;x&quot; &#39; &nbsp;", "<b>bold</b> <i>it</i>",
    "<|startoftext|>", "<|endoftext|>", "<|startoftext|>a cat<|endoftext|>",
    "<|STARTOFTEXT|>x<|EndOfText|>", "<|endoftext|>'s", "x<|startoftext|>y", "<| startoftext |>",
    "<|startoftext|", "|endoftext|>", "<<|endoftext|>>", "!<|endoftext|>!",
    "non\u00a0breaking\u2003em\u3000ideographic\u2028line\u0085nel", "zero\u200bwidth\u200cjoiner\ufeffbom",
    "control\x01\x07\x1b chars\x7f", "file\x1cseparators\x1d\x1e\x1f", "\ufffd replacement",
    "\u2460\u2461 \u00bd \u00b2\u00b3 \u0660\u0661 \u2167", "\uff21\uff22\uff23 fullwidth \uff11\uff12",
    "ligature \ufb01\ufb02 \u2126", "math \U0001d400\U0001d401 \u2200x\u2208\u211d",
    "a_b-c+d=e*f/g\\h|i~j`k^l", "[brackets] {braces} (parens)", "#hashtag @mention",
    "https://example.com/path?q=1&r=2", "email@example.com", "C++ C# F# .NET",
    "(masterpiece:1.2), [[best quality]], {{ultra detailed}}, <lora:foo:0.8>",
    "UPPER lower MiXeD cAsE", "snake_case camelCase PascalCase kebab-case",
    "tokenization tokenizer tokens untokenizable antidisestablishmentarianism",
    "supercalifragilisticexpialidocious" * 3, "a" * 200, "ab" * 100, "!" * 100, "1" * 100,
    "\u00e9" * 60, "\U0001f600" * 40, "nul\x00inside", "\x00", "a\x00's\x00!",
]


def unicode_strings(rng, n):
    """Random code points weighted towards what NFC, case and the classes touch:
    combining marks (canonical reordering, blocking), characters with
    canonical decompositions (given NFC, NFD or NFKD), whitespace, specials."""
    import unicodedata
    assigned = [c for c in range(1, 0x30000) if not 0xD800 <= c <= 0xDFFF
                and unicodedata.category(chr(c)) != "Cn"]
    marks = [c for c in assigned if unicodedata.combining(chr(c))]
    decomp = [c for c in assigned if unicodedata.decomposition(chr(c))
              and not unicodedata.decomposition(chr(c)).startswith("<")]
    cased = [c for c in assigned if chr(c).lower() != chr(c)]
    spaces = [0x20, 0x9, 0xA, 0xA0, 0x3000, 0x2028, 0x1C, 0x85, 0x200B, 0x1680]
    ascii_ = list(range(0x20, 0x7F))
    out = []
    for _ in range(n):
        s = []
        for _ in range(rng.randint(1, 30)):
            r = rng.random()
            pool = (ascii_ if r < .25 else marks if r < .45 else decomp if r < .6
                    else cased if r < .7 else spaces if r < .8 else assigned)
            s.append(chr(rng.choice(pool)))
        if rng.random() < .2:
            s.insert(rng.randint(0, len(s)), rng.choice(
                ["<|endoftext|>", "<|startoftext|>", "'s", "'ll", "\u0130", "!"]))
        t = "".join(s)
        if rng.random() < .3:
            t = unicodedata.normalize(rng.choice(["NFD", "NFKD", "NFC"]), t)
        out.append(t)
    return out


def random_strings(rng, n):
    pools = [
        "abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789", " \t\n  ",
        ".,;:!?'\"()[]{}<>-_=+*/\\|&^%$#@~`", "\u00e9\u00e8\u00ea\u00eb\u00e0\u00e2\u00e4\u00f4\u00f6\u00fb\u00fc\u00e7\u00f1\u0301\u0308",
        "\u4e00\u4e8c\u4e09\u732b\u72d7\u5c71\u6c34", "\u3042\u3044\u3046\u30a2\u30a4", "\u0410\u0411\u0412\u0430\u0431\u0432\u03a3\u03c3\u03c2",
        "\U0001f600\U0001f431\U0001f525\u2764\ufe0f", "\u00a0\u2003\u3000\u200b",
    ]
    words = ["photo", "cat", "dog", "painting", "portrait", "landscape", "of", "a", "the",
             "detailed", "4k", "'s", "n't", "<|endoftext|>", "<|startoftext|>", "!", "&amp;"]
    out = []
    for i in range(n):
        parts = []
        for _ in range(rng.randint(1, 40)):
            if rng.random() < 0.5:
                parts.append(rng.choice(words))
            else:
                pool = rng.choice(pools)
                parts.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 8))))
            parts.append(rng.choice([" ", " ", " ", "", "  ", ", ", "\n"]))
        out.append("".join(parts))
    return out


def long_prompts(rng, n):
    words = ("masterpiece best quality ultra detailed photorealistic portrait of a young woman "
             "standing in a field of sunflowers at golden hour cinematic lighting bokeh 85mm "
             "lens sharp focus intricate details octane render unreal engine").split()
    return [", ".join(" ".join(rng.choice(words) for _ in range(rng.randint(1, 4)))
                      for _ in range(rng.randint(20, 60))) for _ in range(n)]


def make_hub_folder(fixtures, name, src, pad):
    """A tokenizer folder with Hub-style special-token files and symlinked vocab/merges."""
    d = fixtures / "text" / name / "tokenizer"
    d.mkdir(parents=True, exist_ok=True)
    for f in ("vocab.json", "merges.txt"):
        link = d / f
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(os.path.relpath(fixtures / src / "tokenizer" / f, d), link)

    def tok(c):
        return dict(HUB_SPECIAL, content=c)

    stm = {"bos_token": tok("<|startoftext|>"), "eos_token": tok("<|endoftext|>"),
           "pad_token": pad, "unk_token": tok("<|endoftext|>")}
    cfg = {"add_prefix_space": False, "do_lower_case": True, "errors": "replace",
           "model_max_length": 77, "pad_token": "<|endoftext|>",
           "tokenizer_class": "CLIPTokenizer"}
    for k in ("bos_token", "eos_token", "unk_token"):
        cfg[k] = dict(__type="AddedToken", **stm[k])
    (d / "special_tokens_map.json").write_text(json.dumps(stm, indent=2) + "\n")
    (d / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return d


def gen_tokenizer(fixtures, out):
    from transformers import CLIPTokenizer

    rng = random.Random(1234)
    texts = HAND + random_strings(rng, 260) + long_prompts(rng, 20) + unicode_strings(rng, 200)
    folders = {
        "sd1": fixtures / "tiny-sd1" / "tokenizer",
        "sd2": fixtures / "tiny-sd2" / "tokenizer",
        "sd1_hub": make_hub_folder(fixtures, "sd1-hub", "tiny-sd1", "<|endoftext|>"),
        "sd2_hub": make_hub_folder(fixtures, "sd2-hub", "tiny-sd2", "!"),
    }
    toks = {k: CLIPTokenizer.from_pretrained(str(v)) for k, v in folders.items()}
    cases = []
    for t in texts:
        ids = {k: tok(t, padding="max_length", max_length=tok.model_max_length,
                      truncation=True).input_ids for k, tok in toks.items()}
        for v in ids.values():
            assert len(v) == 77
        cases.append({"text": t, "ids": ids})
    doc = {"folders": {k: str(v.relative_to(fixtures)) for k, v in folders.items()},
           "cases": cases}
    (out / "tokenizer_cases.json").write_text(json.dumps(doc, ensure_ascii=False) + "\n")
    print(f"  {len(cases)} tokenizer cases x {len(folders)} folders")


TE_PROMPTS = [
    "a photo of a cat",
    "",
    "an astronaut riding a horse on mars, highly detailed, 8k, trending on artstation",
    ", ".join(["masterpiece, best quality, ultra detailed portrait of a young woman"] * 8),
]


def gen_text_encoder(fixtures, out):
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    for name in ("sd1", "sd2"):
        root = fixtures / f"tiny-{name}"
        tok = CLIPTokenizer.from_pretrained(str(root / "tokenizer"))
        model = CLIPTextModel.from_pretrained(str(root / "text_encoder"), dtype=torch.float32)
        model.eval()
        ids = tok(TE_PROMPTS, padding="max_length", max_length=77, truncation=True,
                  return_tensors="pt").input_ids
        with torch.no_grad():
            last = model(ids, attention_mask=None)[0]
            o = model(ids, attention_mask=None, output_hidden_states=True)
            hs = o[-1]
            assert len(hs) == model.config.num_hidden_layers + 1
            # transformers 5.24's CLIPTextModel has no .text_model (the
            # pipeline's clip_skip line names text_model.final_layer_norm).
            fln = getattr(model, "text_model", model).final_layer_norm
            skip1 = fln(hs[-(1 + 1)])
            assert torch.equal(fln(hs[-1]), last)
        save_file({"ids": ids.to(torch.int32).contiguous(),
                   "last_hidden_state": last.float().contiguous(),
                   "clip_skip1": skip1.float().contiguous()},
                  str(out / f"text_encoder_{name}.safetensors"),
                  metadata={"prompts": json.dumps(TE_PROMPTS)})
        print(f"  text encoder {name}: {tuple(last.shape)}")


def main(fixtures_dir):
    fixtures = pathlib.Path(fixtures_dir)
    out = fixtures / "text"
    out.mkdir(parents=True, exist_ok=True)
    gen_tokenizer(fixtures, out)
    gen_text_encoder(fixtures, out)


if __name__ == "__main__":
    main(pathlib.Path(__file__).resolve().parent.parent / "fixtures")
