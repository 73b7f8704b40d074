"""The Pythons Splunk runs add-on scripts with, found on this machine.

Splunk Enterprise 9.x runs scripts with Python 3.9; 10.x with 3.9 or 3.13 (``python.required``).
They are looked up in pyenv's versions (``$PYENV_ROOT``, else ``~/.pyenv``), then as
``python3.9`` / ``python3.13`` on ``PATH``. ``.ci/run`` installs the missing ones
(docs/development.md). As a command, prints the interpreter of one version, or says how
to get it and exits 1::

    python tests/harness/pythons.py 3.13

``run_in_app`` runs a snippet the way an entry script of the built add-on runs: ``python -S``
from its ``bin`` directory, after ``import import_declare_test`` (which puts ``lib/`` on the
path), so that only the app's own libraries and the standard library are importable.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional, Union

SPLUNK_PYTHONS = ("3.9", "3.13")


def _pyenv_candidates(version: str) -> list[Path]:
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    versions = root / "versions"
    if not versions.is_dir():
        return []
    pattern = re.compile(re.escape(version) + r"\.\d+\Z")
    found = [p for p in versions.iterdir() if pattern.match(p.name)]
    # the newest patch release first
    found.sort(key=lambda p: int(p.name.rsplit(".", 1)[1]), reverse=True)
    return [p / "bin" / f"python{version}" for p in found]


def _reports(python: str, version: str) -> bool:
    """The interpreter runs and is the version it claims (a broken link is skipped)."""
    try:
        done = subprocess.run(
            [python, "-S", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except OSError:
        return False
    return done.returncode == 0 and done.stdout.strip() == version


def find(version: str) -> Optional[str]:
    """The path of a working Python ``version`` (e.g. ``"3.9"``), or None."""
    candidates = [str(p) for p in _pyenv_candidates(version) if p.is_file()]
    on_path = shutil.which(f"python{version}")
    if on_path:
        candidates.append(on_path)
    for python in candidates:
        if _reports(python, version):
            return python
    return None


def require(version: str) -> str:
    """Like ``find``, but a missing Python is an error that says how to get it."""
    python = find(version)
    if python is None:
        raise LookupError(
            f"Python {version} not found (looked in pyenv's versions and for python{version} "
            "on PATH): the end-to-end tests run the add-on under every Python Splunk ships. "
            "Run .ci/run, or `pyenv install " + version + "` (docs/development.md)."
        )
    return python


def run_in_app(
    python: str,
    app: Union[str, Path],
    code: str,
    *,
    env: Optional[dict] = None,
    stdin: str = "",
    timeout: float = 60,
) -> subprocess.CompletedProcess:
    """Run ``code`` with ``python -S`` in ``<app>/bin`` after ``import import_declare_test``.
    ``env``: the script's environment (``modinput.script_env``); text in and out."""
    return subprocess.run(
        [python, "-S", "-c", "import import_declare_test\n" + code],
        cwd=Path(app) / "bin",
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


if __name__ == "__main__":
    try:
        print(require(sys.argv[1]))
    except LookupError as exc:
        sys.exit(str(exc))
