"""`audit_export`: drives Google mailbox exports from request to indexed messages.

One run (splunkd starts it every `interval` seconds):
1. make sure the account's public key is uploaded (again when it changed);
2. settle an export request a killed run may have sent without recording it
   (found again in the list feed by user and dates, so it is not requested twice);
3. request the windows that are due, per user, each beginning where the previous
   ended, each only after a slot of the domain's daily budget was claimed;
4. poll the open requests; download, decrypt and index every file of a COMPLETED
   one, resuming a file after its last written message; delete it when asked,
   repeating with exponential backoff while Google answers MARKED_DELETE;
5. raise the 18-day warning for a completed export still not processed.

The checkpoint (KV store, keyed by input name) is saved after every step that
changed it, and for files after every batch of events written: at-least-once,
and a replayed message or lifecycle event carries the same `event_id`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from datetime import datetime, timedelta
from typing import Any, Callable, Optional

import requests

from mailsec.audit.api import ApiError, AuditApi, ExportRequest, HostileXml, QuotaExceeded
from mailsec.audit.auth import ServiceAccount, TokenProvider
from mailsec.audit.budget import COLLECTION as BUDGET_COLLECTION
from mailsec.audit.budget import DailyBudget
from mailsec.audit.config import AuditInputConfig, GoogleAccount
from mailsec.audit.decrypt import DecryptError, GnupgSession, KeyUnusable
from mailsec.audit.download import DownloadError, Stopped, download, work_root
from mailsec.audit.message import ParsedMessage
from mailsec.audit.pipeline import Emitter, NotAnMbox, run_pipeline
from mailsec.core.events import Event, build_event
from mailsec.core.http import HttpClient
from mailsec.core.params import ConfigError
from mailsec.core.runtime import InputRun
from mailsec.core.timeutil import UTC, as_utc, format_google, parse_google

MESSAGE_SOURCETYPE = "google:workspace:mailbox:message"
EXPORT_SOURCETYPE = "google:workspace:audit:export"
STATE_VERSION = 1
WARN_AFTER = timedelta(days=18)
EXPIRES_AFTER = timedelta(days=21)
MAX_FILE_ATTEMPTS = 3  # a file gpg cannot read is retried on this many runs
MAX_WINDOW_RETRIES = 3  # an export answered ERROR is requested again this many times
DELETE_BACKOFF = 2.0  # seconds, doubled after every MARKED_DELETE
DELETE_BACKOFF_MAX = 3600.0
DELETE_WAIT_PER_RUN = 120.0  # beyond this, the next run carries on


def run(run: InputRun) -> None:
    AuditExportService(run).run()


class AuditExportService:
    def __init__(
        self,
        run: InputRun,
        clock: Optional[Callable[[], float]] = None,
        sleep: Optional[Callable[[float], Any]] = None,
        workdir_base: Optional[str] = None,
    ) -> None:
        self.run_ = run
        self.log = run.logger
        self.clock = clock or run.extras.get("clock") or time.time
        self.sleep = sleep or run.extras.get("sleep") or run.stop.wait
        self.workdir_base = workdir_base or run.extras.get("workdir_base")
        self.config = AuditInputConfig.from_params(run.params)
        self.account = GoogleAccount.from_fields(
            run.load_account("google_account", self.config.account)
        )
        self.domain = self.account.domain
        self.users = tuple(_user_name(user, self.domain) for user in self.config.users)
        self.state: dict = {}
        self._gpg: Optional[GnupgSession] = None
        self.refused_xml = 0  # answers refused in this run, counted in the log

    # -- the run ------------------------------------------------------------
    def run(self) -> None:
        service_account = ServiceAccount.from_json(self.account.service_account_json)
        self.state = self._load_state()
        root = work_root(self.run_.name, self.workdir_base)
        http = HttpClient(
            ca_bundle_pem=self.account.ca_bundle,
            proxy=self.run_.proxy,
            logger=self.log,
            sleep=lambda seconds: self.sleep(seconds),
        )
        try:
            tokens = TokenProvider(
                http,
                service_account,
                self.account.admin_email,
                self.account.token_url,
                clock=self.clock,
            )
            self.api = AuditApi(http, self.account.api_url, self.domain, tokens)
            self.http = http
            self.root = root
            budget_store = self.run_.open_store(BUDGET_COLLECTION)
            self.budget = DailyBudget(
                budget_store,
                self.domain,
                self.config.daily_request_budget,
                owner=self.run_.name,
                clock=self.clock,
            )
            key_uploaded = self._ensure_public_key()
            settled = self._settle_creation_in_flight()
            if key_uploaded and settled:
                self._create_due_exports()
            self._poll_open_requests()
        except Stopped:
            self.log.info("stop requested: progress is saved, the next run continues")
        finally:
            http.close()
            if self._gpg is not None:
                self._gpg.close()
                self._gpg = None
            # nothing of this run stays on disk: downloads and the GnuPG home go
            work_root(self.run_.name, self.workdir_base)
            os.rmdir(root)

    # -- state --------------------------------------------------------------
    def _load_state(self) -> dict:
        state = self.run_.checkpoints.get(self.run_.name) or {}
        if state.get("v") != STATE_VERSION:
            state = {"v": STATE_VERSION}
        state.setdefault("users", {})
        state.setdefault("requests", {})
        return state

    def _save(self) -> None:
        self.run_.checkpoints.save(self.run_.name, self.state)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def _check_stop(self) -> None:
        if self.run_.stop.is_set():
            raise Stopped("stop requested")

    # -- events -------------------------------------------------------------
    def _lifecycle(
        self, action: str, request: Optional[dict], detail: Any = None, **fields: Any
    ) -> Event:
        data: dict = {
            "action": action,
            "domain": self.domain,
            "input": self.run_.name,
        }
        if request is not None:
            data.update(
                request_id=request["id"],
                user=request["user"],
                status=request.get("status"),
                number_of_files=request.get("number_of_files", 0),
                begin_date=request["begin"],
                end_date=request["end"],
            )
            if request.get("completed"):
                data["completed_date"] = request["completed"]
        data.update(fields)
        key = [self.domain, request["id"] if request else None, action, detail]
        return build_event(EXPORT_SOURCETYPE, self._now(), data, key, index=self.config.index)

    def _emit(self, *events: Event) -> None:
        self.run_.sink.write(list(events))

    def _refused(
        self,
        endpoint: str,
        error: HostileXml,
        request: Optional[dict] = None,
        **context: Any,
    ) -> None:
        """An answer holding a DTD or entity declaration: logged with where it came
        from, one `error` event, and nothing of it used. The message is ours, never
        the answer's text, so no entity or its expansion reaches a log or an event."""
        self.refused_xml += 1
        where = {"endpoint": endpoint, **context}
        if request is not None:
            where.setdefault("request_id", request["id"])
            where.setdefault("user", request["user"])
        self._emit(
            self._lifecycle(
                "error",
                request,
                ("xml_refused", endpoint, sorted(where.items()), self.clock()),
                error=f"{endpoint}: {error}",
                **where,
            )
        )
        self.log.error(
            "audit_xml_refused %s refused_this_run=%d: %s",
            " ".join(f"{key}={value}" for key, value in where.items()),
            self.refused_xml,
            error,
        )

    # -- 1. the public key --------------------------------------------------
    def _ensure_public_key(self) -> bool:
        """True when the account's key is known to be uploaded: only then may
        exports be requested (they would be encrypted to another key, or refused)."""
        fingerprint = hashlib.sha256(self.account.pgp_public_key.strip().encode()).hexdigest()
        if self.state.get("public_key") == fingerprint:
            return True
        try:
            self.api.upload_public_key(self.account.pgp_public_key.strip())
        except HostileXml as error:
            self._refused("publickey", error)
            return False
        self.log.info("uploaded the account's PGP public key for domain=%s", self.domain)
        self.state["public_key"] = fingerprint
        self._save()
        return True

    # -- 2/3. creating exports ----------------------------------------------
    def _user_state(self, user: str) -> dict:
        users = self.state["users"]
        if user not in users:
            first = self.config.first_begin_date or (self._now() - timedelta(days=1))
            users[user] = {"next": format_google(first), "redo": []}
        return users[user]

    def _settle_creation_in_flight(self) -> bool:
        """False when a request in flight could not be settled: then no export may
        be requested in this run (the same window could be requested twice)."""
        pending = self.state.get("creating")
        if not pending:
            return True
        found = None
        since = datetime.fromtimestamp(pending["at"], UTC) - timedelta(days=1)
        address = f"{pending['user']}@{self.domain}".lower()
        try:
            for request in self.api.list_exports(since):
                properties = request.properties
                if (
                    properties.get("userEmailAddress", "").lower() == address
                    and properties.get("beginDate") == pending["begin"]
                    and properties.get("endDate") == pending["end"]
                    and request.request_id not in self.state["requests"]
                ):
                    found = request
        except HostileXml as error:
            self._refused(
                "list",
                error,
                user=f"{pending['user']}@{self.domain}",
                begin_date=pending["begin"],
                end_date=pending["end"],
            )
            return False
        if found is not None:
            self.log.info("found export request_id=%s sent by an interrupted run", found.request_id)
            self._record_created(pending["user"], pending, found)
        self.state.pop("creating", None)
        self._save()
        return True

    def _due_windows(self, user: str) -> list:
        ustate = self._user_state(user)
        windows = [tuple(window) for window in ustate["redo"]]
        begin = parse_google(ustate["next"])
        now = self._now()
        while begin + self.config.export_every <= now:
            windows.append((format_google(begin), format_google(begin + self.config.export_every)))
            begin += self.config.export_every
        return windows

    def _create_due_exports(self) -> None:
        for user in self.users:
            for begin, end in self._due_windows(user):
                self._check_stop()
                if not self._create_one(user, begin, end):
                    return

    def _create_one(self, user: str, begin: str, end: str) -> bool:
        """Request one window; False when no more may be requested in this run."""
        slot = self.budget.reserve(f"{self.run_.name}:{user}:{begin}")
        if slot is None:
            self._budget_exhausted("the domain's daily export budget is spent")
            return False
        pending = {"user": user, "begin": begin, "end": end, "at": self.clock(), "slot": slot}
        self.state["creating"] = pending
        self._save()
        try:
            created = self.api.create_export(
                user,
                parse_google(begin),
                parse_google(end),
                self.config.include_deleted,
                self.config.search_query,
                self.config.package_content,
            )
        except requests.RequestException as error:
            # sent, and maybe created: the `creating` record stays, and the next run
            # looks for the export in the list feed before asking for the window again
            self.log.error(
                "export request for user=%s %s..%s: no answer (%s); the next run checks "
                "whether Google created it",
                user,
                begin,
                end,
                type(error).__name__,
            )
            return False
        except QuotaExceeded as error:
            self.budget.mark_exhausted_by_google()
            self.state.pop("creating", None)
            self._save()
            self._budget_exhausted(str(error))
            return False
        except HostileXml as error:
            # Google may have made the export: "creating" stays in the checkpoint so
            # the next run looks for it in the list feed before asking again, and no
            # other window is requested in this run (one request in flight at a time)
            self._refused(
                "create",
                error,
                user=f"{user}@{self.domain}",
                begin_date=begin,
                end_date=end,
            )
            return False
        except ApiError as error:
            if error.status is None or error.status >= 500:
                # the outcome is unknown (a gateway error, an unreadable 201): as above
                self.log.error(
                    "export request for user=%s %s..%s: %s; the next run checks whether "
                    "Google created it",
                    user,
                    begin,
                    end,
                    error,
                )
                return False
            window = {"id": None, "user": f"{user}@{self.domain}", "begin": begin, "end": end}
            self._emit(
                self._lifecycle(
                    "error",
                    None,
                    (user, begin, "create"),
                    user=window["user"],
                    begin_date=begin,
                    end_date=end,
                    error=str(error),
                )
            )
            # saved only once its event is written (at-least-once)
            self.state.pop("creating", None)
            self._retry_window_later(user, begin, end)  # the next windows go on: no gap
            self._save()
            self.log.error("export request for user=%s %s..%s failed: %s", user, begin, end, error)
            return True
        self._record_created(user, pending, created)
        self.state.pop("creating", None)
        self._save()
        return True

    def _retry_window_later(self, user: str, begin: str, end: str) -> None:
        """A window Google refused is requested again on the next runs (up to
        MAX_WINDOW_RETRIES times), while the windows after it go on."""
        ustate = self._user_state(user)
        window = [begin, end]
        if window in ustate["redo"]:
            ustate["redo"].remove(window)
        elif parse_google(end) > parse_google(ustate["next"]):
            ustate["next"] = end  # from now on it is in `redo`, not a new window
        retries = ustate.setdefault("retries", {})
        label = f"{begin}|{end}"
        if retries.get(label, 0) >= MAX_WINDOW_RETRIES:
            self.log.error(
                "window %s..%s of %s@%s refused %d times: given up",
                begin,
                end,
                user,
                self.domain,
                MAX_WINDOW_RETRIES + 1,
            )
            return
        retries[label] = retries.get(label, 0) + 1
        ustate["redo"].append(window)

    def _record_created(self, user: str, window: dict, created: ExportRequest) -> None:
        ustate = self._user_state(user)
        key = [window["begin"], window["end"]]
        retries = ustate.get("retries", {}).get(f"{window['begin']}|{window['end']}", 0)
        if key in ustate["redo"]:
            ustate["redo"].remove(key)
        elif parse_google(window["end"]) > parse_google(ustate["next"]):
            ustate["next"] = window["end"]
        request = {
            "id": created.request_id,
            "user": f"{user}@{self.domain}",
            "name": user,
            "begin": window["begin"],
            "end": window["end"],
            "status": created.status or "PENDING",
            "created": self.clock(),
            "retries": retries,
            "files": {},
        }
        self.state["requests"][created.request_id] = request
        self._emit(self._lifecycle("created", request, None))
        self.log.info(
            "audit_export_created request_id=%s user=%s begin=%s end=%s",
            created.request_id,
            request["user"],
            window["begin"],
            window["end"],
        )

    def _budget_exhausted(self, reason: str) -> None:
        day = self.budget.day()
        if self.state.get("budget_event_day") != day:
            self._emit(
                self._lifecycle(
                    "budget_exhausted",
                    None,
                    (day, self.run_.name),
                    error=reason,
                    day=day,
                    budget=self.budget.limit,
                )
            )
            self.state["budget_event_day"] = day
            self._save()
        self.log.warning(
            "audit_budget_exhausted domain=%s day=%s limit=%d reason=%s",
            self.domain,
            day,
            self.budget.limit,
            reason,
        )

    # -- 4. polling and processing ------------------------------------------
    def _poll_open_requests(self) -> None:
        for request_id in list(self.state["requests"]):
            self._check_stop()
            request = self.state["requests"][request_id]
            if request.get("phase") == "deleting":
                self._delete(request)
                continue
            try:
                current = self.api.status(request["name"], request_id)
            except HostileXml as error:
                self._refused("status", error, request)
                continue
            except ApiError as error:
                self.log.error("status of request_id=%s failed: %s", request_id, error)
                continue
            self._on_status(request, current)

    def _on_status(self, request: dict, current: ExportRequest) -> None:
        status = current.status or "UNKNOWN"
        if status != request["status"]:
            previous = request["status"]
            request["status"] = status
            request["number_of_files"] = current.number_of_files
            if current.properties.get("completedDate"):
                request["completed"] = current.properties["completedDate"]
            self._emit(self._lifecycle("status", request, status, previous_status=previous))
            self._save()
        if status == "PENDING":
            return
        if status == "COMPLETED":
            self._process_completed(request, current)
        elif status == "ERROR":
            self._emit(
                self._lifecycle(
                    "error",
                    request,
                    "ERROR",
                    error="Google reports the export failed (status ERROR)",
                )
            )
            self._redo_window(request)
            self._forget(request)
        elif status == "EXPIRED":
            written = sum(f.get("written", 0) for f in request["files"].values())
            self._emit(self._lifecycle("expired", request, None, messages=written))
            if not written:
                self._redo_window(request)
            self._forget(request)
        elif status in ("DELETED", "MARKED_DELETE"):
            # deleted by someone else before this input processed it
            self._forget(request)
        else:
            self.log.warning("request_id=%s has unknown status %r", request["id"], status)

    def _redo_window(self, request: dict) -> None:
        if request.get("retries", 0) >= MAX_WINDOW_RETRIES:
            self.log.error(
                "window %s..%s of %s failed %d times: given up",
                request["begin"],
                request["end"],
                request["user"],
                MAX_WINDOW_RETRIES,
            )
            return
        ustate = self._user_state(request["name"])
        ustate["redo"].append([request["begin"], request["end"]])
        ustate.setdefault("retries", {})[f"{request['begin']}|{request['end']}"] = (
            request.get("retries", 0) + 1
        )

    def _forget(self, request: dict) -> None:
        self.state["requests"].pop(request["id"], None)
        self._save()

    def _process_completed(self, request: dict, current: ExportRequest) -> None:
        urls = current.file_urls
        request["number_of_files"] = len(urls)
        files = request["files"]
        for index, url in enumerate(urls):
            entry = files.setdefault(str(index), {"written": 0, "attempts": 0})
            if entry.get("done") or entry.get("failed"):
                continue
            self._check_stop()
            self._process_file(request, index, url, entry)
        if all(files.get(str(i), {}).get("done") for i in range(len(urls))):
            if self.config.delete_after_download:
                request["phase"] = "deleting"
                request["delete_tries"] = 0
                self._save()
                self._delete(request)
            else:
                self._forget(request)
            return
        self._maybe_warn(request)

    def _maybe_warn(self, request: dict) -> None:
        completed = request.get("completed")
        if not completed or request.get("warned"):
            return
        try:
            completed_at = parse_google(completed)
        except ValueError:
            return
        if self._now() - completed_at >= WARN_AFTER:
            expires = completed_at + EXPIRES_AFTER
            self._emit(
                self._lifecycle(
                    "warning",
                    request,
                    None,
                    error="completed export not fully processed; Google deletes it at "
                    f"{format_google(expires)} UTC",
                    expires=format_google(expires),
                )
            )
            request["warned"] = True
            self._save()

    def _process_file(self, request: dict, index: int, url: str, entry: dict) -> None:
        path = os.path.join(self.root, f"{_safe(request['id'])}_{index}.pgp")
        try:
            size = download(self.http, url, path, self.api.auth_headers(url), self.run_.stop)
        except DownloadError as error:
            # a missing URL is Google's data, not the network: counted, then given up
            self._file_error(
                request, index, entry, f"download: {error}", permanent=False, counted=not url
            )
            return
        try:
            entry["bytes"] = size
            self._emit(self._lifecycle("downloaded", request, index, file_index=index, bytes=size))
            self.log.info(
                "audit_progress request_id=%s file=%d downloaded_bytes=%d",
                request["id"],
                index,
                size,
            )
            self._decrypt_and_index(request, index, path, entry)
        finally:
            if os.path.exists(path):
                os.unlink(path)

    def _decrypt_and_index(self, request: dict, index: int, path: str, entry: dict) -> None:
        completed = request.get("completed")
        export_time = parse_google(completed) if completed else self._now()

        def where(ordinal: int) -> dict:
            """The fields that place a message: its export, file and position."""
            return {
                "request_id": request["id"],
                "user": request["user"],
                "domain": self.domain,
                "file_index": index,
                "ordinal": ordinal,
            }

        def message_event(ordinal: int, parsed: ParsedMessage) -> Event:
            fields = parsed.fields()
            when = parsed.date() or export_time
            data = where(ordinal)
            data.update(fields)
            key = [request["id"], index, ordinal, fields["message_id"]]
            return build_event(MESSAGE_SOURCETYPE, when, data, key, index=self.config.index)

        def make_event(ordinal: int, parsed: ParsedMessage) -> Event:
            error_class = parsed.parse_error
            if not error_class:
                try:
                    return message_event(ordinal, parsed)
                except Exception as error:  # one message never stops the file
                    error_class = type(error).__name__
            entry["parse_errors"] = entry.get("parse_errors", 0) + 1
            self.log.warning(
                "audit_parse_error request_id=%s file=%d ordinal=%d error=%s",
                request["id"],
                index,
                ordinal,
                error_class,
            )
            data = where(ordinal)
            data.update(size=parsed.size, parse_error=error_class)
            data.update(_readable_fields(parsed))
            key = [request["id"], index, ordinal, data.get("message_id", "")]
            return build_event(MESSAGE_SOURCETYPE, export_time, data, key, index=self.config.index)

        def write(events: list, durable: int) -> None:
            self.run_.sink.write(events)
            entry["written"] = durable
            if emitter.truncated is not None:  # a resumed run skips that message
                entry["truncated"] = emitter.truncated
            self._save()
            self.log.info(
                "audit_progress request_id=%s file=%d messages=%d", request["id"], index, durable
            )
            self._check_stop()

        emitter = Emitter(
            make_event,
            write,
            skip=entry.get("written", 0),
            include_body=self.config.include_body,
            body_max_bytes=self.config.body_max_bytes,
        )
        try:
            splitter = run_pipeline(self._gnupg().decrypt_chunks(path), emitter)
        except KeyUnusable as error:
            # the account's key or passphrase is wrong: not the file's fault, not counted
            self._file_error(request, index, entry, f"decrypt: {error}", permanent=False)
            return
        except (DecryptError, NotAnMbox) as error:
            self._file_error(
                request, index, entry, f"decrypt: {error}", permanent=False, counted=True
            )
            return
        self._emit(
            self._lifecycle(
                "decrypted",
                request,
                index,
                file_index=index,
                messages=emitter.messages,
                bytes=splitter.bytes,
                parse_errors=entry.get("parse_errors", 0),
            )
        )
        truncated = entry.get("truncated") if emitter.truncated is None else emitter.truncated
        if truncated is not None:
            self._emit(
                self._lifecycle(
                    "error",
                    request,
                    ("truncated", index),
                    file_index=index,
                    messages=emitter.messages,
                    error=f"the mbox of file {index} ends inside message {truncated}: "
                    "it was indexed with truncated=true",
                )
            )
        # the file is done only once the events reporting it are written (at-least-once)
        entry["done"] = True
        entry["messages"] = emitter.messages
        entry["plaintext_bytes"] = splitter.bytes
        self._save()

    def _file_error(
        self,
        request: dict,
        index: int,
        entry: dict,
        error: str,
        permanent: bool,
        counted: bool = False,
    ) -> None:
        if counted:
            entry["attempts"] = entry.get("attempts", 0) + 1
            if entry["attempts"] >= MAX_FILE_ATTEMPTS:
                permanent = True
        if permanent:
            entry["failed"] = True
            error += f" (given up after {entry.get('attempts', 0)} attempts; the export is kept)"
        self._emit(
            self._lifecycle(
                "error",
                request,
                ("file", index, entry.get("attempts", 0), error[:40]),
                file_index=index,
                messages=entry.get("written", 0),
                error=error,
            )
        )
        self._save()  # after the event: a crash in between repeats the attempt
        self.log.error("request_id=%s file=%d: %s", request["id"], index, error)

    def _gnupg(self) -> GnupgSession:
        """One throw-away GnuPG home per run, made when the first file needs it."""
        if self._gpg is None:
            self._gpg = GnupgSession(
                self.account.pgp_private_key, self.account.pgp_passphrase, self.root
            )
        return self._gpg

    # -- deletion -----------------------------------------------------------
    def _delete(self, request: dict) -> None:
        waited = 0.0
        while True:
            try:
                status = self.api.delete(request["name"], request["id"])
            except HostileXml as error:
                self._refused("delete", error, request)
                return  # still "deleting": the next run asks again
            except ApiError as error:
                self.log.error("delete of request_id=%s failed: %s", request["id"], error)
                return
            if status == "DELETED":
                request["status"] = "DELETED"
                messages = sum(f.get("messages", 0) for f in request["files"].values())
                self._emit(self._lifecycle("deleted", request, None, messages=messages))
                self._forget(request)
                return
            tries = request["delete_tries"] = request.get("delete_tries", 0) + 1
            self._save()
            delay = min(DELETE_BACKOFF * 2 ** (tries - 1), DELETE_BACKOFF_MAX)
            self.log.info(
                "request_id=%s answered %s; delete again in %.0fs", request["id"], status, delay
            )
            if waited + delay > DELETE_WAIT_PER_RUN:
                return  # the next run tries again
            self.sleep(delay)
            waited += delay
            self._check_stop()


def _user_name(user: str, domain: str) -> str:
    name, _, user_domain = user.partition("@")
    if user_domain and user_domain.lower() != domain:
        raise ConfigError("users", f"{user!r} is not in the account's domain {domain}")
    return name


def _readable_fields(parsed: ParsedMessage) -> dict:
    """The header fields of a message that failed, each one that can still be read."""
    out = {}
    for name, header in (
        ("message_id", "Message-ID"),
        ("from", "From"),
        ("to", "To"),
        ("subject", "Subject"),
        ("date", "Date"),
    ):
        with contextlib.suppress(Exception):  # this one is unreadable too: left out
            out[name] = parsed.header(header)
    return out


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text)[:80]


def epoch(value: datetime) -> float:
    return as_utc(value).timestamp()
