"""The splunkd stand-in's KV-store endpoints (harness.splunkd):
``storage/collections/config[/<name>]`` and
``storage/collections/data/<name>[/<key>|/batch_save|/batch_find]``, with the subset
of MongoDB's query language that tests need."""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Mapping
from typing import Any, Optional
from urllib.parse import quote

from .splunkd_render import _acl, _Entry, _HTTPError, _Request, _Response
from .splunkd_state import KVCollection

#: splunkd's ``max_documents_per_batch_save`` default (limits.conf [kvstore]).
KV_BATCH_SAVE_LIMIT = 1000


class KVStoreEndpoints:
    """A part of SplunkdStandIn: uses its ``state``, ``app`` and rendering."""

    # -- KV store: collections config ---------------------------------------

    def _collection_entry(self, name: str) -> _Entry:
        content: dict[str, Any] = {
            "disabled": "0",
            "profilingEnabled": "false",
            "profilingThresholdMs": "1000",
            "replicate": "false",
            "replication_dump_maximum_file_size": "10240",
            "replication_dump_strategy": "auto",
        }
        content.update(self.state.collections[name].config)
        content["eai:appName"] = self.app
        content["eai:userName"] = "nobody"
        path = f"storage/collections/config/{quote(name, safe='')}"
        return _Entry(name, path, content, _acl(self.app), ("list", "_reload", "edit", "remove"))

    def _kv_config(self, req: _Request, rest: list[str]) -> Optional[_Response]:
        colls = self.state.collections
        coll_path = "storage/collections/config"
        title = "collections-conf"
        if not rest:
            if req.method == "GET":
                entries = [self._collection_entry(n) for n in colls]
                return self._feed(req, title, coll_path, self._filter(req, entries))
            if req.method == "POST":
                fields = req.fields()
                name = fields.pop("name", None)
                if not name:
                    raise _HTTPError(400, "Missing argument: name")
                if name in colls:
                    raise _HTTPError(409, f"An object with name={name} already exists")
                colls[name] = KVCollection(config=fields)
                return self._feed(req, title, coll_path, [self._collection_entry(name)], 201)
            return self._method_not_allowed()
        if len(rest) != 1:
            return None
        name = rest[0]
        if name not in colls:
            raise _HTTPError(404, f"Could not find object id={name}")
        if req.method == "GET":
            return self._feed(req, title, coll_path, [self._collection_entry(name)])
        if req.method == "POST":
            colls[name].config.update(req.fields())
            return self._feed(req, title, coll_path, [self._collection_entry(name)])
        if req.method == "DELETE":
            del colls[name]
            entries = [self._collection_entry(n) for n in colls]
            return self._feed(req, title, coll_path, entries)
        return self._method_not_allowed()

    # -- KV store: data -------------------------------------------------------

    @staticmethod
    def _kv_save(coll: KVCollection, doc: dict[str, Any]) -> str:
        key = doc.get("_key")
        key = uuid.uuid4().hex[:24] if key in (None, "") else str(key)
        record = {k: v for k, v in doc.items() if k not in ("_key", "_user")}
        record["_user"] = "nobody"
        record["_key"] = key
        coll.records[key] = record
        return key

    def _kv_data(self, req: _Request, name: str, rest: list[str]) -> Optional[_Response]:
        coll = self.state.collections.get(name)
        if coll is None:
            raise _HTTPError(404, f"Collection: {name} does not exist")
        if not rest:
            if req.method == "GET":
                return self._kv_json(200, self._kv_query(req, coll))
            if req.method == "POST":
                doc = req.json_body()
                if not isinstance(doc, dict):
                    raise _HTTPError(400, "Request body must be a JSON object")
                if doc.get("_key") not in (None, "") and str(doc["_key"]) in coll.records:
                    raise _HTTPError(409, "A document with the same key and user already exists.")
                return self._kv_json(201, {"_key": self._kv_save(coll, doc)})
            if req.method == "DELETE":
                query = _parse_kv_query(req.q("query"))
                for key in [k for k, r in coll.records.items() if _kv_match(r, query)]:
                    del coll.records[key]
                return _Response(200, b"", "application/json")
            return self._method_not_allowed()
        if len(rest) != 1:
            return None
        key = rest[0]
        if key == "batch_save" and req.method == "POST":
            docs = req.json_body()
            if not isinstance(docs, list) or not all(isinstance(d, dict) for d in docs):
                raise _HTTPError(400, "Request body must be a JSON array of objects")
            if len(docs) > KV_BATCH_SAVE_LIMIT:
                raise _HTTPError(
                    400,
                    "Request exceeds API limits - see limits.conf for details. (Too many "
                    f"documents for a single batch save, limit: {KV_BATCH_SAVE_LIMIT})",
                )
            return self._kv_json(200, [self._kv_save(coll, d) for d in docs])
        if key == "batch_find" and req.method == "POST":
            queries = req.json_body()
            if not isinstance(queries, list):
                raise _HTTPError(400, "Request body must be a JSON array")
            return self._kv_json(200, [self._kv_find(coll, q) for q in queries])
        record = coll.records.get(key)
        if record is None:
            raise _HTTPError(404, "Could not find object.")
        if req.method == "GET":
            return self._kv_json(200, record)
        if req.method == "POST":
            doc = req.json_body()
            if not isinstance(doc, dict):
                raise _HTTPError(400, "Request body must be a JSON object")
            doc["_key"] = key
            return self._kv_json(200, {"_key": self._kv_save(coll, doc)})
        if req.method == "DELETE":
            del coll.records[key]
            return _Response(200, b"", "application/json")
        return self._method_not_allowed()

    def _kv_query(self, req: _Request, coll: KVCollection) -> list[dict[str, Any]]:
        spec = {
            "query": _parse_kv_query(req.q("query")),
            "sort": req.q("sort"),
            "skip": req.q("skip"),
            "limit": req.q("limit"),
            "fields": req.q("fields"),
        }
        return self._kv_find(coll, spec)

    @staticmethod
    def _kv_find(coll: KVCollection, spec: Mapping[str, Any]) -> list[dict[str, Any]]:
        query = spec.get("query") or {}
        if isinstance(query, str):
            query = _parse_kv_query(query)
        found = [copy.deepcopy(r) for r in coll.records.values() if _kv_match(r, query)]
        sort = spec.get("sort")
        if sort:
            # "a,b:-1" or a list of such; applied last key first for stability
            terms = sort if isinstance(sort, list) else str(sort).split(",")
            for term in reversed(terms):
                fname, _, direction = str(term).partition(":")
                found.sort(
                    key=lambda r, f=fname: (r.get(f) is None, str(r.get(f))),
                    reverse=direction.strip() == "-1",
                )
        try:
            skip = int(spec.get("skip") or 0)
            limit = int(spec.get("limit") or 0)
        except ValueError:
            raise _HTTPError(400, "skip and limit must be integers") from None
        found = found[skip:]
        if limit > 0:
            found = found[:limit]
        fields = spec.get("fields")
        if fields:
            names = fields if isinstance(fields, list) else str(fields).split(",")
            include = [n.split(":")[0] for n in names if not n.endswith(":0")]
            exclude = [n.split(":")[0] for n in names if n.endswith(":0")]
            if include:
                keep = set(include) | {"_key"}
                found = [{k: v for k, v in r.items() if k in keep} for r in found]
            if exclude:
                found = [{k: v for k, v in r.items() if k not in exclude} for r in found]
        return found


