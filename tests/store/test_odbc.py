"""The ODBC store beyond the contract: URLs, drivers, Azure AD tokens, batches, and data round trips on PostgreSQL."""

from __future__ import annotations

import struct
import sys

import pyarrow as pa
import pytest

from sensorflow.backoff import Backoff
from sensorflow.records.dead_letters import DeadLetter, DeadLetterBatch
from sensorflow.store import StoreError, odbc, open_store
from sensorflow.store.dialects import POSTGRES, TSQL
from sensorflow.store.odbc_connect import (
    SQL_COPT_SS_ACCESS_TOKEN,
    access_token_attrs,
    import_pyodbc,
    parse_store_url,
)
from tests.support.builders import window_table

S = 1_000_000_000
T0 = 1_535_497_200 * S  # 2018-08-28T23:00:00Z


def windows(rows) -> pa.Table:
    """rows: (end_ns, device, tag, value)"""
    ends, devices, tags, values = zip(*rows)
    return window_table(ends, devices, tags, values)


@pytest.fixture
def pg_url(postgres_odbc) -> str:
    return f"postgresql+odbc:{postgres_odbc}"


@pytest.fixture
def store(pg_url):
    with open_store(pg_url) as s:
        s.create_schema()
        yield s


# -- URLs, drivers, credentials ------------------------------------------------


@pytest.mark.parametrize(
    ("url", "dialect", "string"),
    [
        ("postgresql+odbc:Driver={PostgreSQL Unicode};Server=db;Port=5432;Database=x;Uid=u;", POSTGRES,
         "Driver={PostgreSQL Unicode};Server=db;Port=5432;Database=x;Uid=u;"),
        ("mssql+odbc:Driver={ODBC Driver 18 for SQL Server};Server=tcp:a.database.windows.net,1433;PWD={p;w}}d}", TSQL,
         "Driver={ODBC Driver 18 for SQL Server};Server=tcp:a.database.windows.net,1433;PWD={p;w}}d};"),
        ("mssql+odbc://me:p%40ss@a.database.windows.net:1433/sensors?Encrypt=yes", TSQL,
         ("Driver={ODBC Driver 18 for SQL Server};Server=tcp:a.database.windows.net,1433;Database=sensors;"
          "UID=me;PWD=p@ss;Encrypt=yes;")),
        ("postgresql+odbc://postgres@127.0.0.1:5432/db?driver=PostgreSQL+ANSI", POSTGRES,
         "Driver={PostgreSQL ANSI};Server=127.0.0.1;Port=5432;Database=db;UID=postgres;"),
    ],
)
def test_store_urls(url, dialect, string):
    target = parse_store_url(url)
    assert target.dialect is dialect
    assert target.connection_string == string
    assert not target.azure_ad_token


def test_passwords_never_show():
    target = parse_store_url("mssql+odbc://me:s3cret@host/db")
    assert "s3cret" not in target.describe() and "s3cret" not in repr(target)
    assert "PWD=***" in target.describe()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mssql+odbc:", "empty ODBC connection string"),
        ("mssql+odbc:Driver={x;Server=y", "unclosed '{'"),
        ("mssql+odbc:Server=y;junk", "has no '='"),
        ("mssql+odbc://:1433/db", "names no host"),
        ("postgresql+odbc:Server=x;Authentication=ActiveDirectoryDefault", r"for mssql\+odbc stores only"),
        ("mssql+odbc:Server=x;UID=me;Authentication=ActiveDirectoryDefault", "takes no uid"),
    ],
)
def test_bad_store_urls_are_one_clear_error(url, message):
    with pytest.raises(StoreError, match=message):
        parse_store_url(url)


def test_azure_ad_default_is_ours_to_handle():
    target = parse_store_url(
        "mssql+odbc:Driver={ODBC Driver 18 for SQL Server};Server=tcp:a.database.windows.net;"
        "Authentication=ActiveDirectoryDefault;Encrypt=yes"
    )
    assert target.azure_ad_token
    assert "Authentication" not in target.connection_string  # the driver gets a token, not this keyword
    # Other Authentication modes are the driver's own.
    assert not parse_store_url("mssql+odbc:Server=x;Authentication=ActiveDirectoryMsi").azure_ad_token


def test_access_token_attribute_is_length_prefixed_utf16():
    attrs = access_token_attrs("eyJ0eXAi.x")
    packed = attrs[SQL_COPT_SS_ACCESS_TOKEN]
    assert SQL_COPT_SS_ACCESS_TOKEN == 1256
    (length,) = struct.unpack_from("<I", packed)
    assert length == len(packed) - 4 == 2 * len("eyJ0eXAi.x")
    assert packed[4:].decode("utf-16-le") == "eyJ0eXAi.x"


def test_a_missing_driver_names_the_package_to_install():
    pyodbc = import_pyodbc()
    assert "ODBC Driver 18 for SQL Server" not in pyodbc.drivers(), "this test needs a machine without msodbcsql18"
    with pytest.raises(StoreError, match="msodbcsql18") as raised:
        open_store("mssql+odbc:Driver={ODBC Driver 18 for SQL Server};Server=tcp:localhost,1;PWD=s3cret")
    assert "s3cret" not in str(raised.value)
    with pytest.raises(StoreError, match="odbc-postgresql"):
        open_store("postgresql+odbc:Driver={PostgreSQL Nonesuch};Server=127.0.0.1")


def test_missing_pyodbc_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyodbc", None)  # what `import pyodbc` meets when it is not installed
    with pytest.raises(StoreError, match=r"pip install 'sensorflow\[odbc\]'"):
        import_pyodbc()


