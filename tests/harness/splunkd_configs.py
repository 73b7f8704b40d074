"""The splunkd stand-in's conf endpoints (harness.splunkd): ``properties/...`` (solnlib's
``ConfManager.get_conf``) and ``configs/conf-<conf>[/<stanza>]`` (splunklib's ``ConfFile``)."""

from __future__ import annotations

from typing import Any, Optional
from urllib.parse import quote

from .splunkd_render import _acl, _Entry, _HTTPError, _Request, _Response


class ConfigEndpoints:
    """A part of SplunkdStandIn: uses its ``state``, ``app`` and rendering."""

    # -- properties ----------------------------------------------------------

    def _properties(self, req: _Request, rest: list[str]) -> Optional[_Response]:
        confs = self.state.confs
        if not rest:
            if req.method == "GET":
                entries = [
                    _Entry(c, f"properties/{quote(c, safe='')}", {}, None, ("list",)) for c in confs
                ]
                return self._feed(req, "properties", "properties", self._filter(req, entries))
            if req.method == "POST":
                name = req.fields().get("__conf")
                if not name:
                    raise _HTTPError(400, "Missing argument: __conf")
                created = name not in confs
                self.state.ensure_conf(name)
                entry = _Entry(name, f"properties/{quote(name, safe='')}", {}, None, ("list",))
                return self._feed(req, "properties", "properties", [entry], 201 if created else 200)
            return self._method_not_allowed()
        conf = rest[0]
        if conf not in confs:
            raise _HTTPError(404, f"Could not find object id={conf}")
        conf_path = f"properties/{quote(conf, safe='')}"
        if len(rest) == 1:
            if req.method == "GET":
                entries = [
                    _Entry(s, f"{conf_path}/{quote(s, safe='')}", {}, None, ("list",))
                    for s in confs[conf]
                ]
                return self._feed(req, conf, conf_path, self._filter(req, entries))
            if req.method == "POST":
                stanza = req.fields().get("__stanza")
                if not stanza:
                    raise _HTTPError(400, "Missing argument: __stanza")
                confs[conf].setdefault(stanza, {})
                return self._feed(req, conf, conf_path, [], 201)
            return self._method_not_allowed()
        stanza = rest[1]
        if stanza not in confs[conf]:
            raise _HTTPError(404, f"Could not find object id={stanza}")
        stanza_path = f"{conf_path}/{quote(stanza, safe='')}"
        if len(rest) == 2:
            if req.method == "GET":
                view = self.state.stanza_view(conf, stanza)
                entries = [
                    _Entry(k, f"{stanza_path}/{quote(k, safe='')}", {}, None, ("list",), v)
                    for k, v in view.items()
                ]
                return self._feed(req, stanza, stanza_path, self._filter(req, entries))
            if req.method == "POST":
                confs[conf][stanza].update(req.fields())
                return self._feed(req, stanza, stanza_path, [])
            return self._method_not_allowed()
        if len(rest) == 3 and req.method == "GET":
            view = self.state.stanza_view(conf, stanza)
            if rest[2] not in view:
                raise _HTTPError(404, f"Could not find object id={rest[2]}")
            return _Response(200, view[rest[2]].encode("utf-8"), "text/plain; charset=UTF-8")
        return None

    # -- configs/conf-* ------------------------------------------------------

    def _stanza_entry(self, conf: str, stanza: str) -> _Entry:
        content: dict[str, Any] = {"disabled": "0"}
        content.update(self.state.stanza_view(conf, stanza))
        content["eai:appName"] = self.app
        content["eai:userName"] = "nobody"
        path = f"configs/conf-{quote(conf, safe='')}/{quote(stanza, safe='')}"
        return _Entry(stanza, path, content, _acl(self.app), ("list", "_reload", "edit", "remove"))

    def _configs(self, req: _Request, conf: str, rest: list[str]) -> Optional[_Response]:
        confs = self.state.confs
        coll_path = f"configs/conf-{quote(conf, safe='')}"
        title = f"conf-{conf}"
        if not rest:
            if req.method == "GET":
                entries = [self._stanza_entry(conf, s) for s in confs.get(conf, {})]
                return self._feed(req, title, coll_path, self._filter(req, entries))
            if req.method == "POST":
                fields = req.fields()
                name = fields.pop("name", None)
                if not name:
                    raise _HTTPError(400, "Missing argument: name")
                stanzas = self.state.ensure_conf(conf)
                if name in stanzas:
                    raise _HTTPError(409, f"An object with name={name} already exists", "ERROR")
                stanzas[name] = fields
                return self._feed(req, title, coll_path, [self._stanza_entry(conf, name)], 201)
            return self._method_not_allowed()
        if rest == ["_reload"]:
            return self._feed(req, title, coll_path, [])
        stanza = rest[0]
        stanzas = confs.get(conf, {})
        if stanza not in stanzas:
            raise _HTTPError(404, f"Could not find object id={stanza}")
        if len(rest) == 2 and req.method == "POST" and rest[1] in ("disable", "enable"):
            stanzas[stanza]["disabled"] = "1" if rest[1] == "disable" else "0"
            return self._feed(req, title, coll_path, [self._stanza_entry(conf, stanza)])
        if len(rest) == 2 and rest[1] == "_reload":
            return self._feed(req, title, coll_path, [])
        if len(rest) != 1:
            return None
        if req.method == "GET":
            return self._feed(req, title, coll_path, [self._stanza_entry(conf, stanza)])
        if req.method == "POST":
            fields = req.fields()
            if "name" in fields:
                raise _HTTPError(400, "Argument name is not supported by this handler.")
            stanzas[stanza].update(fields)
            return self._feed(req, title, coll_path, [self._stanza_entry(conf, stanza)])
        if req.method == "DELETE":
            del stanzas[stanza]
            entries = [self._stanza_entry(conf, s) for s in stanzas]
            return self._feed(req, title, coll_path, self._filter(req, entries))
        return self._method_not_allowed()
