"""The site file as bytes: UTF-8 only, no binary files, a size limit, and one clean message each.

Every refusal is a :class:`SiteConfigError` naming the file, the line and the byte offset of the
first bad byte; ``laterne validate`` prints it without a traceback and exits 2.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from laterne.models import site as site_module
from laterne.models.site import MAX_SITE_FILE_BYTES, SiteConfigError, load_site, parse_site

from ..conftest import DEMO

TEXT = DEMO.read_text(encoding="utf-8")
STREET = "Bahnhofstraße"


def line_of(text: str, needle: str) -> int:
    return text[: text.index(needle)].count("\n") + 1


def latin1_demo() -> tuple[bytes, int, int]:
    """The demo file with one street name saved as Latin-1 (ß is the byte 0xDF), the line of
    that name and the offset of its ß."""
    raw = TEXT.encode("utf-8")
    at = raw.index(STREET.encode("utf-8"))
    broken = raw[:at] + STREET.encode("latin-1") + raw[at + len(STREET.encode("utf-8")) :]
    return broken, line_of(TEXT, STREET), at + STREET.index("ß")


def only_issue(path: Path) -> str:
    """The one line of the error ``load_site`` raises for ``path``."""
    with pytest.raises(SiteConfigError) as info:
        load_site(path)
    assert len(info.value.issues) == 1, info.value
    header, line = str(info.value).split("\n")
    assert header == "invalid site configuration"
    return line


def test_latin1_byte_names_line_and_offset(tmp_path: Path) -> None:
    raw, line, offset = latin1_demo()
    path = tmp_path / "site.yaml"
    path.write_bytes(raw)
    assert only_issue(path) == (
        f"{path}:{line}: (top level): byte 0xdf at offset {offset} is not UTF-8; "
        "save the file as UTF-8"
    )


def test_latin1_with_windows_line_ends(tmp_path: Path) -> None:
    raw, line, offset = latin1_demo()
    crlf = raw.replace(b"\n", b"\r\n")
    path = tmp_path / "site.yaml"
    path.write_bytes(crlf)
    assert only_issue(path) == (
        f"{path}:{line}: (top level): byte 0xdf at offset {offset + line - 1} is not UTF-8; "
        "save the file as UTF-8"
    )


def test_utf8_with_bom_and_windows_line_ends_loads(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + TEXT.replace("\n", "\r\n").encode("utf-8"))
    site = load_site(path)
    assert site.segments[0].name == STREET


def test_binary_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00" + bytes(range(256)))
    assert only_issue(path) == (
        f"{path}:3: (top level): byte 0x00 (NUL) at offset 8: this looks like a binary file "
        "(or UTF-16), not text; a site file is YAML saved as UTF-8"
    )


def test_utf16_file_is_refused_as_not_utf8_text(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_bytes(TEXT.encode("utf-16"))
    assert "byte 0x00 (NUL) at offset 3:" in only_issue(path)


def test_nul_byte_in_a_text_file_names_its_line(tmp_path: Path) -> None:
    broken = TEXT.replace("luminaires: 24", "luminaires: 2\x004", 1)
    path = tmp_path / "site.yaml"
    path.write_bytes(broken.encode("utf-8"))
    offset = broken.encode("utf-8").index(b"\x00")
    line = line_of(broken, "luminaires: 2\x004")
    assert only_issue(path).startswith(
        f"{path}:{line}: (top level): byte 0x00 (NUL) at offset {offset}: "
    )


@pytest.mark.parametrize(("char", "name"), [("\x1b", "U+001B (ESC)"), ("\x7f", "U+007F")])
def test_control_character_yaml_refuses_is_one_clean_message(
    tmp_path: Path, char: str, name: str
) -> None:
    broken = TEXT.replace("name: Elberfelder Straße", f"name: Elberfelder{char}Straße", 1)
    path = tmp_path / "site.yaml"
    path.write_bytes(broken.encode("utf-8"))
    offset = broken.encode("utf-8").index(char.encode())
    line = line_of(broken, "Elberfelder" + char)
    assert only_issue(path) == (
        f"{path}:{line}: (top level): character {name} at "
        f"offset {offset}: YAML does not allow control characters; remove it"
    )


def test_control_character_in_text_given_directly() -> None:
    with pytest.raises(SiteConfigError) as info:
        parse_site("site:\n  name: a\x07b\n", "x.yaml")
    [issue] = info.value.issues
    assert (issue.line, issue.message) == (
        2,
        "character U+0007 (BEL) at offset 15: YAML does not allow control characters; remove it",
    )


def test_file_above_the_limit_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as f:  # sparse: nothing is written, and reading it would find NULs
        f.truncate(MAX_SITE_FILE_BYTES + 1)
    assert MAX_SITE_FILE_BYTES == 20_000_000
    assert only_issue(path) == (
        f"{path}:?: (top level): the file is 20.0 MB; a site file may be at most 20 MB "
        "(MAX_SITE_FILE_BYTES)"
    )


def test_stream_without_a_size_is_cut_at_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(site_module, "MAX_SITE_FILE_BYTES", 1000)
    fifo = tmp_path / "site.fifo"
    os.mkfifo(fifo)

    def feed() -> None:
        with fifo.open("wb") as f:
            try:
                f.write(b"# comment\n" * 500)
            except BrokenPipeError:
                pass

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        line = only_issue(fifo)
    finally:
        writer.join(timeout=10)
    assert line.endswith(
        "the file is larger; a site file may be at most 0.001 MB (MAX_SITE_FILE_BYTES)"
    )


def test_directory_is_a_config_error(tmp_path: Path) -> None:
    assert "cannot read file" in only_issue(tmp_path)


def test_laterne_validate_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    raw, line, offset = latin1_demo()
    path = tmp_path / "site.yaml"
    path.write_bytes(raw)
    laterne = Path(sys.executable).with_name("laterne")
    done = subprocess.run(
        [str(laterne), "validate", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "invalid site configuration",
        f"{path}:{line}: (top level): byte 0xdf at offset {offset} is not UTF-8; "
        "save the file as UTF-8",
    ]
