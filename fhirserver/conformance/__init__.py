"""Where the conformance folders (capability/, searchparams/, extensions/) are found.

In a wheel they are shipped inside this package (pyproject's force-include); in a
source checkout (editable install) they are the folders at the repository's top.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

_PACKAGED = Path(__file__).parent
_CHECKOUT = Path(__file__).resolve().parents[2]


def data_dir(name: str) -> Path:
    packaged = _PACKAGED / name
    return packaged if packaged.is_dir() else _CHECKOUT / name


def load_resources(name: str) -> Iterator[dict[str, Any]]:
    """Every resource in a conformance folder's JSON files, Bundles unpacked."""
    for path in sorted(data_dir(name).glob("*.json")):
        document = orjson.loads(path.read_bytes())
        if document.get("resourceType") == "Bundle":
            yield from (entry["resource"] for entry in document.get("entry", ()))
        else:
            yield document
