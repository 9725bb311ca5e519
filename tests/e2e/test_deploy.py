"""The deploy files (deploy/): the Dockerfile linted, the Kubernetes manifests
validated offline against the Kubernetes schemas and checked against the
binary's own flags, the container's health check asked of a running job, and
the Airflow DAG's exact command run against a broker."""

import ast
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from conftest import read_table
from kafka import Job, free_port
from test_streaming import broker  # noqa: F401  (fixture)
from reference import matches, read_topic, sessionize_records

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
VENV_BIN = Path(sys.executable).parent


def manifests():
    """The resources kustomization.yaml lists, each parsed."""
    listed = yaml.safe_load((DEPLOY / "kubernetes" / "kustomization.yaml").read_text())
    return {name: yaml.safe_load((DEPLOY / "kubernetes" / name).read_text())
            for name in listed["resources"]}


def test_the_dockerfile_passes_hadolint():
    lint = subprocess.run([VENV_BIN / "hadolint", DEPLOY / "Dockerfile"], capture_output=True)
    assert lint.returncode == 0, lint.stdout.decode() + lint.stderr.decode()


def test_the_manifests_are_valid_kubernetes_and_name_only_flags_the_job_has(run):
    files = [DEPLOY / "kubernetes" / name for name in manifests()]
    check = subprocess.run([VENV_BIN / "kubernetes-validate", "--strict", *files],
                           capture_output=True)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()

    resources = {doc["kind"]: doc for doc in manifests().values()}
    assert {"Deployment", "ConfigMap", "Secret", "PodDisruptionBudget", "Service"} <= set(resources)
    deployment = resources["Deployment"]
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert pod["spec"]["terminationGracePeriodSeconds"] >= 60
    container = pod["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert "--scale-out" in container["args"]
    # Every flag the container passes, and every variable the ConfigMap and
    # Secret set, is one `sessionize run` takes.
    help_text = run("run", "--help").stdout.decode()
    for arg in container["args"]:
        if arg.startswith("--"):
            assert arg.split("=")[0] + " " in help_text or arg.split("=")[0] + "\n" in help_text, arg
    env = [*resources["ConfigMap"]["data"], *resources["Secret"]["stringData"],
           *(e["name"] for e in container["env"])]
    for name in env:
        if name.startswith("AWS_ACCESS") or name.startswith("AWS_SECRET"):
            continue  # read by the S3 client, not a flag
        assert f"env: {name}=" in help_text or name == "SESSIONIZE_ADMIN_TOKEN", name
    assert "SESSIONIZE_ADMIN_TOKEN" in resources["Secret"]["stringData"]
    assert "ICEBERG_CATALOG_URI" in resources["Secret"]["stringData"]


def test_the_health_check_asks_a_running_job_and_fails_with_a_sentence(run, binary, broker,
                                                                      tmp_path):
    events = tmp_path / "events.jsonl"
    run("generate", "--output", events, "--num-users", "50", "--duration", "10m", "--seed", "2")
    run("produce", "--kafka-servers", broker.servers, "--topic", "clicks", "--input", events)
    job = Job(binary, broker, "clicks", tmp_path / "warehouse", tmp_path / "state")
    addr_file = tmp_path / "state" / "metrics.addr"
    deadline = time.time() + 60
    while not addr_file.exists():
        assert job.proc.poll() is None and time.time() < deadline, job.log.read_text()[-2000:]
        time.sleep(0.2)
    url = f"http://{addr_file.read_text().strip()}/healthz"
    healthy = run("healthcheck", "--url", url, check=False)
    job.proc.terminate()
    job.wait()
    assert healthy.returncode == 0, healthy.stderr.decode()

    nobody = f"http://127.0.0.1:{free_port()}/healthz"
    refused = run("healthcheck", "--url", nobody, "--timeout", "2", check=False)
    assert refused.returncode == 1
    assert f"{nobody} cannot be reached" in refused.stderr.decode()


def dag_command():
    """`sessionize_command` and the constants it uses, taken from the DAG file
    without Airflow (which the tests do not install)."""
    tree = ast.parse((DEPLOY / "airflow" / "sessionize_hourly.py").read_text())
    wanted = [node for node in tree.body
              if isinstance(node, ast.FunctionDef) and node.name == "sessionize_command"
              or isinstance(node, ast.Assign) and node.targets[0].id in ("SESSIONIZE", "STATE_ROOT")]
    scope = {}
    exec(compile(ast.Module(body=wanted, type_ignores=[]), "sessionize_hourly.py", "exec"), scope)
    return scope["sessionize_command"]


def test_the_airflow_dags_command_runs_retries_and_fails_as_a_task(run, binary, broker,
                                                                   tmp_path):
    command = dag_command()
    events = tmp_path / "events.jsonl"
    run("generate", "--output", events, "--num-users", "200", "--rate", "2", "--duration", "2h",
        "--seed", "5")
    n = sum(1 for line in open(events) if line.strip())
    run("produce", "--kafka-servers", broker.servers, "--topic", "clickstream-events-20260102",
        "--partitions", "2", "--input", events)
    env = {**os.environ, "ICEBERG_WAREHOUSE": str(tmp_path / "warehouse")}

    def task(servers):
        line = command("20260102", servers, state_root=tmp_path / "state", binary=binary)
        return subprocess.run(line, shell=True, env=env, capture_output=True, timeout=300)

    first = task(broker.servers)
    assert first.returncode == 0, first.stderr.decode()[-3000:]
    rows = read_table(tmp_path / "warehouse", "analytics.user_sessions_20260102")
    model = sessionize_records(read_topic(broker.servers, "clickstream-events-20260102", n))
    assert len(rows) > 100
    matches(rows, model.sessions)

    # Airflow retries a task that it thinks failed: nothing is written twice.
    again = task(broker.servers)
    assert again.returncode == 0, again.stderr.decode()[-3000:]
    assert len(read_table(tmp_path / "warehouse", "analytics.user_sessions_20260102")) == len(rows)

    # A run that cannot do its work fails the task, with the cause on one line.
    failed = task(f"127.0.0.1:{free_port()}")
    assert failed.returncode != 0
    last = failed.stderr.decode().strip().splitlines()[-1]
    assert last.startswith("error: ") and "127.0.0.1" in last, last
