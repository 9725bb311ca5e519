"""A Kafka-protocol broker (nisshi) on loopback for the tests, and helpers to
drive the streaming job."""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

NISSHI = Path(os.environ.get("NISSHI_BIN", Path.home() / ".cache/sessionize/nisshi/bin/nisshi"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """nisshi 0.8.1 (Tansu's successor). Stored in a PostgreSQL database,
    topics, committed offsets and groups survive a broker restart, and a
    topic's end is reported exactly; in memory (no database) neither holds.
    Its group coordinator evicts a member that stops heartbeating with its
    connection still open, and hands a killed member's partitions on with
    either assignor."""

    def __init__(self, workdir: Path, database: str | None = None):
        assert self.binary().exists(), f"{self.binary()} missing: tests/run.sh installs it"
        self.workdir = workdir
        self.database = database
        self.port = free_port()
        self.proc = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def binary(self) -> Path:
        return NISSHI

    def storage(self) -> str:
        return self.database or "memory://nisshi/"

    def start(self):
        url = f"tcp://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [str(self.binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", self.storage()],
            cwd=self.workdir, stdout=subprocess.DEVNULL,
            stderr=open(self.workdir / "broker.log", "ab"),
        )
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                assert self.proc.poll() is None, \
                    f"broker exited: {(self.workdir / 'broker.log').read_text()[-2000:]}"
                time.sleep(0.1)
        raise AssertionError("broker did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


class Job:
    """`sessionize run` against the broker, in the background, logging to a file."""

    def __init__(self, binary, broker, topic, warehouse, state, *extra, env=None):
        """`warehouse` is a directory, or the flags of a lakehouse."""
        self.log = Path(str(state) + ".log")
        tables = warehouse if isinstance(warehouse, list) else ["--warehouse", str(warehouse)]
        extra = [str(e) for e in extra]
        # A free port each: jobs run side by side, and 9464 may be taken on this machine.
        status = [] if "--metrics-addr" in extra else ["--metrics-addr", "127.0.0.1:0"]
        self.args = [str(binary), "run", "--kafka-servers", broker.servers, "--kafka-topic", topic,
                     *tables, "--state-dir", str(state), *status, *extra]
        env = dict(env or os.environ, SESSIONIZE_LOG="warn,sessionize=info", NO_COLOR="1")
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE,
                                     stderr=open(self.log, "ab"), env=env)

    def consumed(self) -> int:
        """Messages consumed as of the last checkpoint, from the job's log."""
        last = 0
        for line in self.log.read_text(errors="replace").splitlines():
            if "checkpoint" in line and "consumed=" in line:
                last = int(line.split("consumed=")[1].split()[0])
        return last

    def wait_consumed(self, count, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.consumed() >= count:
                return
            assert self.proc.poll() is None, f"job exited: {self.log.read_text()[-3000:]}"
            time.sleep(0.2)
        raise AssertionError(f"job consumed {self.consumed()} of {count} in {timeout}s")

    def wait(self, timeout=300):
        out, _ = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, f"job failed: {self.log.read_text()[-3000:]}"
        return out.decode()


def topic_size(servers, topic) -> int:
    """Records in `topic`: the sum of its partitions' high watermarks (every
    topic here starts at offset 0)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": servers, "group.id": "topic-size"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                   for p in partitions)
    finally:
        consumer.close()
