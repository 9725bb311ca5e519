"""Hourly Sessionize run over the day's topic into the day's table, as the
Spark job was scheduled (docs/operating.md, "Deploying").

Each run reads `clickstream-events-YYYYMMDD` from where the previous run of
that day stopped (its checkpoint, in the day's state directory) to the topic's
end as of its start, writes the sessions to `analytics.user_sessions_YYYYMMDD`
and stops. Sessions still open at the end of a run are closed there
(`end_reason` = `end_of_input`), as a batch run does; for sessions that span
runs, run the streaming job instead (deploy/kubernetes). A retried task writes
nothing twice: the state directory records what was committed.

The workers need the `sessionize` binary, the warehouse and catalog in the
environment (ICEBERG_WAREHOUSE, ICEBERG_CATALOG_URI, AWS_*), and an Airflow
variable `kafka_servers`. The run exits non-zero on failure with the cause on
one line (`error: ...`) on stderr, which Airflow shows in the task's log.
"""

from datetime import datetime, timedelta

from airflow import DAG

try:
    from airflow.providers.standard.operators.bash import BashOperator
except ImportError:  # Airflow 2
    from airflow.operators.bash import BashOperator

SESSIONIZE = "/usr/local/bin/sessionize"
STATE_ROOT = "/var/lib/sessionize/airflow"


def sessionize_command(day, kafka_servers, state_root=STATE_ROOT, binary=SESSIONIZE):
    """The command a run executes for `day` (YYYYMMDD). The tests run exactly
    this against the real binary and a broker (tests/e2e/test_deploy.py)."""
    return (
        f"{binary} run user_sessionization_pipeline"
        f" --kafka-servers {kafka_servers}"
        f" --kafka-topic clickstream-events-{day}"
        f" --iceberg-database analytics --iceberg-table user_sessions_{day}"
        f" --state-dir {state_root}/{day}"
        " --metrics-addr off --test-mode --log-format json"
    )


with DAG(
    dag_id="sessionize_hourly",
    schedule="@hourly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # runs of one day share its state directory
    default_args={"retries": 3, "retry_delay": timedelta(minutes=5)},
    tags=["sessionize"],
) as dag:
    BashOperator(
        task_id="sessionize",
        bash_command=sessionize_command("{{ ds_nodash }}", "{{ var.value.kafka_servers }}"),
        execution_timeout=timedelta(minutes=50),
    )
