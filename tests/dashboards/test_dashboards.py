"""The dashboards' searches and the search-time props, read by a parser of our own
(dashboards/spl.py; there is no Splunk here: docs/operations.md, "Dashboards").

- Every time a search parses carries its offset (`%z`, the value's `Z` made `+0000`):
  a literal `Z` makes strptime read UTC times in the viewer's time zone.
- A base search that panels post-process is transforming: Splunk keeps only the
  first 500,000 events of a non-transforming base search and cuts silently.
- The mailbox dashboard's budget counts what the budget counts: the domain's
  reservation records of the UTC day, refused requests included.
- apigee:sense:raw's timestamp rule reads the documented `2018-10-0917:04:48Z`.
"""

from __future__ import annotations

import os
import re
import time
from datetime import datetime, timezone

import pytest

from dashboards import spl

HOUR = 3600


@pytest.fixture
def viewer_in_los_angeles():
    """Python's strptime as Splunk's: a time without an offset is local time."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "America/Los_Angeles"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


def python_format(splunk_format: str) -> str:
    """Splunk's strptime directives as Python's (%6N: microseconds)."""
    return re.sub(r"%\d*N", "%f", splunk_format)


def apply_value(expression: str, value: str) -> str:
    """What the SPL value expression makes of the field's text: the two forms the
    add-on uses, `replace(f, "Z$", "+0000")` and `f." +0000"`, or the field itself."""
    replaced = re.fullmatch(r'replace\((\w+), "(.*?)", "(.*?)"\)', expression)
    if replaced:
        return re.sub(replaced.group(2), replaced.group(3), value)
    appended = re.fullmatch(r'(\w+)\s*\.\s*"(.*?)"', expression)
    if appended:
        return value + appended.group(2)
    assert re.fullmatch(r"\w+", expression), f"an expression this test cannot read: {expression}"
    return value


MOMENT = datetime(2026, 3, 8, 23, 30, 15, 250000, tzinfo=timezone.utc)


def sample(expression: str, fmt: str) -> tuple[str, float]:
    """A field value the add-on would write for this parse (UTC, ending in `Z` when the
    search turns `Z` into `+0000`, with no offset when it appends one), and its epoch."""
    python = python_format(fmt)
    if re.fullmatch(r'replace\(\w+, "Z\$", "\+0000"\)', expression):
        text = MOMENT.strftime(python.replace("%z", "Z"))
    elif re.fullmatch(r'\w+\s*\.\s*" \+0000"', expression):
        text = MOMENT.strftime(python.replace(" %z", ""))
    else:
        text = MOMENT.strftime(python)
    naive = python.replace("%z", "")
    epoch = datetime.strptime(MOMENT.strftime(naive), naive).replace(tzinfo=timezone.utc)
    return text, epoch.timestamp()


def time_parses() -> list[tuple[str, str, str]]:
    """(where, value expression, format) of every strptime of the dashboards' searches
    (macros expanded) and of props.conf's search-time EVALs."""
    found = [
        (search.where, value, fmt)
        for search in spl.searches()
        for value, fmt in spl.strptime_calls(search.query)
    ]
    for sourcetype, stanza in spl.read_conf(spl.DEFAULT / "props.conf").items():
        for key, expression in stanza.items():
            if key.startswith("EVAL-"):
                found += [
                    (f"props.conf [{sourcetype}] {key}", value, fmt)
                    for value, fmt in spl.strptime_calls(expression)
                ]
    return found


def test_the_parser_finds_the_time_parses_of_every_part():
    places = {where.split(":")[0].split(" [")[0] for where, _, _ in time_parses()}
    assert {"mailsec_health", "mailsec_ser_overview", "mailsec_mailbox_audit"} <= places
    assert "props.conf" in places


