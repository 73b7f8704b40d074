"""`vault_export`: drives Google Vault mail exports from request to indexed messages.

One run (splunkd starts it every `interval` seconds):
1. find the matter: `matter_id`, or the one this input made (remembered; found again
   by name if the answer to its creation was lost), or make it;
2. give back in-progress slots a killed run held, and settle an export creation a
   killed run may have sent without recording it (found by name in the matter's
   export list, so it is never requested twice);
3. request the due whole-UTC-day windows, per user, each beginning where the
   previous ended, each only after one of the domain's in-progress slots was claimed;
   a 429 (a quota, or Google's 20-in-progress ceiling) ends creation for this run;
4. poll the open exports; stream every zip of a COMPLETED one into the message
   pipeline (nothing on disk; size and MD5 checked; a restart goes on after the last
   message written); delete it when asked; a FAILED one is requested again;
5. raise the `warning` three days before Google deletes an export not yet processed.

The checkpoint (KV store, keyed by input name) is saved after every step that
changed it, and for files after every batch of events written (docs/vault_export.md).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Callable, Optional

import requests

from mailsec.core.google_auth import AuthError, ServiceAccount, TokenProvider
from mailsec.core.mailbox.files import settled
from mailsec.core.mailbox.lifecycle import Lifecycle
from mailsec.core.mailbox.params import user_name
from mailsec.core.mailbox.watcher import MailboxWatcher
from mailsec.core.mailbox.windows import UserWindows
from mailsec.core.runtime import InputRun, Stopped
from mailsec.core.timeutil import UTC, parse_iso8601
from mailsec.vault.api import (
    SCOPES,
    ApiError,
    Export,
    NotFound,
    QuotaExceeded,
    VaultApi,
    rfc3339,
)
from mailsec.vault.config import VaultAccount, VaultInputConfig
from mailsec.vault.slots import COLLECTION as SLOTS_COLLECTION
from mailsec.vault.slots import InProgressSlots
from mailsec.vault.zip_reader import ZipReader, describe

DELETED_AFTER = timedelta(days=15)  # Google deletes an export 15 days after creation
WARN_BEFORE = timedelta(days=3)
MAX_FILE_ATTEMPTS = 3
MAX_WINDOW_RETRIES = 3
# runs that find a COMPLETED export listing no zip before it is taken as broken
NO_ZIP_POLLS = 3
DAY = "%Y-%m-%d"


def run(run: InputRun) -> None:
    VaultExportService(run).run()


def _day(value: datetime) -> str:
    return value.strftime(DAY)


def _parse_day(text: str) -> datetime:
    return datetime.strptime(text, DAY).replace(tzinfo=UTC)


def _midnight(value: datetime) -> datetime:
    return value.replace(hour=0, minute=0, second=0, microsecond=0)


class VaultExportService(MailboxWatcher):
    def __init__(
        self,
        run: InputRun,
        clock: Optional[Callable[[], float]] = None,
        sleep: Optional[Callable[[float], Any]] = None,
    ) -> None:
        super().__init__(run, clock, sleep)
        self.config = VaultInputConfig.from_params(run.params)
        self.account = VaultAccount.from_fields(
            run.load_account("google_account", self.config.account)
        )
        self.domain = self.account.domain
        self.users = tuple(
            f"{user_name(user, self.domain)}@{self.domain}" for user in self.config.users
        )
        self.lifecycle = Lifecycle(
            run.sink,
            self.domain,
            run.name,
            self.config.index,
            self.clock,
            api="vault",
            id_namespace=("vault",),
        )

    # -- the run ------------------------------------------------------------
    def run(self) -> None:
        service_account = ServiceAccount.from_json(self.account.service_account_json)
        self.state = self._load_state()
        http = self._http()
        self.download_http = self._http()  # the download thread's own session
        try:
            tokens = TokenProvider(
                http,
                service_account,
                self.account.admin_email,
                self.account.token_url,
                SCOPES,
                clock=self.clock,
            )
            self.http = http
            self.api = VaultApi(http, self.account.vault_url, self.account.storage_url, tokens)
            self.slots = InProgressSlots(
                self.run_.open_store(SLOTS_COLLECTION),
                self.domain,
                self.config.max_exports_in_progress,
                owner=self.run_.name,
                clock=self.clock,
            )
            self.windows = UserWindows(
                self.state["users"],
                self.config.export_every,
                self._first_begin,
                self._now,
                MAX_WINDOW_RETRIES,
                fmt=_day,
                parse=_parse_day,
            )
            self.files = self._file_indexer("vault", MAX_FILE_ATTEMPTS)
            self.zips = ZipReader(
                self.api, http, self.download_http, self.files, self.lifecycle, self._save,
                self.run_.stop, self.log,
            )  # fmt: skip
            self.matter = self._matter()
            if self.matter is None:
                return
            self._release_unknown_slots()
            if self._settle_creation_in_flight():
                self._create_due_exports()
                self._poll_open_exports()
                # exports that left IN_PROGRESS gave their slots back: use them now
                # rather than one interval later
                self._create_due_exports()
            else:
                self._poll_open_exports()
            self._log_in_progress()
        except Stopped:
            self.log.info("stop requested: progress is saved, the next run continues")
        finally:
            http.close()
            self.download_http.close()

    # -- state --------------------------------------------------------------
    def _first_begin(self) -> datetime:
        if self.config.first_begin_date is not None:
            return _midnight(self.config.first_begin_date)
        return _midnight(self._now()) - timedelta(days=1)

    def _emit_error(self, detail: Any, error: str, request: Optional[dict] = None, **fields):
        self.lifecycle.emit(self.lifecycle.event("error", request, detail, error=error, **fields))

    # -- 1. the matter ------------------------------------------------------
    def _matter(self) -> Optional[str]:
        """The matter's ID, or None (logged, one `error` event) when there is none to use."""
        wanted = self.config.matter_id or self.state.get("matter_id")
        try:
            if wanted:
                state = self.api.matter_state(wanted)
                if state == "OPEN":
                    return wanted
                problem = f"matter {wanted} is {state}, not OPEN"
            else:
                return self._own_matter()
        except NotFound:
            problem = f"matter {wanted} does not exist (or the admin has no access to it)"
        except (ApiError, requests.RequestException) as error:
            self.log.error("vault_matter_unavailable matter=%s: %s", wanted, describe(error))
            return None
        fix = (
            "set matter_id to an open matter, or leave it empty"
            if self.config.matter_id
            else "reopen it in Vault, or delete this input's checkpoint"
        )
        self._emit_error(("matter", wanted, problem), f"{problem}: {fix}", matter_id=wanted)
        self.log.error("vault_matter_unusable %s: %s", problem, fix)
        return None

    def _matter_name(self) -> str:
        return f"TA_mailsec vault_export {self.run_.name}"

    def _own_matter(self) -> str:
        """The matter named after this input: found (a lost creation answer), or made."""
        name = self._matter_name()
        for matter in self.api.list_matters():
            if isinstance(matter, dict) and matter.get("name") == name and matter.get("matterId"):
                matter_id = str(matter["matterId"])
                break
        else:
            matter_id = self.api.create_matter(
                name, "Mail exports requested by the Splunk add-on TA_mailsec (vault_export)"
            )
            self.log.info("vault_matter_created matter=%s name=%r", matter_id, name)
        self.state["matter_id"] = matter_id
        self._save()
        return matter_id

    # -- 2/3. creating exports ----------------------------------------------
    def _release_unknown_slots(self) -> None:
        known = {r.get("slot") for r in self.state["requests"].values()}
        creating = self.state.get("creating")
        if creating:
            known.add(creating.get("slot"))
        released = self.slots.release_unknown(known)
        if released:
            self.log.info("gave back %d in-progress slot(s) an interrupted run held", released)

    def _export_name(self, user: str, begin: str, end: str) -> str:
        retries = self.windows.user(user).get("retries", {}).get(f"{begin}|{end}", 0)
        name = f"TA_mailsec {self.run_.name} {user} {begin}..{end}"
        return name + (f" retry {retries}" if retries else "")

    def _settle_creation_in_flight(self) -> bool:
        """False when an export creation in flight could not be settled: then none
        may be requested in this run (the same window could be requested twice)."""
        pending = self.state.get("creating")
        if not pending:
            return True
        try:
            found = next(
                (e for e in self.api.list_exports(self.matter) if e.name == pending["name"]), None
            )
        except (ApiError, requests.RequestException, AuthError) as error:
            self.log.error(
                "cannot settle export %r of an interrupted run: %s; no export is "
                "requested in this run",
                pending["name"],
                describe(error),
            )
            return False
        if found is not None and found.id not in self.state["requests"]:
            self.log.info("found export id=%s sent by an interrupted run", found.id)
            self._record_created(pending, found)
        else:
            self.slots.release(pending.get("slot"))
            self.state.pop("creating", None)
            self._save()
        return True

    def _create_due_exports(self) -> None:
        if self.state.get("creating"):
            return  # an answer was lost in this run: settled by the next run first
        super()._create_due_exports()

    def _query(self, user: str, begin: str, end: str) -> dict:
        query: dict = {
            "corpus": "MAIL",
            "dataScope": self.config.data_scope,
            "method": "ACCOUNT",
            "accountInfo": {"emails": [user]},
            "startTime": rfc3339(_parse_day(begin)),
            "endTime": rfc3339(_parse_day(end)),
            "timeZone": "UTC",
            "mailOptions": {"excludeDrafts": self.config.exclude_drafts},
        }
        if self.config.terms:
            query["terms"] = self.config.terms
        return query

    def _create_one(self, user: str, begin: str, end: str) -> bool:
        """Request one window; False when no more may be requested in this run."""
        name = self._export_name(user, begin, end)
        slot = self.slots.claim(name)
        if slot is None:
            self.log.info(
                "vault_ceiling_reached max_exports_in_progress=%d: window %s..%s of %s "
                "is requested on a later run",
                self.slots.limit,
                begin,
                end,
                user,
            )
            return False
        pending = {
            "user": user,
            "begin": begin,
            "end": end,
            "name": name,
            "slot": slot,
            "at": self.clock(),
        }
        self.state["creating"] = pending
        self._save()
        body = {
            "name": name,
            "query": self._query(user, begin, end),
            "exportOptions": {
                "mailOptions": {"exportFormat": "MBOX"},
                "region": self.config.region,
            },
        }
        try:
            created = self.api.create_export(self.matter, body)
        except AuthError as error:
            # no token, so nothing was sent (a 401 answer created nothing either)
            self.slots.release(slot)
            self.state.pop("creating", None)
            self._save()
            self.log.error(
                "window %s..%s of %s is requested on a later run: %s", begin, end, user, error
            )
            return False
        except requests.RequestException as error:
            # sent, and maybe created: `creating` stays; the next run looks for the
            # export by name before asking for the window again
            self.log.error(
                "export %r: no answer (%s); the next run checks whether Google created it",
                name,
                type(error).__name__,
            )
            return False
        except QuotaExceeded as error:
            self.slots.release(slot)
            self.state.pop("creating", None)
            self._save()
            self.log.warning(
                "vault_quota_exceeded window %s..%s of %s is requested on a later run: %s",
                begin,
                end,
                user,
                error,
            )
            return False
        except ApiError as error:
            if error.status is None or error.status >= 500:
                self.log.error(
                    "export %r: %s; the next run checks whether Google created it", name, error
                )
                return False
            self.slots.release(slot)
            self.state.pop("creating", None)
            self._window_refused(user, begin, end, str(error))
            return True
        self._record_created(pending, created)
        return True

    def _window_refused(self, user: str, begin: str, end: str, error: str) -> None:
        retry = self.windows.retry_later(user, begin, end)
        self._emit_error(
            (user, begin, end, "create", retry),
            f"Vault refused the export of {begin}..{end}: {error}",
            user=user,
            begin_date=begin,
            end_date=end,
        )
        if retry is None:
            self.lifecycle.window_given_up(user, begin, end, MAX_WINDOW_RETRIES + 1, error)
        self._save()

    def _record_created(self, pending: dict, created: Export) -> None:
        user, begin, end = pending["user"], pending["begin"], pending["end"]
        retries = self.windows.created(user, begin, end)
        request = {
            "id": created.id,
            "name": created.name or pending["name"],
            "user": user,
            "begin": begin,
            "end": end,
            "status": created.status,
            "create_time": created.create_time or rfc3339(self._now()),
            "slot": pending.get("slot"),
            "retries": retries,
            "files": {},
        }
        self.state["requests"][created.id] = request
        self.state.pop("creating", None)
        self.lifecycle.emit(self.lifecycle.event("created", request, None))
        self._save()
        self.log.info(
            "vault_export_created export_id=%s user=%s begin=%s end=%s",
            created.id,
            user,
            begin,
            end,
        )

    # -- 4. polling and processing ------------------------------------------
    def _poll_open_exports(self) -> None:
        for export_id in list(self.state["requests"]):
            self.run_.check_stop()
            request = self.state["requests"][export_id]
            if request.get("phase") == "deleting":
                self._delete(request)
                continue
            try:
                current = self.api.get_export(self.matter, export_id)
            except NotFound:
                self._gone(request)
                continue
            except (ApiError, requests.RequestException, AuthError) as error:
                self.log.error("status of export_id=%s failed: %s", export_id, describe(error))
                continue
            self._on_status(request, current)

    def _on_status(self, request: dict, current: Export) -> None:
        status = current.status
        if status != request["status"]:
            previous = request["status"]
            request["status"] = status
            if status != "IN_PROGRESS":
                self.slots.release(request.pop("slot", None))
            stats = current.stats
            self.lifecycle.emit(
                self.lifecycle.event(
                    "status",
                    request,
                    status,
                    previous_status=previous,
                    exported_messages=stats.get("exportedArtifactCount"),
                    total_messages=stats.get("totalArtifactCount"),
                    size_bytes=stats.get("sizeInBytes"),
                )
            )
            self._save()
        if status == "COMPLETED":
            self._process_completed(request, current)
        elif status == "FAILED":
            self._failed(request)
        elif status != "IN_PROGRESS":
            self.log.warning("export_id=%s has unknown status %r", request["id"], status)
        self._maybe_warn(request)

    def _failed(self, request: dict) -> None:
        self._request_again(
            request, "FAILED", "Google reports the export failed (status FAILED)", "status FAILED"
        )

    def _request_again(self, request: dict, detail: Any, problem: str, reason: str) -> None:
        """The export cannot give the window's mail: an `error` event, the window is
        requested again (up to MAX_WINDOW_RETRIES times, then given up), and the
        export forgotten (not deleted)."""
        retry = self.windows.redo(
            request["user"], request["begin"], request["end"], request.get("retries", 0)
        )
        self._emit_error(
            detail,
            f"{problem}; "
            + ("the window is requested again" if retry else "the window is given up"),
            request,
        )
        if retry is None:
            self._given_up(request, reason)
        self._forget(request)

    def _given_up(self, request: dict, reason: str) -> None:
        self.lifecycle.window_given_up(
            request["user"],
            request["begin"],
            request["end"],
            MAX_WINDOW_RETRIES + 1,
            reason,
            request["id"],
        )

    def _gone(self, request: dict) -> None:
        """404: Google deleted the export (15 days after creation), or someone did.
        Unless every zip was processed, the window is requested again: what was
        already written is written again under the new export's id
        (docs/vault_export.md, "Behaviour on errors")."""
        self.slots.release(request.pop("slot", None))
        written = sum(
            member.get("written", 0)
            for entry in request["files"].values()
            for member in entry.get("members", {}).values()
        )
        request["status"] = "DELETED"
        self.lifecycle.emit(self.lifecycle.event("expired", request, None, messages=written))
        if not _processed(request):
            retry = self.windows.redo(
                request["user"], request["begin"], request["end"], request.get("retries", 0)
            )
            if retry is None:
                self._given_up(request, "deleted before it was processed")
        self._forget(request)

    def _forget(self, request: dict) -> None:
        self.slots.release(request.get("slot"))
        self.state["requests"].pop(request["id"], None)
        self._save()

    def _created_at(self, request: dict) -> Optional[datetime]:
        try:
            return parse_iso8601(request.get("create_time") or "")
        except ValueError:
            return None

    def _maybe_warn(self, request: dict) -> None:
        if request.get("warned") or request["id"] not in self.state["requests"]:
            return
        created = self._created_at(request)
        if created is None:
            return
        deleted_at = created + DELETED_AFTER
        if self._now() >= deleted_at - WARN_BEFORE:
            when = deleted_at.strftime("%Y-%m-%dT%H:%M:%SZ")
            self.lifecycle.emit(
                self.lifecycle.event(
                    "warning",
                    request,
                    None,
                    error=f"export not fully processed; Google deletes it at {when}",
                    expires=when,
                )
            )
            request["warned"] = True
            self._save()

    def _process_completed(self, request: dict, current: Export) -> None:
        zips = [f for f in current.files if f.name.lower().endswith(".zip")]
        others = [f.name for f in current.files if not f.name.lower().endswith(".zip")]
        if others and not request.get("others_logged"):
            self.log.info(
                "export_id=%s: %d file(s) besides the mail zips (metadata, counts, "
                "checksums) are not read: %s",
                request["id"],
                len(others),
                ", ".join(others)[:500],
            )
            request["others_logged"] = True
        request["number_of_files"] = len(zips)
        if not zips:
            self._no_zip(request, current)
            return
        request.pop("no_zip_polls", None)
        entries = request["files"]
        for item in zips:
            entry = entries.setdefault(item.name, {"attempts": 0, "members": {}})
            if settled(entry):
                continue
            self.run_.check_stop()
            self.zips.read(request, item, entry, self._export_time(request))
        if all(entries.get(f.name, {}).get("done") for f in zips):
            if self.config.delete_after_download:
                request["phase"] = "deleting"
                self._save()
                self._delete(request)
            else:
                self._forget(request)

    def _no_zip(self, request: dict, current: Export) -> None:
        """COMPLETED, yet no zip listed (no cloudStorageSink, or no `.zip` object):
        not ready to read. Polled again on the next runs; after NO_ZIP_POLLS of them,
        the window is requested again, unless Vault counts no message in it. Never
        deleted: the files may still come."""
        polls = request.get("no_zip_polls", 0) + 1
        request["no_zip_polls"] = polls
        exported = current.stats.get("exportedArtifactCount")
        total = current.stats.get("totalArtifactCount")
        if polls < NO_ZIP_POLLS:
            self._save()
            self.log.warning(
                "export_id=%s is COMPLETED but lists no zip file (poll %d of %d): "
                "polled again on the next run",
                request["id"],
                polls,
                NO_ZIP_POLLS,
            )
        elif exported == 0 and total == 0:
            # a day without mail: there is nothing to read
            self.log.info(
                "export_id=%s is COMPLETED with no message and no zip: window %s..%s of %s "
                "holds no mail",
                request["id"],
                request["begin"],
                request["end"],
                request["user"],
            )
            self._forget(request)
        else:
            self._request_again(
                request,
                ("no_zip", polls),
                f"the export is COMPLETED but lists no zip file after {polls} polls",
                "no zip listed",
            )

    def _export_time(self, request: dict) -> datetime:
        return self._created_at(request) or self._now()

    # -- deletion -----------------------------------------------------------
    def _delete(self, request: dict) -> None:
        try:
            self.api.delete_export(self.matter, request["id"])
        except NotFound:
            pass  # already gone
        except (ApiError, requests.RequestException, AuthError) as error:
            self.log.error(
                "delete of export_id=%s failed: %s; the next run tries again",
                request["id"],
                describe(error),
            )
            return
        request["status"] = "DELETED"
        messages = sum(
            member.get("messages", 0)
            for entry in request["files"].values()
            for member in entry.get("members", {}).values()
        )
        self.lifecycle.emit(self.lifecycle.event("deleted", request, None, messages=messages))
        self._forget(request)

    # -- health -------------------------------------------------------------
    def _log_in_progress(self) -> None:
        held = self.slots.held()
        mine = sum(1 for record in held.values() if record.get("owner") == self.run_.name)
        self.log.info(
            "vault_in_progress domain=%s in_progress=%d mine=%d max_exports_in_progress=%d "
            "org_ceiling=20",
            self.domain,
            len(held),
            mine,
            self.slots.limit,
        )


def _processed(request: dict) -> bool:
    """Every zip of the export listed and read to its end."""
    files = request["files"].values()
    return bool(request.get("number_of_files")) and (
        len(files) >= request["number_of_files"] and all(entry.get("done") for entry in files)
    )
