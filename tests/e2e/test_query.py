"""`sessionize query`: SQL over the job's tables (DataFusion through
iceberg-datafusion), compared with what pyiceberg reads from the same table,
with partition pruning visible in `--stats`."""

import csv
import io
import json
import math
import re
import subprocess
from collections import defaultdict

import pytest

from conftest import catalog, read_table

TABLE = "sessions.user_sessions"
STATS = re.compile(r"files scanned: (\d+) of (\d+) \(sessions\.user_sessions\)")


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory, binary):
    """A bounded run over three days of events: three dates times ten bucket
    groups of partitions, so a filter on either column skips files."""
    base = tmp_path_factory.mktemp("query")
    events = base / "events.jsonl"
    subprocess.run(
        [str(binary), "generate", "--num-users", "1500", "--rate", "0.06", "--duration", "3d",
         "--seed", "17", "--output", str(events)],
        check=True,
    )
    warehouse = base / "wh"
    subprocess.run([str(binary), "run", "--input", str(events), "--warehouse", str(warehouse)],
                   check=True, capture_output=True)
    return warehouse


@pytest.fixture(scope="module")
def rows(warehouse):
    """Every session, as pyiceberg reads it."""
    return read_table(warehouse)


def query(run, warehouse, sql, *flags, check=True):
    return run("query", sql, "--warehouse", warehouse, *flags, check=check)


def pretty_rows(stdout: bytes) -> list:
    """The cells of a text table's rows (the header left out)."""
    lines = [line for line in stdout.decode().splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]


def per_date(rows) -> dict:
    """session_date -> (sessions, mean event count), from pyiceberg's rows."""
    counts = defaultdict(list)
    for row in rows:
        counts[row["session_date"].isoformat()].append(row["event_count"])
    return {day: (len(c), sum(c) / len(c)) for day, c in counts.items()}


def files_scanned(stderr: bytes) -> tuple:
    found = STATS.findall(stderr.decode())
    assert len(found) == 1, stderr.decode()
    return tuple(map(int, found[0]))


def test_the_issues_query_equals_pyiceberg(run, warehouse, rows):
    proc = query(run, warehouse, f"SELECT session_date, count(*), avg(event_count) "
                                 f"FROM {TABLE} GROUP BY 1 ORDER BY 1")
    got = pretty_rows(proc.stdout)
    expected = per_date(rows)
    assert len(expected) >= 3
    assert [day for day, _, _ in got] == sorted(expected)
    for day, count, mean in got:
        assert int(count) == expected[day][0]
        assert math.isclose(float(mean), expected[day][1], rel_tol=1e-9)


@pytest.mark.parametrize("name", ["user_sessions", "sessionize.sessions.user_sessions"])
def test_short_and_fully_qualified_names_work_too(run, warehouse, rows, name):
    proc = query(run, warehouse, f"SELECT count(*) AS n FROM {name}", "--format", "csv")
    assert list(csv.DictReader(io.StringIO(proc.stdout.decode()))) == [{"n": str(len(rows))}]


def test_csv_and_json_lines_parse_and_match(run, warehouse, rows):
    sql = (f"SELECT session_date, count(*) AS sessions, avg(event_count) AS mean_events "
           f"FROM {TABLE} GROUP BY session_date ORDER BY session_date")
    expected = per_date(rows)

    out = query(run, warehouse, sql, "--format", "csv").stdout.decode()
    got = list(csv.DictReader(io.StringIO(out)))
    assert [r["session_date"] for r in got] == sorted(expected)
    for r in got:
        assert int(r["sessions"]) == expected[r["session_date"]][0]
        assert math.isclose(float(r["mean_events"]), expected[r["session_date"]][1],
                            rel_tol=1e-9)

    out = query(run, warehouse, sql, "--format", "json").stdout.decode()
    got = [json.loads(line) for line in out.splitlines()]
    assert [r["session_date"] for r in got] == sorted(expected)
    for r in got:
        assert r["sessions"] == expected[r["session_date"]][0]
        assert math.isclose(r["mean_events"], expected[r["session_date"]][1], rel_tol=1e-9)

    # Whole rows, lists too, in JSON lines.
    out = query(run, warehouse, f"SELECT session_id, uuid, event_count, pages_visited, "
                                f"end_reason FROM {TABLE}", "--format", "json").stdout.decode()
    got = sorted((json.loads(line) for line in out.splitlines()), key=lambda r: r["session_id"])
    want = sorted(({k: r[k] for k in ("session_id", "uuid", "event_count", "pages_visited",
                                       "end_reason")} for r in rows),
                  key=lambda r: r["session_id"])
    assert got == want


def test_csv_says_what_to_do_about_lists(run, warehouse):
    proc = query(run, warehouse, f"SELECT pages_visited FROM {TABLE}", "--format", "csv",
                 check=False)
    assert proc.returncode != 0
    assert "--format json" in proc.stderr.decode(), proc.stderr.decode()


