"""Object storage and a shared catalog on loopback for the tests: s3s-fs (a real
filesystem-backed S3 server) and PostgreSQL from Debian's packages, each started
on a temporary directory and a free port, and the pyiceberg catalog that reads
what the job wrote through them."""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from pyiceberg.catalog.sql import SqlCatalog

from kafka import free_port

S3S = Path(os.environ.get("S3S_BIN", Path.home() / ".cache/sessionize/s3s/bin/s3s-fs"))
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))

ACCESS_KEY = "sessionize"
SECRET_KEY = "sessionize-secret"


def wait_for_port(port: int, proc, what: str, log: Path):
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            assert proc is None or proc.poll() is None, f"{what} exited: {log.read_text()[-2000:]}"
            time.sleep(0.1)
    raise AssertionError(f"{what} did not start: {log.read_text()[-2000:]}")


class ObjectStore:
    """s3s-fs: every top-level directory of its root is a bucket."""

    def __init__(self, root: Path):
        assert S3S.exists(), f"{S3S} missing: tests/run.sh installs it"
        self.root = root
        self.port = free_port()
        root.mkdir(parents=True, exist_ok=True)
        self.log = root.parent / "s3s.log"
        self.proc = subprocess.Popen(
            [str(S3S), "--host", "127.0.0.1", "--port", str(self.port),
             "--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY, str(root)],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"))
        wait_for_port(self.port, self.proc, "s3s-fs", self.log)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def new_bucket(self) -> str:
        name = f"lake-{uuid.uuid4().hex[:12]}"
        (self.root / name).mkdir()
        return name

    def env(self, access_key=ACCESS_KEY, secret_key=SECRET_KEY) -> dict:
        """The environment the job takes its credentials and endpoint from."""
        return dict(os.environ, AWS_ACCESS_KEY_ID=access_key, AWS_SECRET_ACCESS_KEY=secret_key,
                    AWS_ENDPOINT_URL=self.endpoint, AWS_REGION="us-east-1")

    def files(self, bucket: str, suffix: str) -> list:
        return sorted(p for p in (self.root / bucket).rglob(f"*{suffix}") if p.is_file())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)


class Postgres:
    """A throwaway PostgreSQL server: initdb on a temporary directory, loopback only."""

    def __init__(self):
        assert (PG_BIN / "initdb").exists(), f"{PG_BIN}/initdb missing: tests/run.sh installs Debian's postgresql package"
        self.dir = Path(tempfile.mkdtemp(prefix="sessionize-pg-"))
        self.port = free_port()
        # initdb refuses to run as root.
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.dir, "postgres")
        data = self.dir / "data"
        self.log = self.dir / "server.log"
        self._pg("initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync")
        self._pg("pg_ctl", "-D", data, "-l", self.log, "-w", "start", "-o",
                 f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off")
        self.data = data

    def _pg(self, tool, *args):
        proc = subprocess.run([*self.as_user, str(PG_BIN / tool), *map(str, args)],
                              capture_output=True, timeout=120)
        assert proc.returncode == 0, f"{tool} failed: {proc.stderr.decode()}"

    def new_database(self) -> str:
        """A fresh database; returns its URI (the same for sqlx and SQLAlchemy)."""
        name = f"lake_{uuid.uuid4().hex[:12]}"
        self._pg("createdb", "-h", "127.0.0.1", "-p", self.port, "-U", "postgres", name)
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def restart(self):
        """Stops the server at once (connections drop mid-statement) and starts it again."""
        self._pg("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "restart", "-l", self.log)

    def stop(self):
        self._pg("pg_ctl", "-D", self.data, "-m", "immediate", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


class Lakehouse:
    """One test's warehouse on the object store with its own catalog database."""

    def __init__(self, store: ObjectStore, postgres: Postgres):
        self.store = store
        self.bucket = store.new_bucket()
        self.warehouse = f"s3://{self.bucket}/warehouse"
        self.catalog_uri = postgres.new_database()

    @property
    def flags(self) -> list:
        return ["--warehouse", self.warehouse, "--catalog-uri", self.catalog_uri,
                "--s3-path-style"]

    @property
    def env(self) -> dict:
        return self.store.env()

    def catalog(self) -> SqlCatalog:
        """The tables as a pyiceberg user opens them: the same catalog URI."""
        return SqlCatalog(
            "sessionize", uri=self.catalog_uri, warehouse=self.warehouse,
            **{"s3.endpoint": self.store.endpoint, "s3.access-key-id": ACCESS_KEY,
               "s3.secret-access-key": SECRET_KEY, "s3.region": "us-east-1",
               "s3.force-virtual-addressing": "false"})

    def read(self, name="sessions.user_sessions") -> list:
        return self.catalog().load_table(name).scan().to_arrow().to_pylist()
