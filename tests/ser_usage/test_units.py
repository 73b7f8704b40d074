"""ser_usage's readers of the vendor's answers (docs/ser_usage.md): both paging
metadata forms, renamed and unknown fields, bad values, repeated rows."""

from __future__ import annotations

import pytest

from mailsec.core.params import ConfigError
from mailsec.ser import usage as u
from mailsec.ser.config import SerUsageInputConfig


@pytest.mark.parametrize(
    ("answer", "pages"),
    [
        ({"metadata": {"pagination": {"currentPage": 1, "itemsPerPage": 100,
                                      "totalItemCount": 201, "totalPages": 3}}}, 3),
        ({"metadata": {"pagination": {"totalItemCount": "201", "itemsPerPage": "100"}}}, 3),
        ({"metadata": {"totalCount": 100}}, 1),
        ({"metadata": {"totalCount": "0"}}, 0),
        ({"metadata": {"pagination": {"totalItemCount": 50, "itemsPerPage": 1e-320}}}, None),
        ({"metadata": {}}, None),
        ({"data": []}, None),
        ([], None),
    ],
)  # fmt: skip
def test_total_pages_from_either_metadata_form(answer, pages):
    assert u.total_pages(answer, 100) == pages


def test_renamed_counters_are_read_under_each_name_and_unknown_fields_kept():
    rows = u.Rows()
    answer = {"data": [
        {"relayUserId": "r1", "name": "one", "totalMessages": "5", "blockedMessage": 2,
         "acceptedThroughput": "1024", "someNewField": "x", "day": "kept"},
        {"relayUserId": "r2", "name": "two", "requestedMessages": 3, "blockedMessages": 1},
    ]}  # fmt: skip
    assert u.add_relay_rows(rows, answer, u.RELAY_USAGE, "page") == 2
    one, two = rows.records["r1"], rows.records["r2"]
    assert (one["requested_messages"], one["blocked_messages"]) == (5, 2)
    assert (two["requested_messages"], two["blocked_messages"]) == (3, 1)
    assert one["accepted_throughput"] == 1024 and one["sent_messages"] == 0
    assert one["some_new_field"] == "x" and one["vendor_day"] == "kept"
    assert rows.problems == []


def test_bad_rows_are_skipped_or_counted_and_repeats_kept_once():
    rows = u.Rows()
    answer = {"data": [
        {"relayUserId": "r1", "name": "one", "sentMessages": "NaN"},
        "not an object",
        {"name": "no id"},
        {"relayUserId": "r1", "name": "one again", "sentMessages": 9},
    ]}  # fmt: skip
    u.add_relay_rows(rows, answer, u.RELAY_USAGE, "page")
    assert list(rows.records) == ["r1"]
    assert rows.records["r1"]["sent_messages"] == 0 and rows.records["r1"]["name"] == "one"
    assert len(rows.problems) == 4


def test_failures_name_the_relay_users_whose_delivery_failures_are_read():
    rows = u.Rows()
    answer = {"data": [
        {"relayUserId": "a", "name": "a", "deliveryFailureMessages": 2},
        {"relayUserId": "b", "name": "b", "deliveryFailureMessages": 0},
        {"relayUserId": "c", "name": "c"},  # the counter missing: asked anyway
    ]}  # fmt: skip
    u.add_relay_rows(rows, answer, u.RELAY_FAILURES, "page")
    assert [r["relay_user_id"] for r in rows.with_delivery_failures] == ["a", "c"]


def test_domain_rows_carry_the_relay_user_and_the_dsn_class():
    rows = u.Rows()
    user = {"relay_user_id": "a", "name": "A"}
    answer = {"data": [{"domain": "x.test", "dsn_code": "5.1.1", "details": "d", "count": "3"},
                       {"domain": "y.test", "dsnCode": "4.4.7", "count": 1},
                       {"domain": "z.test", "dsnCode": "", "count": 1}]}  # fmt: skip
    u.add_domain_rows(rows, answer, user, "page")
    classes = {k[1]: (r["dsn_code"], r["dsn_class"], r["count"]) for k, r in rows.records.items()}
    assert classes == {"x.test": ("5.1.1", "5.X.X", 3), "y.test": ("4.4.7", "4.X.X", 1),
                       "z.test": ("", "unknown", 1)}  # fmt: skip
    assert rows.records[("a", "x.test", "5.1.1")]["name"] == "A"


def test_equal_content_gives_equal_digests_whatever_the_order():
    a, b = u.Rows(), u.Rows()
    u.add_relay_rows(a, {"data": [{"relayUserId": "1"}, {"relayUserId": "2"}]}, u.RELAY_USAGE, "p")
    u.add_relay_rows(b, {"data": [{"relayUserId": "2"}, {"relayUserId": "1"}]}, u.RELAY_USAGE, "p")
    assert a.digest() == b.digest() != u.Rows().digest()


def test_reports_parameter_accepts_the_forms_and_a_conf_files_separators():
    config = SerUsageInputConfig.from_params({"account": "a", "reports": "overview|relay_usage"})
    assert config.reports == ("relay_usage", "overview")
    config = SerUsageInputConfig.from_params(
        {"account": "a", "reports": "relay_failures, overview"}
    )
    assert config.reports == ("relay_failures", "overview")
    assert len(SerUsageInputConfig.from_params({"account": "a"}).reports) == 4
    with pytest.raises(ConfigError) as refused:
        SerUsageInputConfig.from_params({"account": "a", "reports": "relay_usage|traffic"})
    assert refused.value.field == "reports" and "'traffic'" in str(refused.value)


def test_non_finite_values_of_unknown_fields_become_null_and_are_counted():
    rows = u.Rows()
    answer = {"data": [
        {"relayUserId": "r1", "name": "one", "newRate": float("nan"), "newMax": 1e400,
         "nested": {"a": [float("-inf"), 2]}, "fine": {"a": [1.5, "Infinity"]}},
    ]}  # fmt: skip
    u.add_relay_rows(rows, answer, u.RELAY_USAGE, "page")
    record = rows.records["r1"]
    assert record["new_rate"] is None and record["new_max"] is None
    assert record["nested"] == {"a": [None, 2]}
    assert record["fine"] == {"a": [1.5, "Infinity"]}  # a string is not a number
    assert len(rows.problems) == 3
    assert all("not a finite number; kept as null" in p for p in rows.problems)
