"""The wheel is self-contained (DESIGN.md "Layout"): a non-editable install finds the
conformance folders, the R4 schema, the derived terminology tables and the join page's
message files inside the package, not in a source checkout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import fhirserver, json
from fhirserver.conformance import data_dir
from fhirserver.clock import system_clock
from fhirserver.interactions.capabilities import capability_statement
from fhirserver.search.params import registry
from fhirserver.resources.bindings import check_bindings
from fhirserver.rest.telehealth import _page
print(json.dumps({
    "package": fhirserver.__file__,
    "searchparams": str(data_dir("searchparams")),
    "types": len(capability_statement("http://x", system_clock())["rest"][0]["resource"]),
    "identifier": registry().get("Patient", "identifier") is not None,
    "bindings": [i.expression for i in check_bindings("Patient", {"gender": "dragon"})],
    "join page": "Sala de espera" in _page() and "{{MESSAGES}}" not in _page(),
}))
"""


def build_wheel(source: Path, wheel_dir: Path) -> Path:
    """The project's wheel, built from `source` without fetching anything."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(wheel_dir),
            str(source),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = wheel_dir.glob("fhirserver-*.whl")
    return wheel


def test_installed_wheel_carries_its_data(tmp_path: Path) -> None:
    wheel = build_wheel(ROOT, tmp_path)
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
    )
    found = json.loads(result.stdout)
    assert found["package"].startswith(str(site))
    assert found["searchparams"].startswith(str(site))
    assert found["types"] == 146
    assert found["identifier"] is True
    # The derived terminology tables ship in the package (resources/derived/).
    assert found["bindings"] == ["Patient.gender"]
    # The join page with its message files (rest/join.html, rest/join_messages/).
    assert found["join page"] is True
