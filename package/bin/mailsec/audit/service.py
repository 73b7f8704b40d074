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

The window plan, the per-file resume state, the message pipeline and the lifecycle
events are the ones vault_export uses too (mailsec.core.mailbox); what is this
API's own stays here: the key upload, the budget, the Atom API, gpg.
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timedelta
from typing import Any, Callable, Optional

import requests

from mailsec.audit.api import ApiError, AuditApi, ExportRequest, HostileXml, QuotaExceeded
from mailsec.audit.auth import AuthError, ServiceAccount, TokenProvider
from mailsec.audit.budget import COLLECTION as BUDGET_COLLECTION
from mailsec.audit.budget import DailyBudget
from mailsec.audit.config import AuditInputConfig, GoogleAccount
from mailsec.audit.decrypt import DecryptError, GnupgSession, KeyUnusable
from mailsec.audit.download import DownloadError, download, work_root
from mailsec.core.mailbox.files import new_entry, settled
from mailsec.core.mailbox.lifecycle import Lifecycle
from mailsec.core.mailbox.params import user_name
from mailsec.core.mailbox.pipeline import NotAnMbox
from mailsec.core.mailbox.watcher import MailboxWatcher
from mailsec.core.mailbox.windows import UserWindows
from mailsec.core.params import ConfigError
from mailsec.core.runtime import InputRun, Stopped
from mailsec.core.timeutil import UTC, as_utc, format_google, parse_google

WARN_AFTER = timedelta(days=18)
EXPIRES_AFTER = timedelta(days=21)
MAX_FILE_ATTEMPTS = 3  # a file gpg cannot read is retried on this many runs
MAX_WINDOW_RETRIES = 3  # an export answered ERROR is requested again this many times
DELETE_BACKOFF = 2.0  # seconds, doubled after every MARKED_DELETE
DELETE_BACKOFF_MAX = 3600.0
DELETE_WAIT_PER_RUN = 120.0  # beyond this, the next run carries on


def run(run: InputRun) -> None:
    AuditExportService(run).run()