@pytest.mark.parametrize(("where", "value", "fmt"), time_parses())
def test_every_parsed_time_carries_its_offset(where, value, fmt, viewer_in_los_angeles):
    assert "%z" in fmt, f"{where}: {fmt!r} reads the time in the viewer's time zone"
    assert "Z" not in spl.literal_part(fmt), f"{where}: a literal Z in {fmt!r}"
    text, epoch = sample(value, fmt)
    parsed = datetime.strptime(apply_value(value, text), python_format(fmt))
    assert parsed.timestamp() == epoch, where  # whatever the viewer's time zone


def test_a_literal_z_would_be_read_in_the_viewer_time_zone(viewer_in_los_angeles):
    """What the test above guards against, shown on the format the dashboards had."""
    text, epoch = MOMENT.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), MOMENT.timestamp()
    naive = datetime.strptime(text, python_format("%Y-%m-%dT%H:%M:%S.%6NZ"))
    assert naive.timestamp() - epoch == 7 * HOUR  # Los Angeles in March: UTC-7


def base_searches() -> list[tuple[spl.Search, list[spl.Search]]]:
    every = spl.searches()
    return [
        (base, [s for s in every if s.view == base.view and s.base == base.id])
        for base in every
        if base.id and any(s.base == base.id and s.view == base.view for s in every)
    ]


def test_there_are_base_searches_to_check():
    assert "mailsec_sense_activity" in {base.view for base, _ in base_searches()}


@pytest.mark.parametrize(
    ("base", "posts"), base_searches(), ids=[b.where for b, _ in base_searches()]
)
def test_base_searches_are_transforming_and_feed_their_panels(base, posts):
    assert spl.is_transforming(base.query), f"{base.where}: {spl.commands(base.query)}"
    provided = spl.aggregation_outputs(base.query) | {"_time"}
    for post in posts:
        missing = spl.fields_used(post.query) - provided
        assert not missing, f"{post.where} reads {sorted(missing)}, not in the base's results"


def test_the_parser_tells_transforming_from_event_searches():
    assert not spl.is_transforming('index=main | dedup event_id | fields a b | search x="|"')
    assert spl.is_transforming("index=main | stats count by a")
    assert spl.is_transforming("| tstats count where index=main by sourcetype")
    assert not spl.is_transforming("index=main [search index=x | stats count] | table a")


def budget_search() -> spl.Search:
    [search] = [
        s
        for s in spl.searches()
        if s.view == "mailsec_mailbox_audit" and "mailsec_audit_budget" in s.query
    ]
    return search


def test_the_budget_panel_reads_the_budget_collection():
    from mailsec.audit.budget import COLLECTION

    assert spl.commands(budget_search().query)[0] == "inputlookup"
    transforms = spl.read_conf(spl.DEFAULT / "transforms.conf")["mailsec_audit_budget"]
    assert transforms["external_type"] == "kvstore"
    assert transforms["collection"] == COLLECTION
    assert "_key" in transforms["fields_list"]
    assert COLLECTION in spl.read_conf(spl.DEFAULT / "collections.conf")


