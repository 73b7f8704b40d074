"""Every module of the built add-on imports under each Python Splunk ships (3.9, 3.13),
run as splunkd runs a script: ``python -S`` from ``bin/``, with only the app's ``lib/``.

A module that uses syntax or a library the Python lacks (``match``, ``X | Y`` at run
time, a module removed in 3.13, a library missing from ``lib/``) fails here, each module in
a fresh interpreter so that no import hides another's missing one.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from harness import modinput, pythons


def module_names(bin_dir) -> list[str]:
    names = []
    for path in sorted((bin_dir / "mailsec").rglob("*.py")):
        parts = list(path.relative_to(bin_dir).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


def test_module_walk_finds_the_packages_and_their_modules(built_app):
    names = module_names(built_app / "bin")
    assert {"mailsec", "mailsec.core", "mailsec.adapters", "mailsec.rm.pkcs12"} <= set(names)
    assert len(names) == len(list((built_app / "bin" / "mailsec").rglob("*.py")))


@pytest.mark.parametrize("version", pythons.SPLUNK_PYTHONS)
def test_every_module_imports_cleanly_from_the_built_app(
    built_app, splunk_home, tmp_path_factory, version
):
    python = pythons.require(version)
    # compiled once, outside the app (its tree stays as built): 118 fresh interpreters
    # would otherwise each compile solnlib and splunklib again
    pycache = tmp_path_factory.mktemp(f"pycache{version}")
    env = modinput.script_env(
        splunk_home, {"PYTHONDONTWRITEBYTECODE": None, "PYTHONPYCACHEPREFIX": str(pycache)}
    )

    def import_one(name: str):
        done = pythons.run_in_app(
            python,
            built_app,
            f"import importlib, sys\nimportlib.import_module({name!r})\n"
            f"assert '%d.%d' % sys.version_info[:2] == {version!r}",
            env=env,
        )
        return name, done.returncode, done.stderr

    names = module_names(built_app / "bin")
    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(import_one, names))
    failed = {name: stderr.strip()[-600:] for name, rc, stderr in outcomes if rc != 0}
    assert not failed, f"under Python {version}: {failed}"
    # a clean import writes nothing to stderr (no warning splunkd.log would collect)
    noisy = {name: stderr.strip()[-600:] for name, rc, stderr in outcomes if stderr}
    assert not noisy, f"under Python {version}: {noisy}"
