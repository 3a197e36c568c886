"""docs/configuration.md's table is what `recstream config --markdown` prints: generated, not kept by hand."""

import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).parent.parent / "docs" / "configuration.md"


def test_the_configuration_doc_is_the_generated_table():
    env = {"PATH": "/usr/bin:/bin"}  # no RECSTREAM_* from the caller: the defaults
    result = subprocess.run([sys.executable, "-m", "streams.cli", "config", "--markdown"], capture_output=True,
                            text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    table = result.stdout.strip()
    assert table.startswith("| variable | default | meaning |") and table.count("\n") > 60
    assert table in DOC.read_text(), "regenerate: recstream config --markdown, into docs/configuration.md"
