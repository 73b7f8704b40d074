"""Private folders in shared places such as /tmp.

Another local user can create a folder or a link under /tmp first. A folder the
add-on writes to (CA bundles, encrypted downloads, a GnuPG home) must be its own:
a directory, not a link, owned by this user, closed to others.
"""

from __future__ import annotations

import contextlib
import os
import stat


def private_dir(path: str) -> str:
    """Create `path` (mode 0700), or check that the existing one is safe to use."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise PermissionError(
            f"{path} is not a plain folder (a link or a file): refusing to use it"
        )
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise PermissionError(f"{path} belongs to another user: refusing to use it")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, 0o700)
    return path
