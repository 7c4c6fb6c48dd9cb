#!/usr/bin/env python3
"""Regenerates every golden fixture under tests/fixtures/ (DESIGN.md section 4).

    pip install -r tests/golden/requirements.txt
    python3 tests/golden/make_goldens.py            # all generators
    python3 tests/golden/make_goldens.py unet       # only gen_unet.py

Each tests/golden/gen_<name>.py module defines main(fixtures_dir: pathlib.Path)
and must be deterministic (fixed seeds, CPU, fp32). CI never runs this: the
fixtures are committed.
"""
import importlib
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
FIXTURES = HERE.parent / "fixtures"


def main(argv):
    sys.path.insert(0, str(HERE))
    names = argv[1:] or sorted(p.stem[4:] for p in HERE.glob("gen_*.py"))
    for name in names:
        print(f"== gen_{name}", flush=True)
        importlib.import_module(f"gen_{name}").main(FIXTURES)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
