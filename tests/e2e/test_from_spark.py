"""The Spark job's command line, unchanged, against a broker on loopback
(docs/from-spark.md): same sessions as the model, in the table it names."""

import os
import subprocess

from conftest import read_table
from test_streaming import broker  # noqa: F401  (fixture)
from reference import matches, read_topic, sessionize_records

# As the Spark pipeline was started (its topic is the job's default).
SPARK_COMMAND = (
    "run user_sessionization_pipeline --kafka-servers {servers} "
    "--kafka-topic clickstream-events --iceberg-database analytics "
    "--iceberg-table user_sessions --inactivity-timeout 30 --max-session-duration 2 "
    "--test-mode --log-level INFO"
)


def test_the_spark_jobs_command_line_runs_unchanged(run, binary, broker, tmp_path):
    events = tmp_path / "events.jsonl"
    run("generate", "--output", events, "--num-users", "300", "--rate", "2",
        "--duration", "3h", "--seed", "27")
    n = sum(1 for line in open(events) if line.strip())
    # The producer's default topic is the job's: clickstream-events.
    run("produce", "--kafka-servers", broker.servers, "--partitions", "4", "--input", events)
    # Only the status port differs from the defaults (9464 may be taken here),
    # and it comes from the environment, not the command line.
    env = {**os.environ, "SESSIONIZE_METRICS_ADDR": "127.0.0.1:0"}
    args = SPARK_COMMAND.format(servers=broker.servers).split()
    job = subprocess.run([str(binary), *args], cwd=tmp_path, env=env,
                         capture_output=True, timeout=300)
    assert job.returncode == 0, job.stderr.decode()
    # INFO is the job's info level: the checkpoints are logged.
    assert b"checkpoint" in job.stderr

    model = sessionize_records(read_topic(broker.servers, "clickstream-events", n))
    rows = read_table(tmp_path / "warehouse", "analytics.user_sessions")
    assert len(rows) > 300
    matches(rows, model.sessions)


def test_a_pipeline_that_does_not_exist_is_refused_with_the_one_that_does(run, tmp_path):
    refused = run("run", "sessions_by_page", "--test-mode", "--warehouse", tmp_path / "wh",
                  check=False)
    assert refused.returncode != 0
    message = refused.stderr.decode()
    assert "sessions_by_page" in message and "user_sessionization_pipeline" in message
