"""Benchmark: the job on the embedded default (local warehouse, SQLite catalog)
against object storage + a shared catalog (s3s-fs + PostgreSQL on loopback), and
what compaction does to a day of 30-second checkpoints.

Replays a stream of clickstream through Kafka (nisshi, stored in PostgreSQL) with each checkpoint
holding about 30 s of event time (a batch of rate x 30 events per checkpoint),
then reports, per setup:
  - commit latency: the checkpoint thread's time per checkpoint (state write,
    both Iceberg commits, and the read-back that checks them);
  - sessions-visible latency: from the oldest session a checkpoint publishes
    closing to the checkpoint being visible in the table;
  - data files and bytes, scaled to one day of 30 s checkpoints, before and
    after `sessionize maintain`;
  - the time a pyiceberg query filtering one session_date and one
    user_hash_bucket takes, before and after compaction.

    tests/bench/run.sh lakehouse        # builds the release binary, then runs this
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from conftest import catalog  # noqa: E402
from kafka import Broker, Job  # noqa: E402
from lakehouse import Lakehouse, ObjectStore, Postgres  # noqa: E402

from pyiceberg.expressions import And, EqualTo  # noqa: E402


def quantiles(values):
    values = sorted(values)
    if not values:
        return "n/a"
    pick = lambda q: values[min(len(values) - 1, int(q * len(values)))]
    return f"p50 {pick(0.5)} ms, p95 {pick(0.95)} ms, max {values[-1]} ms"


def checkpoint_timings(log: Path):
    took, visible = [], []
    for line in log.read_text(errors="replace").splitlines():
        if ": checkpoint " not in line:
            continue
        if "took_ms=" in line:
            took.append(int(line.split("took_ms=")[1].split()[0]))
        if "visible_after_ms=" in line:
            value = line.split("visible_after_ms=")[1].split()[0]
            if value.isdigit():
                visible.append(int(value))
    return took, visible


def table_files(table):
    files = table.inspect.files()
    return files.num_rows, sum(files.column("file_size_in_bytes").to_pylist())


def timed_query(table, date, bucket, repeats=5):
    times = []
    rows = 0
    for _ in range(repeats):
        started = time.perf_counter()
        scan = table.scan(row_filter=And(EqualTo("session_date", date),
                                         EqualTo("user_hash_bucket", bucket)))
        rows = scan.to_arrow().num_rows
        times.append(time.perf_counter() - started)
    return statistics.median(times), rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", required=True)
    parser.add_argument("--hours", type=float, default=6, help="event time replayed")
    parser.add_argument("--rate", type=float, default=20, help="events per second")
    parser.add_argument("--users", type=int, default=20000)
    args = parser.parse_args()
    binary = Path(args.binary).resolve()
    work = Path(tempfile.mkdtemp(prefix="sessionize-bench-"))
    run = lambda *a, env=None: subprocess.run([str(binary), *map(str, a)], check=True,
                                              capture_output=True, env=env)

    events = work / "events.jsonl"
    run("generate", "--output", events, "--num-users", args.users, "--rate", args.rate,
        "--duration", f"{args.hours}h", "--late-rate", "0", "--seed", "7")
    count = sum(1 for _ in open(events))
    # The generator's rate is of visits' first events; measure the real one.
    per_checkpoint = int(count / (args.hours * 3600) * 30)
    scale = 24 / args.hours
    print(f"{count} events over {args.hours} h of event time, {per_checkpoint} events "
          f"(30 s) per checkpoint; per-day figures scale by {scale:g}")

    store = ObjectStore(work / "s3" / "root")
    postgres = Postgres()
    broker = Broker(work / "broker", postgres.new_database())
    broker.start()
    try:
        run("produce", "--kafka-servers", broker.servers, "--topic", "clicks", "--partitions",
            "4", "--input", events)
        lakehouse = Lakehouse(store, postgres)
        common = ("--test-mode", "--checkpoint-interval", "1ms", "--max-events-per-batch",
                  per_checkpoint)
        setups = {
            "local (SQLite)": (work / "local", None),
            "S3 + PostgreSQL": (lakehouse.flags, lakehouse.env),
        }
        results = {}
        for name, (tables, env) in setups.items():
            state = work / f"state-{len(results)}"
            started = time.perf_counter()
            Job(binary, broker, "clicks", tables, state, "--kafka-group", f"bench-{len(results)}",
                *common, env=env).wait(timeout=3600)
            elapsed = time.perf_counter() - started
            took, visible = checkpoint_timings(Path(str(state) + ".log"))
            results[name] = (took, visible)
            print(f"\n{name}: {len(took)} checkpoints in {elapsed:.1f} s")
            print(f"  commit latency:           {quantiles(took)}")
            print(f"  sessions visible after:   {quantiles(visible)}")

        table = lakehouse.catalog().load_table("sessions.user_sessions")
        sessions = table.scan().to_arrow()
        files, size = table_files(table)
        snapshots = len(table.snapshots())
        first = sessions.column("session_date")[len(sessions) // 2].as_py()
        bucket = sessions.column("user_hash_bucket")[len(sessions) // 2].as_py()
        before, rows = timed_query(table, first, bucket)
        maintain_started = time.perf_counter()
        out = run("maintain", *lakehouse.flags, "--keep-snapshots-for", "1ms",
                  "--keep-snapshots", "1", env=lakehouse.env).stdout.decode()
        maintain_took = time.perf_counter() - maintain_started
        table = lakehouse.catalog().load_table("sessions.user_sessions")
        files_after, size_after = table_files(table)
        after, rows_after = timed_query(table, first, bucket)
        assert rows_after == rows, (rows, rows_after)
        assert table.scan().to_arrow().num_rows == len(sessions)
        print(f"\nS3 + PostgreSQL, sessions table, {snapshots} snapshots, "
              f"{len(sessions)} sessions:")
        print(f"  per day of 30 s checkpoints: {files * scale:.0f} data files, "
              f"{size * scale / 2**20:.1f} MiB before compaction; "
              f"{files_after * scale:.0f} files, {size_after * scale / 2**20:.1f} MiB after")
        print(f"  (measured: {files} files, {size / 2**20:.2f} MiB -> {files_after} files, "
              f"{size_after / 2**20:.2f} MiB; maintain took {maintain_took:.1f} s)")
        print(f"  query session_date={first} AND user_hash_bucket={bucket} ({rows} rows), "
              f"pyiceberg, median of 5: {before * 1000:.0f} ms before, "
              f"{after * 1000:.0f} ms after compaction")
        print("\n" + out.strip())
    finally:
        broker.stop()
        store.stop()
        postgres.stop()


if __name__ == "__main__":
    main()
