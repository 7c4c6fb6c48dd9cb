"""Writes tests/fixtures/text/sd2-tokenizer-json/: the tiny-sd2 CLIP tokenizer
as transformers 5 saves it (save_pretrained writes tokenizer.json and
tokenizer_config.json only, no vocab.json or merges.txt). The golden test
checks that soupd reads it and tokenizes every case exactly as the sd2
reference ids. Needs tests/golden/requirements.txt; CI never runs it.

    python3 tests/golden/gen_tokenizer_json.py
"""
import pathlib
import shutil

from transformers import CLIPTokenizer

ROOT = pathlib.Path(__file__).resolve().parents[2]
SRC = ROOT / "tests/fixtures/tiny-sd2/tokenizer"
OUT = ROOT / "tests/fixtures/text/sd2-tokenizer-json"

if __name__ == "__main__":
    shutil.rmtree(OUT, ignore_errors=True)
    CLIPTokenizer.from_pretrained(str(SRC)).save_pretrained(str(OUT))
    print(sorted(p.name for p in OUT.iterdir()))
