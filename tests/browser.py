"""Headless Chromium for the report tests: where it is, and one way to run it on a page."""

import os
import shutil
import subprocess

CHROMIUM = (
    shutil.which("chromium")
    or shutil.which("chromium-browser")
    or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
)
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def headless(tmp_path, page, *args):
    """Run Chromium on ``page`` (a path) with a fresh profile under ``tmp_path``, bounded in time."""
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args, f"file://{page}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
