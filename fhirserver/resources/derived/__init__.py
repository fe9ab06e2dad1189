"""Tables derived from the official R4 definitions by scripts/derive_*.py, shipped here.

The server never reads the definitions themselves (../shared is not there at run time);
the scripts write these gzipped JSON files, which are committed, and a test checks they
are what the scripts make today.
"""

from __future__ import annotations

import gzip
from functools import cache
from pathlib import Path
from typing import Any

import orjson

DERIVED = Path(__file__).parent


@cache
def load(name: str) -> Any:
    """One derived table (for example `valuesets.json.gz`), read once."""
    return orjson.loads(gzip.decompress((DERIVED / name).read_bytes()))
