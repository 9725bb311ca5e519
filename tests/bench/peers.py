"""Benchmark: Sessionize beside general-purpose engines on the same bounded job.

Generates one clickstream file, then runs on it, back to back, `--rounds`
times each:
  - `sessionize run --input FILE` (default rules component, Iceberg table);
  - DuckDB (from PyPI, in the bench's own venv): one SQL query with window
    functions, written to one zstd Parquet file. It does what SQL can do of
    our rules: drops malformed records and duplicates, starts a session after
    30 min of inactivity, and cuts sessions into 2 h buckets from their first
    event (approximate: Sessionize starts the next session at the next event,
    not at the bucket's edge). No lateness, no dead-letter table.
  - Spark (`spark-submit`) and Flink (`pyflink`), only when installed.

Prints wall time, events/s, peak memory (the process tree's largest
resident set) and each engine's wall time over Sessionize's.

    tests/bench/run.sh peers [--events 1459443] [--rounds 3]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DUCKDB_QUERY = """
SET threads = {threads};
COPY (
  WITH events AS (
    SELECT uuid, event_id, TRY_CAST(event_timestamp AS BIGINT) AS ts, page_name
    FROM read_json('{input}', format = 'newline_delimited', ignore_errors = true,
                   columns = {{uuid: 'VARCHAR', event_id: 'VARCHAR',
                              event_timestamp: 'VARCHAR', page_name: 'VARCHAR'}})
  ),
  valid AS (
    SELECT * FROM events
    WHERE uuid IS NOT NULL AND uuid <> '' AND ts IS NOT NULL AND ts >= 0
    QUALIFY event_id IS NULL
         OR row_number() OVER (PARTITION BY uuid, event_id ORDER BY ts) = 1
  ),
  gaps AS (
    SELECT *, CASE WHEN ts - lag(ts) OVER w <= {gap_ms} THEN 0 ELSE 1 END AS starts
    FROM valid WINDOW w AS (PARTITION BY uuid ORDER BY ts, event_id)
  ),
  numbered AS (
    SELECT *, sum(starts) OVER (PARTITION BY uuid ORDER BY ts, event_id
                                ROWS UNBOUNDED PRECEDING) AS visit
    FROM gaps
  ),
  split AS (
    SELECT *, (ts - min(ts) OVER (PARTITION BY uuid, visit)) // {max_ms} AS part
    FROM numbered
  )
  SELECT uuid, min(ts) AS start_ms, max(ts) AS end_ms, count(*) AS events,
         count(DISTINCT page_name) AS pages, arg_min(page_name, ts) AS entry_page,
         arg_max(page_name, ts) AS exit_page
  FROM split GROUP BY uuid, visit, part
) TO '{output}' (FORMAT parquet, COMPRESSION zstd);
"""

DUCKDB_RUNNER = """
import sys, duckdb
duckdb.connect().execute(open(sys.argv[1]).read())
"""


def run_measured(command, env=None):
    """Runs `command`; returns (wall seconds, peak resident MiB of it and its children)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    stderr = process.stderr.read().decode(errors="replace")
    if process.returncode != 0:
        sys.exit(f"{command[0]} failed ({process.returncode}):\n{stderr[-3000:]}")
    # ru_maxrss is in KiB on Linux; wait4 reports the child and what it waited for.
    return wall, usage.ru_maxrss / 1024


def generate(binary, path, events):
    # 20,000 users over a day of event time: about 240 bytes an event.
    subprocess.run([binary, "generate", "--num-users", "20000", "--rate", "17",
                    "--duration", "1d", "--events", str(events), "--output", str(path)],
                   check=True)


def sessionize(binary, input_path, work, round_):
    warehouse = work / f"warehouse-{round_}"
    return run_measured([binary, "run", "--input", str(input_path),
                         "--warehouse", str(warehouse),
                         "--state-dir", str(work / f"state-{round_}"),
                         "--metrics-addr", "off", "--log-level", "warn"])


def duckdb(python, input_path, work, round_, threads):
    query = work / "query.sql"
    query.write_text(DUCKDB_QUERY.format(
        threads=threads, input=input_path, gap_ms=30 * 60 * 1000, max_ms=2 * 3600 * 1000,
        output=work / f"duckdb-{round_}.parquet"))
    runner = work / "duckdb_runner.py"
    runner.write_text(DUCKDB_RUNNER)
    return run_measured([python, str(runner), str(query)])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", required=True, help="the sessionize release binary")
    parser.add_argument("--duckdb-python", required=True,
                        help="a Python with the duckdb package")
    parser.add_argument("--events", type=int, default=1_459_443)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2,
                        help="DuckDB's threads (default: every core)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sessionize-peers-") as tmp:
        work = Path(tmp)
        input_path = work / "events.jsonl"
        generate(args.binary, input_path, args.events)
        size_mb = input_path.stat().st_size / 1e6
        print(f"{args.events:,} events, {size_mb:.0f} MB of JSON lines, "
              f"{os.cpu_count()} cores, {os.uname().machine}", flush=True)
        results = {"sessionize": [], "duckdb": []}
        for round_ in range(args.rounds):
            # Back to back, in turn: the machine's drift touches both alike.
            results["sessionize"].append(sessionize(args.binary, input_path, work, round_))
            results["duckdb"].append(
                duckdb(args.duckdb_python, input_path, work, round_, args.threads))
        for peer in ("spark-submit", "pyflink"):
            if shutil.which(peer) is None:
                print(f"{peer}: not installed, not run")
        report(results, args.events)


def report(results, events):
    best = {name: min(wall for wall, _ in runs) for name, runs in results.items()}
    print(f"{'engine':<12}{'wall s (each round)':>28}{'events/s (best)':>18}"
          f"{'peak MiB':>10}{'x sessionize':>14}")
    for name, runs in results.items():
        walls = ", ".join(f"{wall:.2f}" for wall, _ in runs)
        peak = max(mib for _, mib in runs)
        ratio = best[name] / best["sessionize"]
        print(f"{name:<12}{walls:>28}{events / best[name]:>18,.0f}{peak:>10.0f}{ratio:>14.2f}")
    print(json.dumps({name: [round(w, 3) for w, _ in runs] for name, runs in results.items()}))


if __name__ == "__main__":
    main()
