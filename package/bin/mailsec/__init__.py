"""TA_mailsec add-on logic, in layers (docs/development.md#layering).

`core` holds what every service shares and never imports splunklib or solnlib. The
import rules, checked by tests/foundation/test_layering.py:

- `mailsec.core` imports no other part of the add-on.
- `mailsec.adapters`, the only code that talks to splunkd (through splunklib and
  solnlib), imports `mailsec.core` only.
- Each service (every other sub-package: `mailsec.ser`, `mailsec.sense`,
  `mailsec.audit`, `mailsec.rm`, ...) imports `mailsec.core` only: neither the adapters
  nor another service. Where a service needs splunkd, the entry script passes an
  adapter in, typed by a Protocol in `mailsec.core`.
- The modules beside the sub-packages (`mailsec.accounts`) put services together for
  the entry scripts: they import `mailsec.core` and the services; no sub-package
  imports them.
- Every layer may use the package root (`mailsec`: `APP_NAME`), which imports nothing.
"""

APP_NAME = "TA_mailsec"


def _add_compiled_libraries() -> None:
    """Put the lib/3rdparty folders for this platform and Python on sys.path.

    Compiled libraries (cryptography, cffi, pybase64) are vendored per platform and, where the
    binary depends on it, per Python version (globalConfig.json
    meta.os-dependentLibraries): a build for one Python does not load in another.
    Splunk 9.x runs Python 3.9; Splunk 10.x 3.9 or 3.13.
    """
    import os
    import sys

    lib = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "lib")
    base = os.path.join(lib, "3rdparty")
    if not os.path.isdir(base):
        return  # running from source, with the libraries installed
    if sys.platform.startswith("linux"):
        machine = os.uname().machine.lower()
        platform_tag = "linux_x86_64" if machine in ("x86_64", "amd64") else f"linux_{machine}"
    elif sys.platform == "win32":
        platform_tag = "windows_amd64"
    else:
        return
    # 3.9: its own folder. 3.11 and later: the abi3 cryptography (with 3.11's cffi)
    # in _py311plus, and for 3.13 its own cffi in _py313, put before it.
    tags = [f"{platform_tag}_py{sys.version_info[0]}{sys.version_info[1]}"]
    if sys.version_info >= (3, 11):
        tags.insert(0, f"{platform_tag}_py311plus")
    for tag in tags:  # each inserted at the front: the version-specific one ends up first
        folder = os.path.join(base, tag)
        if os.path.isdir(folder) and folder not in sys.path:
            sys.path.insert(0, folder)


_add_compiled_libraries()
