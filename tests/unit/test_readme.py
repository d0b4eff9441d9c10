"""The README's example runs as written, so the docs cannot rot."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_readme_example_runs(tmp_path: Path) -> None:
    text = (REPO / "README.md").read_text()
    section = text.split("### Example", 1)[1]
    script = re.search(r"```sh\n(.*?)```", section, re.S)
    assert script is not None
    body = script.group(1).replace("/tmp/cb", str(tmp_path / "cb"))
    body = body.replace("covenant-broker ", f"{sys.executable} -m broker.cli ")
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", body], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "1 accepted, 0 quarantined" in done.stdout
    assert '"recipient": "boa-hor-noord"' in done.stdout
    assert '"postcode4": "1181"' in done.stdout
    assert "J. Jansen" not in done.stdout  # the boa's view carries no victim
    assert "intact" in done.stdout