class AuditExportService(MailboxWatcher):
    def __init__(
        self,
        run: InputRun,
        clock: Optional[Callable[[], float]] = None,
        sleep: Optional[Callable[[float], Any]] = None,
        workdir_base: Optional[str] = None,
    ) -> None:
        super().__init__(run, clock, sleep)
        self.workdir_base = workdir_base or run.extras.get("workdir_base")
        self.config = AuditInputConfig.from_params(run.params)
        self.account = GoogleAccount.from_fields(
            run.load_account("google_account", self.config.account)
        )
        self.account.require_pgp()
        self.domain = self.account.domain
        self.users = tuple(user_name(user, self.domain) for user in self.config.users)
        self._gpg: Optional[GnupgSession] = None
        self.refused_xml = 0  # answers refused in this run, counted in the log
        self.skipped = 0  # requests or files set aside by an unforeseen error, logged

    # -- the run ------------------------------------------------------------
    def run(self) -> None:
        service_account = ServiceAccount.from_json(self.account.service_account_json)
        self.state = self._load_state()
        self.lifecycle = Lifecycle(
            self.run_.sink, self.domain, self.run_.name, self.config.index, self.clock, api="audit"
        )
        self.windows = UserWindows(
            self.state["users"],
            self.config.export_every,
            first_begin=lambda: self.config.first_begin_date or (self._now() - timedelta(days=1)),
            now=self._now,
            max_retries=MAX_WINDOW_RETRIES,
        )
        self.files = self._file_indexer("audit", MAX_FILE_ATTEMPTS)
        root = work_root(self.run_.name, self.workdir_base)
        http = self._http()
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
            self._prune_budget()
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

    # -- refused answers ----------------------------------------------------
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
        self.lifecycle.emit(
            self.lifecycle.event(
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
                    and request.date("beginDate") == parse_google(pending["begin"])
                    and request.date("endDate") == parse_google(pending["end"])
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
            self.lifecycle.emit(
                self.lifecycle.event(
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
            # the next windows go on: no gap
            if self.windows.retry_later(user, begin, end) is None:
                self._given_up(window["user"], begin, end, f"refused by Google: {error}")
            self._save()
            self.log.error("export request for user=%s %s..%s failed: %s", user, begin, end, error)
            return True
        self._record_created(user, pending, created)
        self.state.pop("creating", None)
        self._save()
        return True

    def _record_created(self, user: str, window: dict, created: ExportRequest) -> None:
        retries = self.windows.created(user, window["begin"], window["end"])
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
        self.lifecycle.emit(self.lifecycle.event("created", request, None))
        self.log.info(
            "audit_export_created request_id=%s user=%s begin=%s end=%s",
            created.request_id,
            request["user"],
            window["begin"],
            window["end"],
        )

    def _prune_budget(self) -> None:
        """Once a UTC day: the budget's reservation records of earlier days go, so
        the shared collection stays at about two days of records."""
        day = self.budget.day()
        if self.state.get("budget_pruned") == day:
            return
        try:
            kept = self.budget.prune()
        except Exception as error:  # housekeeping: the next day tries again
            self.log.warning(
                "could not delete old budget records of domain=%s (%s)",
                self.domain,
                type(error).__name__,
            )
            return
        self.log.info("deleted budget records of domain=%s before %s", self.domain, kept)
        self.state["budget_pruned"] = day
        self._save()

    def _budget_exhausted(self, reason: str) -> None:
        day = self.budget.day()
        if self.state.get("budget_event_day") != day:
            self.lifecycle.emit(
                self.lifecycle.event(
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
            self.run_.check_stop()
            request = self.state["requests"][request_id]
            try:
                self._poll_one(request)
            except (Stopped, ConfigError, AuthError):
                raise  # the whole run stops: its reason is the input's, not the request's
            except Exception as error:  # one request never holds up the others
                self._unexpected(request, None, error)

    def _poll_one(self, request: dict) -> None:
        request_id = request["id"]
        if request.get("phase") == "deleting":
            self._delete(request)
            return
        try:
            current = self.api.status(request["name"], request_id)
        except HostileXml as error:
            self._refused("status", error, request)
            return
        except ApiError as error:
            self.log.error("status of request_id=%s failed: %s", request_id, error)
            return
        self._on_status(request, current)

    def _unexpected(self, request: dict, file_index: Optional[int], error: Exception) -> None:
        """Something in Google's answer this code did not foresee: an `error` event and
        a log line with the request (and file); the run goes on with the others, and
        this request or file is tried again on the next run."""
        self.skipped += 1
        where = "" if file_index is None else f" file={file_index}"
        text = f"{type(error).__name__}: {error}"[:300]
        self.log.error(
            "audit_skipped request_id=%s%s skipped_this_run=%d: %s",
            request["id"],
            where,
            self.skipped,
            text,
        )
        self.lifecycle.emit(
            self.lifecycle.event(
                "error",
                request,
                ("unexpected", file_index, type(error).__name__, self.clock()),
                file_index=file_index,
                error=f"skipped until the next run: {text}",
            )
        )

    def _on_status(self, request: dict, current: ExportRequest) -> None:
        status = current.status or "UNKNOWN"
        if status != request["status"]:
            previous = request["status"]
            request["status"] = status
            request["number_of_files"] = current.number_of_files
            if current.properties.get("completedDate"):
                request["completed"] = current.properties["completedDate"]
            self.lifecycle.emit(
                self.lifecycle.event("status", request, status, previous_status=previous)
            )
            self._save()
        if status == "PENDING":
            return
        if status == "COMPLETED":
            self._process_completed(request, current)
        elif status == "ERROR":
            self.lifecycle.emit(
                self.lifecycle.event(
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
            self.lifecycle.emit(self.lifecycle.event("expired", request, None, messages=written))
            if not written:
                self._redo_window(request)
            self._forget(request)
        elif status in ("DELETED", "MARKED_DELETE"):
            # deleted by someone else before this input processed it
            self._forget(request)
        else:
            self.log.warning("request_id=%s has unknown status %r", request["id"], status)

    def _redo_window(self, request: dict) -> None:
        retries = request.get("retries", 0)
        if self.windows.redo(request["name"], request["begin"], request["end"], retries) is None:
            reason = f"its last export {request['id']} ended {request.get('status')}"
            self._given_up(request["user"], request["begin"], request["end"], reason, request)

    def _given_up(
        self, user: str, begin: str, end: str, reason: str, request: Optional[dict] = None
    ) -> None:
        """A window no export will cover: an `error` event with given_up=true (the
        health dashboard lists them) as well as the log line."""
        attempts = MAX_WINDOW_RETRIES + 1
        request_id = request["id"] if request else None
        self.lifecycle.window_given_up(user, begin, end, attempts, reason[:200], request_id)
        self.log.error(
            "audit_window_given_up user=%s begin=%s end=%s attempts=%d: %s",
            user,
            begin,
            end,
            attempts,
            reason[:200],
        )

    def _forget(self, request: dict) -> None:
        self.state["requests"].pop(request["id"], None)
        self._save()

    def _process_completed(self, request: dict, current: ExportRequest) -> None:
        urls = current.file_urls
        request["number_of_files"] = len(urls)
        files = request["files"]
        for index, url in enumerate(urls):
            entry = files.setdefault(str(index), new_entry())
            if settled(entry):
                continue
            self.run_.check_stop()
            try:
                self._process_file(request, index, url, entry)
            except (Stopped, ConfigError, AuthError):
                raise
            except Exception as error:  # one file never holds up the others
                self._unexpected(request, index, error)
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

    def _completed_at(self, request: dict) -> Optional[datetime]:
        """The export's completedDate, read leniently (seconds, an ISO 'T'); None
        when absent or unreadable, which is logged: messages without a Date then
        take the run's time, and no 18-day warning can be computed."""
        completed = request.get("completed")
        if not completed:
            return None
        try:
            return parse_google(completed)
        except ValueError:
            self.log.warning(
                "audit_date_skipped request_id=%s completedDate=%r: unreadable, not used",
                request["id"],
                str(completed)[:64],
            )
            return None

    def _maybe_warn(self, request: dict) -> None:
        completed_at = self._completed_at(request)
        if completed_at is None or request.get("warned"):
            return
        if self._now() - completed_at >= WARN_AFTER:
            expires = completed_at + EXPIRES_AFTER
            self.lifecycle.emit(
                self.lifecycle.event(
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
            self.files.error(
                request, index, entry, f"download: {error}", permanent=False, counted=not url
            )
            return
        try:
            entry["bytes"] = size
            self.lifecycle.emit(
                self.lifecycle.event("downloaded", request, index, file_index=index, bytes=size)
            )
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
        export_time = self._completed_at(request) or self._now()
        try:
            self.files.index(
                request, index, entry, self._gnupg().decrypt_chunks(path), export_time, "decrypted"
            )
        except KeyUnusable as error:
            # the account's key or passphrase is wrong: not the file's fault, not counted
            self.files.error(request, index, entry, f"decrypt: {error}", permanent=False)
        except (DecryptError, NotAnMbox) as error:
            self.files.error(
                request, index, entry, f"decrypt: {error}", permanent=False, counted=True
            )

    def _gnupg(self) -> GnupgSession:
        """One throw-away GnuPG home per run, made when the first file needs it."""
        if self._gpg is None:
            self._gpg = GnupgSession(
                self.account.pgp_private_key,
                self.account.pgp_passphrase,
                self.root,
                stop=self.run_.stop,
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
                self.lifecycle.emit(
                    self.lifecycle.event("deleted", request, None, messages=messages)
                )
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
            self.run_.check_stop()


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text)[:80]


def epoch(value: datetime) -> float:
    return as_utc(value).timestamp()