def test_the_budget_panel_counts_the_reservations_of_the_utc_day(viewer_in_los_angeles):
    """Reservations by the budget itself around UTC midnight, a refused one included
    (it holds its slot), and Google's `exhausted` mark; the panel's rex and day test,
    run in Python, count today's slots in UTC, whatever the viewer's day is."""
    from audit.conftest import ClaimMemoryStore

    from mailsec.audit.budget import DailyBudget

    store = ClaimMemoryStore()
    now = [datetime(2026, 3, 8, 23, 58, tzinfo=timezone.utc).timestamp()]
    budget = DailyBudget(store, "Example.com", 100, "in1", clock=lambda: now[0])
    assert budget.reserve("alice") and budget.reserve("bob")  # yesterday (UTC)
    now[0] += 5 * 60  # 00:03 UTC: still the 8th in Los Angeles
    for purpose in ("alice", "bob", "refused by Google"):
        assert budget.reserve(purpose)
    budget.mark_exhausted_by_google()
    query = budget_search().query
    rex = re.search(r'rex field=_key "(.*?)"\n', query).group(1)
    pattern = re.compile(rex.replace("(?<", "(?P<").replace("\\\\", "\\"))
    today = 0
    for key in store.data:
        match = pattern.match(key)
        if not match or match.group("slot") is None:
            continue
        day = datetime.strptime(match.group("day") + " +0000", "%Y-%m-%d %z").timestamp()
        today += int(day // 86400 == now[0] // 86400)
    assert today == 3
    assert {m.group("domain") for m in map(pattern.match, store.data) if m} == {"example.com"}
    assert "where isnotnull(slot)" in query and "floor(now() / 86400)" in query


def splunk_time_regex(time_format: str) -> str:
    """Splunk's TIME_FORMAT as a regular expression (the directives the add-on uses)."""
    widths = {"%Y": r"(\d{4})", "%m": r"(\d{2})", "%d": r"(\d{2})", "%H": r"(\d{2})",
              "%M": r"(\d{2})", "%S": r"(\d{2})"}  # fmt: skip
    parts = re.split(r"(%[A-Za-z])", time_format)
    return "".join(widths.get(part, re.escape(part)) for part in parts)


def sense_raw_time(body: str) -> datetime:
    """_time as Splunk's index-time rules of apigee:sense:raw extract it."""
    stanza = spl.read_conf(spl.DEFAULT / "props.conf")["apigee:sense:raw"]
    assert stanza["TZ"] == "UTC"
    prefix = re.search(stanza["TIME_PREFIX"], body)
    assert prefix, "TIME_PREFIX does not match"
    lookahead = body[prefix.end() : prefix.end() + int(stanza["MAX_TIMESTAMP_LOOKAHEAD"])]
    match = re.match(splunk_time_regex(stanza["TIME_FORMAT"]), lookahead)
    assert match, f"TIME_FORMAT {stanza['TIME_FORMAT']!r} does not match {lookahead!r}"
    return datetime(*map(int, match.groups()), tzinfo=timezone.utc)


def test_sense_raw_reads_the_documented_timestamp_without_t():
    from sense.sender import encode, make_report

    report = make_report(2)
    report["text"]["metadata"]["reportTimestamp"] = "2018-10-0917:04:48Z"  # the document's
    for encoding in ("object", "body_string", "body_and_text_string"):
        body = encode(report, encoding).decode()
        assert sense_raw_time(body) == datetime(2018, 10, 9, 17, 4, 48, tzinfo=timezone.utc)


def test_sense_raw_with_a_t_is_left_to_the_search_time_macro():
    """Documented in props.conf and docs/sense_listener.md: no index-time match; the
    `mailsec_sense_expand` macro sets _time from reportTimestamp in both forms."""
    from sense.sender import encode, make_report

    body = encode(make_report(1), "object").decode()  # 2018-10-09T17:25:12Z
    with pytest.raises(AssertionError, match="does not match"):
        sense_raw_time(body)
    expand = spl.macros()["mailsec_sense_expand"]
    assert "report_timestamp" in expand and '"\\1T\\2"' in expand


def test_the_sense_feed_panel_counts_every_refusal_the_listener_logs():
    """A peer outside allowed_sources is reset right after accept() and logged as
    `action=source_refused` (no HTTP answer, hence no 403): the feed-health panel
    counts those lines with the refused requests, and only actions the listener logs."""
    (feed,) = [
        s
        for s in spl.searches()
        if s.view == "mailsec_sense_activity" and "refused_last_hour" in s.query
    ]
    counted = re.search(r"count\(eval\((.*?)\)\) as refused_last_hour", feed.query).group(1)
    actions = set(re.findall(r'action=="(\w+)"', counted))
    assert actions == {"request_rejected", "request_timed_out", "source_refused"}
    listener_code = "".join(
        path.read_text() for path in (spl.DEFAULT.parent / "bin/mailsec/sense").glob("*.py")
    )
    for action in actions:
        assert f"action={action} " in listener_code
        assert f"action={action}" in feed.query.split("| rex")[0]  # the lines are searched for
    assert "403" not in feed.query
