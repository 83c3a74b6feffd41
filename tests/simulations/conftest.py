"""Shared fixtures for the simulation tests: the demo site and its layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from laterne.models.layout import SiteLayout
from laterne.models.site import SiteConfig, load_site

DEMO = Path(__file__).resolve().parents[2] / "site-configs" / "demo.yaml"


@pytest.fixture(scope="session")
def demo_site() -> SiteConfig:
    return load_site(DEMO)


@pytest.fixture(scope="session")
def demo_layout(demo_site: SiteConfig) -> SiteLayout:
    return SiteLayout.from_config(demo_site)
