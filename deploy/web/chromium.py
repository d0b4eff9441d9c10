"""Make sure Debian's Chromium is installed, for the console's real-browser test.

No browser is downloaded from anywhere but Debian's package archive: Playwright drives the
system binary through `executable_path`. As root this installs `chromium` with apt-get when
it is missing; otherwise it says exactly why it cannot.

    python deploy/web/chromium.py        # prints the binary's path, exit 0; exit 1 + reason
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
ENV_PATH = "CHROMIUM_PATH"  # a browser somewhere else (a developer's machine)


class ChromiumUnavailableError(RuntimeError):
    pass


def find_chromium() -> Path | None:
    configured = os.environ.get(ENV_PATH)
    if configured:
        return Path(configured) if Path(configured).is_file() else None
    for candidate in CANDIDATES:
        if Path(candidate).is_file():
            return Path(candidate)
    found = shutil.which("chromium")
    return Path(found) if found else None


def _apt(*args: str) -> None:
    done = subprocess.run(["apt-get", *args], capture_output=True, text=True, check=False,
                          timeout=900, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise ChromiumUnavailableError(f"apt-get {' '.join(args)} failed:\n{tail}")


def ensure_chromium() -> Path:
    """The Chromium binary, installed from Debian's packages first if needed."""
    found = find_chromium()
    if found is not None:
        return found
    if os.environ.get(ENV_PATH):
        raise ChromiumUnavailableError(f"{ENV_PATH}={os.environ[ENV_PATH]} is not a file")
    if shutil.which("apt-get") is None:
        raise ChromiumUnavailableError("no chromium and no apt-get to install it (not Debian)")
    if os.geteuid() != 0:
        raise ChromiumUnavailableError("no chromium, and installing it needs root "
                                       "(sudo apt-get install chromium)")
    _apt("update", "-qq")
    _apt("install", "-y", "-qq", "chromium")
    found = find_chromium()
    if found is None:
        raise ChromiumUnavailableError("apt-get installed chromium but no binary was found")
    return found


if __name__ == "__main__":
    try:
        print(ensure_chromium())
    except ChromiumUnavailableError as exc:
        print(f"chromium unavailable: {exc}", file=sys.stderr)
        sys.exit(1)
