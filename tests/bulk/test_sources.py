"""What `fhirserver import` reads (fhirserver/bulk/sources.py): the files named, with
directories expanded in a repeatable order, and NDJSON cut at line ends into chunks that
together cover every byte of the file exactly once, each knowing the line it starts on
(so that a problem can be reported as "file line N")."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest

from fhirserver.bulk import sources
from fhirserver.bulk.sources import Chunk, chunks, input_files


def lines_of(path: Path, chunk: Chunk) -> list[bytes]:
    """The chunk's lines, without their line ends."""
    data = path.read_bytes()[chunk.start : chunk.end]
    return data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n")


def test_directories_expand_to_bundle_and_ndjson_files_sorted(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    for name in [
        "b.json",
        "a.ndjson",
        "c.jsonl",
        "sub/d.json",
        "notes.txt",
        "bundle.json.bak",
        "README.md",
        "e.xml",
    ]:
        (data / name).write_text("{}\n")
    single = tmp_path / "single.txt"
    single.write_text("{}\n")

    found = input_files([str(data), str(single)])

    assert found == [
        data / "a.ndjson",
        data / "b.json",
        data / "c.jsonl",
        data / "sub" / "d.json",
        # A file named explicitly is taken whatever its name.
        single,
    ]
    # The same call again gives the same order: an import is repeatable.
    assert input_files([str(data), str(single)]) == found


def test_missing_path_is_file_not_found(tmp_path: Path) -> None:
    present = tmp_path / "present.ndjson"
    present.write_text("{}\n")
    missing = tmp_path / "nowhere.ndjson"
    with pytest.raises(FileNotFoundError, match=r"nowhere\.ndjson"):
        input_files([str(present), str(missing)])


def write_lines(path: Path, count: int, trailing_newline: bool) -> list[bytes]:
    # Lines of different lengths, so that a byte limit falls mid-line.
    lines = [
        b'{"resourceType": "Patient", "id": "p%d"%s}' % (i, b" " * (i % 7)) for i in range(count)
    ]
    path.write_bytes(b"\n".join(lines) + (b"\n" if trailing_newline else b""))
    return lines


def assert_covers(path: Path, found: list[Chunk], lines: list[bytes]) -> None:
    """The chunks tile the file: contiguous, from byte 0 to its size, each starting on
    a line start with the right line number, and together holding every line once."""
    assert found, "no chunks"
    assert found[0].start == 0
    assert found[-1].end == path.stat().st_size
    for before, after in pairwise(found):
        assert before.end == after.start
    data = path.read_bytes()
    seen: list[bytes] = []
    for chunk in found:
        assert chunk.kind == "ndjson" and chunk.path == str(path)
        assert chunk.size > 0
        assert chunk.start == 0 or data[chunk.start - 1 : chunk.start] == b"\n"
        assert chunk.first_line == len(seen) + 1
        seen.extend(lines_of(path, chunk))
    assert seen == lines


@pytest.mark.parametrize("trailing_newline", [True, False], ids=["newline", "no-newline"])
def test_ndjson_cut_by_line_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trailing_newline: bool
) -> None:
    monkeypatch.setattr(sources, "CHUNK_LINES", 3)
    path = tmp_path / "patients.ndjson"
    lines = write_lines(path, 10, trailing_newline)

    found = list(chunks(path))

    assert [chunk.first_line for chunk in found] == [1, 4, 7, 10]
    assert [len(lines_of(path, chunk)) for chunk in found] == [3, 3, 3, 1]
    assert_covers(path, found, lines)


@pytest.mark.parametrize("trailing_newline", [True, False], ids=["newline", "no-newline"])
def test_ndjson_cut_by_bytes_at_line_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trailing_newline: bool
) -> None:
    monkeypatch.setattr(sources, "CHUNK_BYTES", 100)
    path = tmp_path / "patients.jsonl"
    lines = write_lines(path, 25, trailing_newline)

    found = list(chunks(path))

    assert len(found) > 3
    # A chunk closes at the first line end at or past the limit, never mid-line.
    for chunk in found[:-1]:
        assert chunk.size >= 100
        assert chunk.size - len(lines_of(path, chunk)[-1]) - 1 < 100
    assert_covers(path, found, lines)


def test_ndjson_cut_across_read_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Lines that straddle the reader's blocks must still be cut at their line ends.
    monkeypatch.setattr(sources, "_BLOCK", 16)
    monkeypatch.setattr(sources, "CHUNK_LINES", 4)
    path = tmp_path / "patients.ndjson"
    lines = write_lines(path, 13, trailing_newline=False)

    found = list(chunks(path))

    assert [chunk.first_line for chunk in found] == [1, 5, 9, 13]
    assert_covers(path, found, lines)


def test_small_ndjson_is_one_chunk(tmp_path: Path) -> None:
    path = tmp_path / "few.ndjson"
    lines = write_lines(path, 5, trailing_newline=True)
    found = list(chunks(path))
    assert found == [Chunk(str(path), "ndjson", 0, path.stat().st_size, 1)]
    assert_covers(path, found, lines)


def test_bundle_file_is_one_chunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # However small the limits: a transaction must be seen whole.
    monkeypatch.setattr(sources, "CHUNK_LINES", 1)
    monkeypatch.setattr(sources, "CHUNK_BYTES", 1)
    path = tmp_path / "bundle.json"
    path.write_text('{\n"resourceType": "Bundle",\n"type": "transaction",\n"entry": []\n}\n')
    assert list(chunks(path)) == [Chunk(str(path), "bundle", 0, path.stat().st_size)]
