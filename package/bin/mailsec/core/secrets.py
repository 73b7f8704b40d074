"""A small encrypted cache for short-lived credentials (OAuth access tokens).

Each modular-input run is a new process: without a cache, every run would ask for
a new token. The splunkd implementation keeps values in storage/passwords, which
splunkd encrypts; tests use the in-memory one.
"""

from __future__ import annotations

from typing import Optional, Protocol


class SecretCache(Protocol):
    def get(self, name: str) -> Optional[str]: ...

    def set(self, name: str, value: str) -> None: ...

    def delete(self, name: str) -> None: ...


class MemorySecretCache:
    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def get(self, name: str) -> Optional[str]:
        return self.values.get(name)

    def set(self, name: str, value: str) -> None:
        self.values[name] = value

    def delete(self, name: str) -> None:
        self.values.pop(name, None)
