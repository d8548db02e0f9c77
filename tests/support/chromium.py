"""Debian's Chromium for browser tests, started as this machine allows: headless, no sandbox (root), and none
of the background fetches this closed network refuses (`/work/.library` env notes)."""

from __future__ import annotations

from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    """The executable (scripts/system-deps installs it): an AssertionError says how when it is missing."""
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install -y chromium"
    return CHROMIUM