@pytest.mark.parametrize("column", ["session_date", "user_hash_bucket"])
def test_a_filter_on_a_partition_column_prunes_files(run, warehouse, rows, column):
    values = sorted({r[column] for r in rows})
    value = values[len(values) // 2]
    literal = f"'{value.isoformat()}'" if column == "session_date" else str(value)
    proc = query(run, warehouse, f"SELECT session_id FROM {TABLE} WHERE {column} = {literal}",
                 "--format", "csv", "--stats")
    scanned, total = files_scanned(proc.stderr)

    table = catalog(warehouse).load_table(TABLE)
    row_filter = f"{column} == {literal}"
    assert total == len(list(table.scan().plan_files()))
    assert scanned == len(list(table.scan(row_filter=row_filter).plan_files()))
    assert 0 < scanned < total, (scanned, total)

    got = sorted(r["session_id"] for r in csv.DictReader(io.StringIO(proc.stdout.decode())))
    want = sorted(table.scan(row_filter=row_filter, selected_fields=("session_id",))
                  .to_arrow().column("session_id").to_pylist())
    assert got == want
    assert len(want) == sum(r[column] == value for r in rows) > 0


def test_without_a_filter_every_file_is_scanned(run, warehouse, rows):
    proc = query(run, warehouse, f"SELECT count(*) AS n FROM {TABLE}", "--format", "csv",
                 "--stats")
    scanned, total = files_scanned(proc.stderr)
    assert scanned == total > 10
    assert proc.stdout.decode().splitlines() == ["n", str(len(rows))]


@pytest.mark.parametrize("sql, message", [
    ("SELEC session_date FROM sessions.user_sessions", "the SQL cannot be run"),
    ("SELECT no_such_column FROM sessions.user_sessions", "no_such_column"),
    ("SELECT * FROM sessions.nope",
     "there is no table sessions.nope; the tables are: sessions.rejected_events, "
     "sessions.user_sessions"),
    ("SELECT * FROM elsewhere.user_sessions", "there is no table elsewhere.user_sessions"),
    ("DROP TABLE sessions.user_sessions", "only reads the tables"),
    ("INSERT INTO sessions.user_sessions SELECT * FROM sessions.user_sessions",
     "only reads the tables"),
])
def test_bad_queries_exit_non_zero_with_a_sentence(run, warehouse, rows, sql, message):
    proc = query(run, warehouse, sql, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr.decode(), proc.stderr.decode()
    # Nothing changed.
    assert len(read_table(warehouse)) == len(rows)


def test_a_warehouse_with_no_tables_is_named(run, tmp_path):
    proc = query(run, tmp_path / "nowhere", f"SELECT * FROM {TABLE}", check=False)
    assert proc.returncode != 0
    assert "no tables in" in proc.stderr.decode() and "sessionize run" in proc.stderr.decode()
    assert not (tmp_path / "nowhere").exists()


def test_tables_on_object_storage_with_a_shared_catalog(run, lakehouse, tmp_path):
    """The same flags as `run`: s3:// warehouse, PostgreSQL catalog, S3 endpoint
    and credentials from the environment."""
    events = tmp_path / "events.jsonl"
    run("generate", "--output", events, "--num-users", "400", "--rate", "0.02",
        "--duration", "2d", "--seed", "5")
    run("run", "--input", events, *lakehouse.flags, "--state-dir", tmp_path / "state",
        env=lakehouse.env)
    rows = lakehouse.read()
    day = sorted({r["session_date"] for r in rows})[-1]

    proc = run("query", f"SELECT session_id FROM {TABLE} WHERE session_date = '{day}'",
               "--format", "json", "--stats", *lakehouse.flags, env=lakehouse.env)
    got = sorted(json.loads(line)["session_id"] for line in proc.stdout.decode().splitlines())
    assert got == sorted(r["session_id"] for r in rows if r["session_date"] == day)
    scanned, total = files_scanned(proc.stderr)
    table = lakehouse.catalog().load_table(TABLE)
    assert total == len(list(table.scan().plan_files()))
    assert 0 < scanned < total

    # A catalog database that is not there: a sentence naming the flag to fix.
    missing = lakehouse.catalog_uri.rsplit("/", 1)[0] + "/no_such_catalog"
    bad = ["--warehouse", lakehouse.warehouse, "--s3-path-style", "--catalog-uri", missing]
    proc = run("query", f"SELECT count(*) FROM {TABLE}", *bad, env=lakehouse.env, check=False)
    assert proc.returncode != 0
    assert "cannot read the catalog" in proc.stderr.decode(), proc.stderr.decode()
    assert "fix --catalog-uri" in proc.stderr.decode(), proc.stderr.decode()
