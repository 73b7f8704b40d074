"""Compiled libraries are vendored per platform and Python version, and the loader
puts the folder matching the running Python on sys.path (a build for one Python
version does not load in another)."""

from __future__ import annotations

import sys

import pytest

SPLUNK_PYTHONS = [(3, 9), (3, 13)]  # Splunk 9.x runs 3.9; Splunk 10.x 3.9 or 3.13


def cffi_backend_tag(folder) -> str:
    [backend] = [p.name for p in folder.iterdir() if p.name.startswith("_cffi_backend")]
    return backend


@pytest.mark.parametrize(
    ("platform", "suffix"),
    [("linux_x86_64", "x86_64-linux-gnu.so"), ("windows_amd64", "win_amd64.pyd")],
)
@pytest.mark.parametrize("version", SPLUNK_PYTHONS)
def test_every_splunk_python_finds_cryptography_and_a_matching_cffi(
    built_app, platform, suffix, version
):
    base = built_app / "lib" / "3rdparty"
    major, minor = version
    folders = [base / f"{platform}_py{major}{minor}"]
    if version >= (3, 11):
        folders.append(base / f"{platform}_py311plus")
    assert any((folder / "cryptography").is_dir() for folder in folders)
    backend = cffi_backend_tag(folders[0])
    assert f"{major}{minor}" in backend and backend.endswith(suffix)


def test_no_compiled_library_at_the_top_of_lib(built_app):
    top = {p.name for p in (built_app / "lib").iterdir()}
    assert not {"cryptography", "cffi"} & top
    assert not [name for name in top if name.endswith((".so", ".pyd"))]


@pytest.mark.parametrize(
    ("version", "expected_first"),
    [
        ((3, 9, 19), ["linux_x86_64_py39"]),
        ((3, 13, 1), ["linux_x86_64_py313", "linux_x86_64_py311plus"]),
    ],
)
def test_loader_picks_the_folders_of_the_running_python(
    built_app, monkeypatch, version, expected_first
):
    import mailsec

    package_dir = built_app / "bin" / "mailsec"
    monkeypatch.setattr(mailsec, "__file__", str(package_dir / "__init__.py"))
    monkeypatch.setattr(sys, "version_info", version)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(sys, "path", [])
    mailsec._add_compiled_libraries()
    assert [p.rsplit("/", 1)[-1] for p in sys.path] == expected_first
