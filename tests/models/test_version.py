"""models/version.py: the installed distribution's version, or the documented fallback."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import metadata

import pytest
from packaging.version import Version

from laterne.models import version as version_module
from laterne.models.version import UNKNOWN_VERSION, version


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    version.cache_clear()
    yield
    version.cache_clear()


def test_the_installed_version_is_the_package_metadata() -> None:
    assert version() == metadata.version("laterne")


def test_not_installed_answers_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(version_module.metadata, "version", missing)
    assert version() == UNKNOWN_VERSION


def test_the_fallback_is_a_pep_440_version_below_every_release() -> None:
    assert Version(UNKNOWN_VERSION) < Version("0.0.1")
    assert Version(UNKNOWN_VERSION).local == "unknown"
