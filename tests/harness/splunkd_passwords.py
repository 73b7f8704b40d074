"""The splunkd stand-in's ``storage/passwords`` endpoint (harness.splunkd): what
solnlib's ``CredentialManager`` and the decryption of ``******`` conf fields call."""

from __future__ import annotations

from typing import Optional
from urllib.parse import quote

from .splunkd_render import _acl, _Entry, _HTTPError, _Request, _Response
from .splunkd_state import PasswordEntry

#: What splunkd shows in the ``password`` field of a storage/passwords entry.
MASKED_PASSWORD = "********"


class PasswordEndpoints:
    """A part of SplunkdStandIn: uses its ``state``, ``app`` and rendering."""

    # -- storage/passwords ---------------------------------------------------

    def _served(self, entries: list[_Entry]) -> list[_Entry]:
        """Record which storage/passwords entries (clear text included) a client gets."""
        self.passwords_served.extend((e.content["realm"], e.content["username"]) for e in entries)
        return entries

    def _password_entry(self, e: PasswordEntry) -> _Entry:
        content = {
            "clear_password": e.clear_password,
            "encr_password": e.encr_password,
            "password": MASKED_PASSWORD,
            "realm": e.realm,
            "username": e.username,
        }
        path = f"storage/passwords/{quote(e.name, safe='')}"
        return _Entry(e.name, path, content, _acl(self.app), ("list", "edit", "remove"))

    def _passwords(self, req: _Request, name: Optional[str]) -> Optional[_Response]:
        passwords = self.state.passwords
        coll = "storage/passwords"
        if name is None:
            if req.method == "GET":
                entries = [self._password_entry(e) for e in passwords.values()]
                return self._feed(req, "passwords", coll, self._served(self._filter(req, entries)))
            if req.method == "POST":
                fields = req.fields()
                user, password = fields.get("name"), fields.get("password")
                if not user:
                    raise _HTTPError(400, "Missing argument: name")
                if password is None:
                    raise _HTTPError(400, "Missing argument: password")
                realm = fields.get("realm", "")
                probe = PasswordEntry(realm, user, "", "")
                if probe.name in passwords:
                    raise _HTTPError(409, f"An object with name={probe.name} already exists")
                entry = self.state.put_password(realm, user, password)
                return self._feed(
                    req, "passwords", coll, self._served([self._password_entry(entry)]), 201
                )
            return self._method_not_allowed()
        entry = passwords.get(name)
        if entry is None:
            raise _HTTPError(404, f"Could not find object id={name}")
        if req.method == "GET":
            return self._feed(req, "passwords", coll, self._served([self._password_entry(entry)]))
        if req.method == "POST":
            fields = req.fields()
            if "password" not in fields:
                raise _HTTPError(400, "Missing argument: password")
            entry = self.state.put_password(entry.realm, entry.username, fields["password"])
            return self._feed(req, "passwords", coll, self._served([self._password_entry(entry)]))
        if req.method == "DELETE":
            del passwords[name]
            entries = [self._password_entry(e) for e in passwords.values()]
            return self._feed(req, "passwords", coll, self._served(self._filter(req, entries)))
        return self._method_not_allowed()
