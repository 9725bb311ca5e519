"""The tables on object storage (s3s-fs, a real S3 server) with a shared catalog
(PostgreSQL), both on loopback: the same table as the embedded default, exactly
once across kill -9 and with two jobs committing to one table, read back by
pyiceberg through the same catalog; and a sentence for each store failure."""

import json
import random
import signal
import time
import zlib

from pyiceberg.catalog.sql import SqlCatalog

from conftest import SESSION_COLUMNS, clock_shifted, read_table
from kafka import Job
from test_streaming import broker, generate, produce  # noqa: F401  (fixture)
from reference import dead_positions, matches, read_topic, sessionize_records


def as_rows(rows, columns=SESSION_COLUMNS):
    return sorted(tuple(tuple(r[c]) if isinstance(r[c], list) else r[c] for c in columns)
                  for r in rows)


def dead_letters(rows):
    return sorted((r["source"], r["partition"], r["position"], r["reason"]) for r in rows)


def lines_in(path):
    return sum(1 for line in open(path) if line.strip())


def user_of(line):
    try:
        return str(json.loads(line).get("uuid"))
    except (ValueError, AttributeError):
        return line  # malformed: any half will do


def test_a_bounded_run_on_object_storage_equals_the_local_run(run, lakehouse, tmp_path):
    events = tmp_path / "events.jsonl"
    generate(run, events, "--num-users", "800", "--rate", "3", "--duration", "8h",
             "--seed", "21", "--events", "20000")
    run("run", "--input", events, "--warehouse", tmp_path / "local")
    run("run", "--input", events, *lakehouse.flags, "--state-dir", tmp_path / "state",
        env=lakehouse.env)

    local = read_table(tmp_path / "local")
    assert len(local) > 500
    assert as_rows(lakehouse.read()) == as_rows(local)
    assert dead_letters(lakehouse.read("sessions.rejected_events")) == dead_letters(
        read_table(tmp_path / "local", "sessions.rejected_events"))
    # Data files and table metadata are in the bucket, under the warehouse prefix.
    bucket = lakehouse.store.root / lakehouse.bucket
    assert lakehouse.store.files(lakehouse.bucket, ".parquet")
    assert all(str(p.relative_to(bucket)).startswith("warehouse/sessions/")
               for p in lakehouse.store.files(lakehouse.bucket, ".metadata.json"))


def test_streaming_on_object_storage_survives_kill_minus_nine(run, binary, broker, lakehouse,
                                                               tmp_path):
    events = tmp_path / "events.jsonl"
    # 3.2 h of event time; the kills below move the job on a checkpoint or
    # two each, the last run does the rest.
    generate(run, events, "--num-users", "1200", "--rate", "5.2", "--duration", "1d",
             "--seed", "8", "--events", "60000")
    produce(run, broker, "clicks", events)
    common = ("--test-mode", "--checkpoint-interval", "100ms", "--max-events-per-batch", "1000")

    rng = random.Random(99)
    kills, progress = 0, []
    while kills < 5:
        before = progress[-1] if progress else 0
        job = Job(binary, broker, "clicks", lakehouse.flags, tmp_path / "state", *common,
                  env=lakehouse.env)
        while job.consumed() <= before and job.proc.poll() is None:
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.3))
        if job.proc.poll() is not None:
            break
        job.proc.send_signal(signal.SIGKILL)
        job.proc.wait()
        kills += 1
        progress.append(job.consumed())
    assert kills == 5, f"the job finished after {kills} kills ({progress}); use more events"
    Job(binary, broker, "clicks", lakehouse.flags, tmp_path / "state", *common,
        env=lakehouse.env).wait()

    # Against the model over the topic as read back: every session once, every
    # dead letter once.
    model = sessionize_records(read_topic(broker.servers, "clicks", lines_in(events), 180))
    matches(lakehouse.read(), model.sessions)
    assert dead_positions(lakehouse.read("sessions.rejected_events")) == model.dead


