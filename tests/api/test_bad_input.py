"""Malformed uploads (tests/corpus/uploads and generated ones): a 4xx with a located error, nothing kept."""

from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.models import Dataset
from tests.conftest import stored_blobs, upload

CORPUS = Path(__file__).resolve().parent.parent / "corpus" / "uploads"
OK = b'{"prompt": "What is two plus two?", "completion": "Four."}\n'

# file -> (HTTP status, error code, line of the first error)
EXPECTED: dict[str, tuple[int, str, int | None]] = {
    "truncated.jsonl": (422, "invalid_json", 2),
    "truncated_array.json": (422, "invalid_json", 2),
    "invalid_utf8.jsonl": (422, "invalid_utf8", 2),
    "bom_then_error.jsonl": (422, "missing_field", 2),
    "bom_mid_file.jsonl": (422, "invalid_json", 2),
    "crlf_error.jsonl": (422, "invalid_json", 3),
    "nul_in_string.jsonl": (422, "invalid_json", 2),
    "nul_bytes.bin": (422, "unsupported_format", 1),
    "nul_line.jsonl": (422, "invalid_json", 2),
    "csv_nul.csv": (422, "nul_character", 3),
    "wrong_types.jsonl": (422, "invalid_type", 1),
    "wrong_types_messages.jsonl": (422, "invalid_type", 1),
    "wrong_types_content.jsonl": (422, "invalid_type", 1),
    "wrong_types_record.json": (422, "unsupported_format", 1),
    "null_record.jsonl": (422, "invalid_type", 2),
    "huge_float.jsonl": (422, "invalid_type", 2),
    "huge_int.jsonl": (422, "invalid_json", 2),
    "empty.jsonl": (422, "empty_file", None),  # no line to name: the file has no bytes
    "whitespace_only.jsonl": (422, "empty_file", 1),
    "binary.bin": (422, "unsupported_format", 1),
    "png_header.jsonl": (422, "unsupported_format", 1),
    "utf16.jsonl": (422, "unsupported_format", 1),
    "trailing_garbage.json": (422, "invalid_json", 1),
    "not_an_array.json": (422, "unsupported_format", 1),
    "mixed_formats.jsonl": (422, "missing_field", 2),
    "unknown_role.jsonl": (422, "unrecognized_role", 1),
    "no_assistant.jsonl": (422, "no_assistant_message", 1),
    "csv_bad_quotes.csv": (422, "invalid_csv", 3),
    "csv_ragged.csv": (422, "invalid_csv", 3),
    "csv_header_only.csv": (422, "empty_file", 1),
    "unknown_fields.jsonl": (422, "unsupported_format", 1),
}


def _gzip_bomb() -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9) as g:
        for _ in range(200):
            g.write(b"\0" * (1 << 20))
    return buf.getvalue()


def _gzip_lines_bomb() -> bytes:
    """Valid JSONL lines that inflate past the upload limit: every decompressed byte counts toward it."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9) as g:
        for _ in range(200):
            g.write(OK * (1 << 14))
    return buf.getvalue()


def _zip_bomb() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("data.jsonl", "w") as f:
        for _ in range(200):
            f.write(OK * (1 << 14))
    return buf.getvalue()


GENERATED = {
    "long_line.jsonl": (
        lambda: OK + b'{"prompt": "' + b"a" * (10 << 20) + b'", "completion": "b"}\n',
        (422, "line_too_long", 2),
    ),
    "long_line.json": (
        lambda: b'[{"prompt": "' + b"a" * (10 << 20) + b'", "completion": "b"}]',
        (422, "line_too_long", 1),
    ),
    "long_cell.csv": (
        lambda: b"prompt,completion\n" + b"a" * (10 << 20) + b",b\n",
        (422, "line_too_long", 2),
    ),
    "deep.jsonl": (
        lambda: OK + b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b', "completion": "x"}\n',
        (422, "invalid_json", 2),
    ),
    "deep_object.jsonl": (
        lambda: (
            b'{"prompt": "a", "completion": "b", "x": ' + b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"}\n"
        ),
        (422, "invalid_json", 1),
    ),
    "deep.json": (
        lambda: b'[{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b', "completion": "x"}]',
        (422, "invalid_json", 1),
    ),
    "bomb.jsonl.gz": (_gzip_bomb, (422, "unsupported_format", 1)),  # NULs inside: not a text container
    "bomb.zip": (_zip_bomb, (422, "unsupported_format", 1)),
}


def test_the_corpus_is_complete() -> None:
    assert {p.name for p in CORPUS.iterdir() if p.name != "README.md"} == set(EXPECTED)


def _assert_refused_and_nothing_kept(client, settings, name: str, data: bytes, want) -> None:
    status, code, line = want
    r = upload(client, name, content=data)
    assert r.status_code == status, (name, r.status_code, r.text[:300])
    err = r.json()["error"]
    assert err["code"] == code, (name, err)
    assert err["param"] == "file"
    first = err["details"]["errors"][0]
    assert first["code"] == code and first["line"] == line, (name, first)
    assert err["details"]["error_count"] >= 1
    with client.app.state.ftguard.services.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Dataset)) == 0
    kept = stored_blobs(settings)
    assert kept == [], (name, kept)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_malformed_upload_is_a_located_4xx_and_leaves_nothing(client, settings, name: str) -> None:
    _assert_refused_and_nothing_kept(client, settings, name, (CORPUS / name).read_bytes(), EXPECTED[name])


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_big_and_pathological_uploads_are_refused_from_the_stream(client, settings, name: str) -> None:
    make, want = GENERATED[name]
    _assert_refused_and_nothing_kept(client, settings, name, make(), want)


def test_a_gzip_bomb_of_valid_lines_stops_at_the_upload_limit(client, settings) -> None:
    """Every decompressed byte counts toward max_upload_bytes: 200 MiB of valid lines from ~0.5 MB of
    gzip stop at a 1 MiB limit with 413 file_too_large, and nothing is kept."""
    client.app.state.ftguard.services.settings.max_upload_bytes = 1 << 20
    data = _gzip_lines_bomb()
    assert len(data) < 1 << 20
    _assert_refused_and_nothing_kept(client, settings, "bomb.jsonl.gz", data, (413, "file_too_large", None))


@pytest.mark.parametrize(
    "filename",
    [
        "../../../../etc/passwd",
        "..\\..\\windows\\system32\\config",
        "/etc/shadow",
        "C:\\evil.jsonl",
        "a/../../b.jsonl",
        "name\x00.jsonl",
        "\u202egnp.jsonl",
        "x" * 1000 + ".jsonl",
        "",
        ".",
        "..",
    ],
)
def test_path_tricks_in_the_file_name_stay_a_plain_name(client, settings, filename: str) -> None:
    bad = upload(client, "x", name=filename, content=b'{"prompt": 1}\n')
    assert bad.status_code == 422
    good = upload(client, "x", name=filename, content=OK)
    assert good.status_code == 201, good.text
    stored = good.json()["filename"]
    assert "/" not in stored and "\\" not in stored and stored not in ("", ".", "..")
    assert len(stored) <= 200 and "\x00" not in stored
    # the only files written are the content-addressed blob, under the blob dir
    assert [k.split("/")[0] for k in stored_blobs(settings)] == ["datasets"]
