"""Soak: three `--scale-out` members of one group on S3 + PostgreSQL (s3s-fs
and a PostgreSQL server on loopback), a broker with durable storage (nisshi in
a PostgreSQL server of its own), `sessionize maintain` every few seconds, and random faults while
clickstream slices keep coming:

  kill      SIGKILL a member, start it again
  freeze    SIGSTOP a member past the session timeout, then SIGCONT
  broker    restart the broker
  postgres  restart PostgreSQL
  plugin    restart a member with another --plugin (it must take the group's)
  deploy    deploy the logout rules through a random member
  rollback  roll the group back through a random member

At the end the table, read back by pyiceberg, must equal the reference model
(tests/e2e/reference.py) over the records read back from the topic, with no
session twice. The logout page is renamed in the data, so every rules
version cuts the same sessions.

    tests/bench/run.sh soak --faults 100      # the full soak, release binary
    tests/e2e/test_soak.py                    # a CI-sized run (a few faults)
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from kafka import Broker, Job, topic_size  # noqa: E402
from lakehouse import Lakehouse, ObjectStore, Postgres  # noqa: E402
from reference import matches, read_topic, sessionize_records  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DIST = ROOT / "guest" / "dist"
GROUP = ["--scale-out", "--kafka-group", "soak", "--group-session-timeout", "6s",
         "--checkpoint-interval", "500ms", "--max-events-per-batch", "500"]
FAULTS = ["kill", "freeze", "broker", "postgres", "plugin", "deploy", "rollback"]
FLUSHERS = 200


def run(binary, *args, env=None, check=True):
    proc = subprocess.run([str(binary), *map(str, args)], capture_output=True, timeout=600,
                          env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"sessionize {args} failed:\n{proc.stderr.decode()[-3000:]}")
    return proc


class Soak:
    """The servers, the members and the input of one soak run."""

    def __init__(self, binary, work: Path, seed: int, events: int):
        self.binary, self.work, self.rng = binary, work, random.Random(seed)
        self.store = ObjectStore(work / "s3")
        self.postgres = Postgres()
        self.lake = Lakehouse(self.store, self.postgres)
        # The broker's own server: the postgres fault is an outage of the
        # catalog, the broker fault one of the broker.
        self.broker_postgres = Postgres()
        self.broker = Broker(work / "broker", self.broker_postgres.new_database())
        self.broker.start()
        self.slices = self.input(events, seed)
        self.members = {}
        self.started = 0
        self.survived = []
        self.maintaining = threading.Event()

    def input(self, events, seed):
        path = self.work / "events.jsonl"
        run(self.binary, "generate", "--output", path, "--num-users", "2000", "--rate", "2",
            "--duration", "12h", "--late-rate", "0", "--seed", seed, "--events", events)
        text = path.read_text().replace('"page_name":"logout"', '"page_name":"signout"')
        lines = text.splitlines(keepends=True)
        last = max(stamp(line) for line in lines)
        flush = "".join(json.dumps({"uuid": f"flush-{i}", "event_id": f"flush-{i}",
                                    "event_timestamp": last + 86_400_000, "page_name": "end"})
                        + "\n" for i in range(FLUSHERS))
        slices = [lines[len(lines) * k // 40: len(lines) * (k + 1) // 40] for k in range(40)]
        return slices + [[flush]]

    def produce(self, lines):
        part = self.work / "slice.jsonl"
        part.write_text("".join(lines))
        for attempt in range(30):
            proc = run(self.binary, "produce", "--kafka-servers", self.broker.servers, "--topic",
                       "clicks", "--partitions", "8", "--input", part, check=False)
            if proc.returncode == 0:
                return
            time.sleep(1)  # the broker may be restarting
        raise AssertionError(proc.stderr.decode()[-2000:])

    def start(self, name, *extra):
        self.started += 1
        state = self.work / f"{name}-{self.started}"
        self.members[name] = Job(self.binary, self.broker, "clicks", self.lake.flags, state,
                                 *GROUP, *extra, env=self.lake.env)

    def member(self):
        name = self.rng.choice(sorted(self.members))
        return name, self.members[name]

    def maintain(self):
        """`sessionize maintain` every few seconds, until the end."""
        while not self.maintaining.is_set():
            run(self.binary, "maintain", *self.lake.flags, "--keep-snapshots-for", "1m",
                "--keep-snapshots", "20", env=self.lake.env, check=False)
            self.maintaining.wait(3)

    def plugin(self, member, *args):
        state = member.args[member.args.index("--state-dir") + 1]
        return run(self.binary, "plugin", *args, "--state-dir", state, check=False)

    def fault(self, kind):
        name, member = self.member()
        if kind == "kill":
            member.proc.send_signal(signal.SIGKILL)
            member.proc.wait()
            self.start(name)
        elif kind == "freeze":
            member.proc.send_signal(signal.SIGSTOP)
            time.sleep(8)
            member.proc.send_signal(signal.SIGCONT)
        elif kind == "broker":
            self.broker.stop()
            time.sleep(2)
            self.broker.start()
        elif kind == "postgres":
            self.postgres.restart()
        elif kind == "plugin":
            member.proc.send_signal(signal.SIGTERM)
            member.proc.wait(120)
            self.start(name, "--plugin", DIST / "conversion_rules.wasm")
        elif kind == "deploy":
            self.plugin(member, "deploy", DIST / "logout_rules.wasm")
        elif kind == "rollback":
            self.plugin(member, "rollback")
        self.survived.append(kind)

    def alive(self):
        for name, member in self.members.items():
            code = member.proc.poll()
            assert code is None, f"{name} exited {code}: {member.log.read_text()[-3000:]}"

    def run(self, faults):
        for name in ("a", "b", "c"):
            self.start(name)
        maintainer = threading.Thread(target=self.maintain, daemon=True)
        maintainer.start()
        slices = iter(self.slices[:-1])
        # Every kind once, in a random order, then at random.
        kinds = self.rng.sample(FAULTS, len(FAULTS))
        for i in range(faults):
            part = next(slices, None)
            if part:
                self.produce(part)
            time.sleep(self.rng.uniform(0.5, 3))
            kind = kinds[i] if i < len(kinds) else self.rng.choice(FAULTS)
            print(f"fault {i + 1}/{faults}: {kind}", flush=True)
            self.fault(kind)
            self.alive()
        for part in slices:
            self.produce(part)
        self.produce(self.slices[-1])
        self.settle()
        self.maintaining.set()
        maintainer.join(60)
        for member in self.members.values():
            member.proc.send_signal(signal.SIGTERM)
        for member in self.members.values():
            member.proc.wait(120)
        self.check()

    def settle(self, timeout=600):
        """Waits until the table holds as many real sessions as the model."""
        self.model = sessionize_records(
            read_topic(self.broker.servers, "clicks", topic_size(self.broker.servers, "clicks"),
                       timeout=120), watermark="own")
        want = sum(1 for s in self.model.sessions if not s["uuid"].startswith("flush-"))
        deadline = time.time() + timeout
        while True:
            self.alive()
            try:
                rows = self.lake.read()
                got = sum(1 for r in rows if not r["uuid"].startswith("flush-"))
                if got >= want:
                    return
            except Exception:  # noqa: BLE001  (a restart may be under way)
                got = "?"
            assert time.time() < deadline, f"{got} of {want} sessions after {timeout}s"
            time.sleep(2)

    def check(self):
        matches(self.lake.read(), self.model.sessions,
                skip=lambda s: s["uuid"].startswith("flush-"))
        counts = {kind: self.survived.count(kind) for kind in FAULTS}
        print(f"survived {len(self.survived)} faults: {counts}; "
              f"{sum(1 for s in self.model.sessions if not s['uuid'].startswith('flush-'))} "
              "sessions, equal to the reference model, none twice", flush=True)

    def stop(self):
        self.maintaining.set()
        for member in self.members.values():
            if member.proc.poll() is None:
                member.proc.send_signal(signal.SIGKILL)
        self.broker.stop()
        self.store.stop()
        self.postgres.stop()
        self.broker_postgres.stop()


def stamp(line):
    try:
        return int(json.loads(line)["event_timestamp"])
    except (ValueError, KeyError, TypeError):
        return 0


def soak(binary, faults, seed=1, events=40000, work=None):
    """Runs one soak; raises AssertionError on any difference."""
    work = Path(work or tempfile.mkdtemp(prefix="sessionize-soak-"))
    run_ = Soak(binary, work, seed, events)
    try:
        run_.run(faults)
        return run_.survived
    finally:
        run_.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", required=True)
    parser.add_argument("--faults", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--events", type=int, default=80000)
    args = parser.parse_args()
    os.environ.setdefault("SESSIONIZE_LOG", "warn,sessionize=info")
    started = time.time()
    soak(args.binary, args.faults, args.seed, args.events)
    print(f"took {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