# ---------------------------------------------------------------------------
# KV-store query language (the subset of MongoDB's that tests need)
# ---------------------------------------------------------------------------


def _parse_kv_query(text: Optional[str]) -> dict[str, Any]:
    if not text:
        return {}
    try:
        query = json.loads(text)
    except ValueError:
        raise _HTTPError(400, "Invalid JSON in query") from None
    if not isinstance(query, dict):
        raise _HTTPError(400, "Query must be a JSON object")
    return query


def _kv_compare(value: Any, op: str, arg: Any) -> bool:
    try:
        if op == "$eq":
            return value == arg
        if op == "$ne":
            return value != arg
        if op == "$gt":
            return value is not None and value > arg
        if op == "$gte":
            return value is not None and value >= arg
        if op == "$lt":
            return value is not None and value < arg
        if op == "$lte":
            return value is not None and value <= arg
        if op == "$in":
            return value in arg
        if op == "$nin":
            return value not in arg
        if op == "$exists":
            return (value is not None) == bool(arg)
        if op == "$regex":
            return value is not None and re.search(str(arg), str(value)) is not None
    except TypeError:
        return False
    raise _HTTPError(400, f"Unsupported query operator {op}")


def _kv_match(record: Mapping[str, Any], query: Mapping[str, Any]) -> bool:
    for key, cond in query.items():
        if key == "$and":
            if not all(_kv_match(record, q) for q in cond):
                return False
        elif key == "$or":
            if not any(_kv_match(record, q) for q in cond):
                return False
        elif isinstance(cond, dict) and cond and all(str(k).startswith("$") for k in cond):
            value = record.get(key)
            if not all(_kv_compare(value, op, arg) for op, arg in cond.items()):
                return False
        elif record.get(key) != cond:
            return False
    return True
