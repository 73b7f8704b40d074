"""Compiled libraries are vendored per platform and Python version, and the loader
puts the folder matching the running Python on sys.path (a build for one Python
version does not load in another)."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import pytest

from harness import modinput, pythons
from harness.certs import TestCA

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


# ------------------------------------------------------------------ under each Splunk Python

LOAD_PROBE = """
import json, sys
import mailsec  # puts this Python's lib/3rdparty folders on sys.path
import _cffi_backend, cffi, cryptography, pybase64
from cryptography.hazmat.bindings import _rust
from pybase64 import _pybase64
from mailsec.core.mailbox import base64fast
print(json.dumps({
    "python": "%d.%d" % sys.version_info[:2],
    "files": {
        "cffi": cffi.__file__, "_cffi_backend": _cffi_backend.__file__,
        "cryptography": cryptography.__file__, "cryptography._rust": _rust.__file__,
        "pybase64": pybase64.__file__, "pybase64._pybase64": _pybase64.__file__,
    },
    "versions": {"cryptography": cryptography.__version__, "cffi": cffi.__version__,
                 "pybase64": pybase64.__version__},
    "addon_simd": base64fast.SIMD and base64fast._simd_b64decode is _pybase64.b64decode,
    "simd_path": _pybase64._get_simd_name(_pybase64._get_simd_path()),
    "decoded": base64fast.decode_lines(sys.stdin.buffer.read()).decode(),
}))
"""

# Where each library of the running Python comes from (globalConfig.json
# meta.os-dependentLibraries): 3.9 has one folder; 3.13 has its own cffi and pybase64, and
# the abi3 cryptography of 3.11+.
_PY39 = "linux_x86_64_py39"
_PY313 = "linux_x86_64_py313"
_PY311PLUS = "linux_x86_64_py311plus"
EXPECTED_FOLDERS = {
    "3.9": {
        "cffi": _PY39,
        "_cffi_backend": _PY39,
        "cryptography": _PY39,
        "cryptography._rust": _PY39,
        "pybase64": _PY39,
        "pybase64._pybase64": _PY39,
    },
    "3.13": {
        "cffi": _PY313,
        "_cffi_backend": _PY313,
        "cryptography": _PY311PLUS,
        "cryptography._rust": _PY311PLUS,
        "pybase64": _PY313,
        "pybase64._pybase64": _PY313,
    },
}
VENDORED_VERSIONS = {
    "3.9": {"cryptography": "43.0.3", "pybase64": "1.5.1"},
    "3.13": {"cryptography": "46.0.3", "cffi": "2.1.1", "pybase64": "1.5.1"},
}


@pytest.mark.parametrize("version", pythons.SPLUNK_PYTHONS)
def test_compiled_libraries_load_from_the_folder_of_each_splunk_python(
    built_app, splunk_home, version
):
    import pybase64._pybase64 as dev_pybase64

    plain = "An attachment, in base64 lines of 76 characters ending in CRLF. " * 8
    text = base64.encodebytes(plain.encode()).decode().replace("\n", "\r\n")
    done = pythons.run_in_app(
        pythons.require(version),
        built_app,
        LOAD_PROBE,
        env=modinput.script_env(splunk_home),
        stdin=text,
    )
    assert done.returncode == 0 and not done.stderr, done.stderr
    report = json.loads(done.stdout)
    assert report["python"] == version
    third_party = (built_app / "lib" / "3rdparty").resolve()
    folders = {
        name: Path(path).resolve().relative_to(third_party).parts[0]
        for name, path in report["files"].items()
    }
    assert folders == EXPECTED_FOLDERS[version]
    tag = "cpython-" + version.replace(".", "")
    assert tag in report["files"]["_cffi_backend"] and tag in report["files"]["pybase64._pybase64"]
    assert VENDORED_VERSIONS[version].items() <= report["versions"].items()
    # the add-on's attachment decoder runs pybase64's compiled SIMD code, the same
    # path as the development venv's pybase64 on this CPU, not the plain-C one
    assert report["addon_simd"] is True
    simd = dev_pybase64._get_simd_name(dev_pybase64._get_simd_path())
    assert report["simd_path"] == simd != "C"
    assert report["decoded"] == plain


PKCS12_PROBE = """
import json, sys
from mailsec.rm.pkcs12 import open_pkcs12  # first: mailsec puts cryptography on sys.path
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
given = json.load(sys.stdin)
opened = open_pkcs12(given["p12"], given["password"])
key = load_pem_private_key(opened.key_pem, None)
cert = x509.load_pem_x509_certificate(opened.chain_pem)
print(json.dumps({
    "subject": opened.subject, "email": opened.email,
    "key_matches": key.public_key().public_numbers() == cert.public_key().public_numbers(),
    "chain": opened.chain_pem.count(b"BEGIN CERTIFICATE"),
    "key_encrypted": opened.key_pem_encrypted.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY"),
}))
"""


@pytest.fixture(scope="module")
def client_certificate():
    ca = TestCA.create("compiled libraries test CA")
    return ca.issue_client("splunk-rm", email="splunk-alerts@corp.example")


@pytest.mark.parametrize("legacy", [False, True], ids=["aes256", "legacy-3des"])
@pytest.mark.parametrize("version", pythons.SPLUNK_PYTHONS)
def test_the_rm_client_certificate_opens_through_cryptography_under_each_splunk_python(
    built_app, splunk_home, client_certificate, version, legacy
):
    password = "p12-Pa55word!"
    p12 = client_certificate.to_pkcs12(password.encode(), legacy=legacy)
    done = pythons.run_in_app(
        pythons.require(version),
        built_app,
        PKCS12_PROBE,
        env=modinput.script_env(splunk_home),
        stdin=json.dumps({"p12": base64.b64encode(p12).decode(), "password": password}),
    )
    assert done.returncode == 0 and not done.stderr, done.stderr
    assert json.loads(done.stdout) == {
        "subject": "CN=splunk-rm",
        "email": "splunk-alerts@corp.example",
        "key_matches": True,
        "chain": 2,
        "key_encrypted": True,
    }