def test_an_unreachable_server_fails_after_retries_without_the_password(postgres_server):
    from tests.support.azurite import free_port

    url = f"postgresql+odbc:Driver={{PostgreSQL Unicode}};Server=127.0.0.1;Port={free_port()};Database=x;Uid=u;Pwd=s3cret;"
    quick = odbc.RetryPolicy(budget_seconds=0.05, backoff=Backoff(first=0.01, cap=0.01))
    with pytest.raises(StoreError, match=r"connect failed .*\[08001\]") as raised:
        odbc.OdbcStore(url, retry_policy=quick)
    assert "s3cret" not in str(raised.value) and "Pwd=***" in str(raised.value)


# -- data on a real PostgreSQL -------------------------------------------------


def test_a_batch_larger_than_one_parameter_is_one_transaction(store, monkeypatch):
    monkeypatch.setattr(odbc, "ROWS_PER_PARAMETER", 100)
    good = windows([(T0 + i * S, "d", "t", float(i)) for i in range(250)])
    store.upsert_windows(good)
    assert store.summary().windows == 250
    # The third chunk breaks a NOT NULL column on the server: the chunks before it roll back too.
    broken = windows([(T0 + (1000 + i) * S, "d", "t", None if i == 220 else 1.0) for i in range(250)])
    with pytest.raises(StoreError, match="23502"):
        store.upsert_windows(broken)
    assert store.summary().windows == 250


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_numbers_are_refused_whole(store, bad):
    with pytest.raises(StoreError, match="SensorValues.Value holds NaN or an infinity"):
        store.upsert_windows(windows([(T0 + S, "d", "t", 1.0), (T0 + 2 * S, "d", "t", bad)]))
    assert store.summary().windows == 0


def test_a_key_twice_in_one_batch_keeps_the_last(store):
    store.upsert_windows(windows([(T0 + S, "d", "t", 1.0), (T0 + S, "d", "t", 2.0), (T0 + 2 * S, "d", "t", 3.0)]))
    got = store.read_windows([("d", "t")], T0, T0 + 9 * S)
    assert got["value"].to_pylist() == [2.0, 3.0]


def test_ids_are_case_sensitive_unicode_and_at_most_128_characters(store):
    ids = ["a", "A", "ä", "😀" * 128, " a"]
    store.upsert_windows(windows([(T0 + S, device, "t", float(i)) for i, device in enumerate(ids)]))
    got = store.read_windows([(d, "t") for d in ids], T0, T0 + S)
    assert sorted(zip(got["device"].to_pylist(), got["value"].to_pylist())) == sorted(zip(ids, map(float, range(5))))
    with pytest.raises(StoreError, match="longer than 128 characters"):
        store.upsert_windows(windows([(T0 + S, "x" * 129, "t", 1.0)]))


def test_times_round_trip_to_the_millisecond(store):
    last = (2**63 - 1) // 1_000_000 * 1_000_000  # 2262-04-11, the last ms an int64 of ns holds
    ends = [T0 + 5 * S + 123_000_000, 0, -10**18, last]  # ms precision, the epoch, 1938
    store.upsert_windows(windows([(end, "d", str(i), 1.5) for i, end in enumerate(ends)]))
    got = store.read_windows([("d", str(i)) for i in range(4)], -(2**63), 2**63 - 1)
    assert got["ts"].to_pylist() == ends


def test_reads_fetch_in_chunks(store, monkeypatch):
    monkeypatch.setattr(odbc, "FETCH_ROWS", 7)
    store.upsert_windows(windows([(T0 + i * S, "d", "t", float(i)) for i in range(1, 51)]))
    got = store.read_windows([("d", "t"), ("d", "t")], T0, T0 + 60 * S)  # a sensor named twice is read once
    assert got["value"].to_pylist() == [float(i) for i in range(1, 51)]


def test_dead_letters_keep_payload_bytes_and_raw_fields(store, postgres_server, postgres_odbc):
    letters = DeadLetterBatch.from_records(
        [
            DeadLetter("0", 7, 0, "bad_utf8", b"\xff\x00{"),
            DeadLetter("0", 8, 0, "bad_id: Device", b"{}", T0 - 10**18, "x" * 500, "t", None),  # 1986, a 500-char id
            DeadLetter("1", 9, 2, "late", None, T0 + S + 1, "1", "2", 3.5),
        ]
    )
    store.upsert_dead_letters(letters.table)
    assert store.summary().dead_letters == {"bad_utf8": 1, "bad_id": 1, "late": 1}
    pyodbc = import_pyodbc()
    with pyodbc.connect(postgres_odbc) as connection:
        rows = connection.execute(
            'SELECT "Partition", "Position", "Element", "Payload", "TS", "Device", "Value" FROM "DeadLetters" ORDER BY 1, 2'
        ).fetchall()
    assert [tuple(r) for r in rows] == [
        ("0", 7, 0, b"\xff\x00{", None, None, None),
        ("0", 8, 0, b"{}", odbc_datetime(T0 - 10**18), "x" * 500, None),
        ("1", 9, 2, None, odbc_datetime(T0 + S), "1", 3.5),  # TS floored to the millisecond
    ]


def odbc_datetime(ns: int):
    from sensorflow.store.odbc_rows import from_ns

    return from_ns(ns // 1_000_000 * 1_000_000)


def test_tables_keep_their_names_case(store, postgres_odbc):
    pyodbc = import_pyodbc()
    with pyodbc.connect(postgres_odbc) as connection:
        tables = {r[0] for r in connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()}
    assert tables == {"SensorValues", "SensorWrites", "DeadLetters", "Predictions", "Runs", "Leases", "Incidents", "StoreSettings"}