def test_two_jobs_committing_to_one_table_lose_nothing(run, binary, broker, lakehouse, tmp_path):
    events = tmp_path / "events.jsonl"
    # A low rate spreads sessions over the day, so every checkpoint closes some.
    generate(run, events, "--num-users", "2000", "--rate", "0.5", "--duration", "1d",
             "--seed", "31", "--events", "30000")
    # Two disjoint sets of users, one topic each.
    halves = {"a": [], "b": []}
    for line in events.read_text().splitlines(keepends=True):
        halves["ab"[zlib.crc32(user_of(line).encode()) % 2]].append(line)
    for name, lines in halves.items():
        (tmp_path / f"{name}.jsonl").write_text("".join(lines))
        produce(run, broker, name, tmp_path / f"{name}.jsonl")

    common = ("--test-mode", "--checkpoint-interval", "50ms", "--max-events-per-batch", "200")
    reference = []
    for name in halves:
        Job(binary, broker, name, tmp_path / f"ref-{name}", tmp_path / f"ref-state-{name}",
            "--kafka-group", f"ref-{name}", *common).wait()
        reference += read_table(tmp_path / f"ref-{name}")
    writers = [Job(binary, broker, name, lakehouse.flags, tmp_path / f"state-{name}",
                   "--kafka-group", f"job-{name}", *common, env=lakehouse.env)
               for name in halves]
    for job in writers:
        job.wait()

    rows = lakehouse.read()
    assert len(rows) > 1000
    assert as_rows(rows) == as_rows(reference)
    model = []
    for name, lines in halves.items():
        model += sessionize_records(read_topic(broker.servers, name, len(lines))).sessions
    matches(rows, model)
    ids = [r["session_id"] for r in rows]
    assert len(ids) == len(set(ids)), "a session was written twice"
    # Both jobs committed many times into the one table, interleaved.
    table = lakehouse.catalog().load_table("sessions.user_sessions")
    jobs = [s.summary["sessionize.job-id"] for s in
            sorted(table.snapshots(), key=lambda s: s.sequence_number)]
    assert len(set(jobs)) == 2
    switches = sum(1 for a, b in zip(jobs, jobs[1:]) if a != b)
    print(f"{len(jobs)} commits, {switches} switches between the jobs")
    assert switches >= 4, f"the jobs did not commit concurrently: {jobs}"


def test_store_failures_say_what_to_do(run, lakehouse, tmp_path):
    def fails(*args, env=None):
        proc = run("run", "--test-mode", "--state-dir", tmp_path / "state", *args, env=env,
                   check=False)
        assert proc.returncode != 0
        return proc.stderr.decode()

    wrong_key = fails(*lakehouse.flags, env=lakehouse.store.env(secret_key="not-the-key"))
    assert "refused the credentials: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in wrong_key
    unreachable = fails(*lakehouse.flags, env=dict(lakehouse.env,
                                                   AWS_ENDPOINT_URL="http://127.0.0.1:1"))
    assert "cannot be reached: check --s3-endpoint" in unreachable
    # The store checks each request's signed time: this machine's clock two hours ahead.
    skewed = fails(*lakehouse.flags, env=clock_shifted(lakehouse.env, "+2h"))
    assert "refused the request's time: set this machine's clock right (NTP)" in skewed
    no_catalog = fails("--warehouse", lakehouse.warehouse, env=lakehouse.env)
    assert "give --catalog-uri" in no_catalog
    rest = fails("--catalog-uri", "https://catalog.example/api", env=lakehouse.env)
    assert "use sqlite:///path/catalog.db or postgres://" in rest
    wrong_db = fails("--warehouse", lakehouse.warehouse, "--catalog-uri",
                     lakehouse.catalog_uri + "_missing", env=lakehouse.env)
    assert "the catalog database does not exist: create it (createdb)" in wrong_db
    for text in (wrong_key, unreachable, skewed, no_catalog, rest, wrong_db):
        assert "panicked" not in text and len(text.strip().splitlines()[-1]) < 2000


def test_a_catalog_uri_puts_the_sqlite_catalog_where_it_says(run, tmp_path):
    events = tmp_path / "events.jsonl"
    generate(run, events, "--num-users", "200", "--rate", "0.8", "--duration", "2h",
             "--seed", "2", "--events", "3000")
    uri = f"sqlite:///{tmp_path}/shared-catalog.db"
    run("run", "--input", events, "--warehouse", tmp_path / "wh", "--catalog-uri", uri)
    run("run", "--input", events, "--warehouse", tmp_path / "default")

    assert (tmp_path / "shared-catalog.db").is_file()
    assert not (tmp_path / "wh" / "catalog.db").exists()
    rows = SqlCatalog("sessionize", uri=uri, warehouse=f"file://{tmp_path}/wh").load_table(
        "sessions.user_sessions").scan().to_arrow().to_pylist()
    assert len(rows) > 50 and as_rows(rows) == as_rows(read_table(tmp_path / "default"))

