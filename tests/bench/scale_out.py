"""Benchmark: members of one consumer group (`sessionize run --scale-out`) on
Tansu (memory storage; or nisshi in memory with `--broker nisshi`), all on
this machine, local warehouse.

  - throughput: the same topic read by one member, then by two (fresh groups
    and tables), from the first claim to the commit that covers every record;
  - rebalance pause: with two members holding the state of a whole topic, a
    third joins and leaves again, `--changes` times (SIGTERM: a clean leave);
    per move, from the old owner's revoke to the new owner
    reading it; and, for `--kills` SIGKILLs, from the kill to the survivor
    reading the dead member's partitions;
  - restore: 1,000,000 open sessions (one event for each of 1,000,000 users)
    handed over whole to a member that starts after the owner stopped, and
    half of them to a member that joins.

    tests/bench/run.sh scale_out         # builds the release binary, then runs this
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from conftest import catalog  # noqa: E402
from kafka import Broker, Job  # noqa: E402

LINE = re.compile(r"^(\S+)Z .*")


def at_ms(line):
    return datetime.fromisoformat(line.split()[0].rstrip("Z")[:26] + "+00:00").timestamp() * 1000


def held_by(log):
    """The partitions a member's log says it holds: claims minus hand-overs."""
    held = set()
    for line in log.splitlines():
        if "partitions claimed and restored" in line:
            held |= set(partitions_of(line))
        elif "partitions handed over" in line:
            held -= set(partitions_of(line))
    return held


def partitions_of(line):
    return [int(p) for p in line.split("partitions=[")[1].split("]")[0].split(",") if p.strip()]


def partitions_of_revoke(line):
    inside = line.split("Revoked([")[1].split("]")[0]
    return [int(p) for p in inside.split(",") if p.strip()]


def events_in(line, field):
    return int(line.split(f"{field}=")[1].split()[0])


def quantiles(values, unit="ms"):
    values = sorted(values)
    if not values:
        return "n/a"
    pick = lambda q: values[min(len(values) - 1, int(q * len(values)))]
    return (f"p50 {pick(0.5):,.0f} {unit}, p99 {pick(0.99):,.0f} {unit}, max {values[-1]:,.0f} "
            f"{unit} (n={len(values)})")


def log_lines(jobs, text):
    """(time ms, job index, line) of every line holding `text`, in time order."""
    found = []
    for i, job in enumerate(jobs):
        for line in job.log.read_text(errors="replace").splitlines():
            if text in line and LINE.match(line):
                found.append((at_ms(line), i, line))
    return sorted(found)


def group_snapshots(warehouse, group):
    table = catalog(warehouse).load_table("sessions.user_sessions")
    return sorted((s for s in table.snapshots() if s.summary.get("sessionize.group") == group),
                  key=lambda s: s.sequence_number)


def offsets_of(snapshot):
    progress = json.loads(snapshot.summary["sessionize.partitions"])
    return sum(e.get("offset") or 0 for e in progress.values())


def wait_until(check, what, timeout=600):
    deadline = time.time() + timeout
    while True:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001  (no table or no group snapshot yet)
            pass
        if time.time() > deadline:
            raise SystemExit(f"timed out: {what}")
        time.sleep(0.5)


class MemoryTansu(Broker):
    """Tansu 0.6.0 with memory storage (tests/bench/run.sh installs it): the
    broker this benchmark's published figures were measured on."""

    def binary(self):
        return Path(os.environ.get("TANSU_BIN", Path.home() / ".cache/sessionize/tansu/bin/tansu"))

    def storage(self):
        return "memory://tansu/"


class Bench:
    def __init__(self, binary, work, broker):
        self.binary, self.work, self.broker = binary, work, broker
        self.started = []

    def run(self, *args):
        subprocess.run([str(self.binary), *map(str, args)], check=True, capture_output=True)

    def member(self, topic, group, warehouse, name, *extra):
        job = Job(self.binary, self.broker, topic, warehouse, self.work / name, "--scale-out",
                  "--kafka-group", group, "--group-session-timeout", "6s", *extra)
        self.started.append(job)
        return job

    def stop_all(self):
        for job in self.started:
            if job.proc.poll() is None:
                job.proc.send_signal(signal.SIGTERM)
        for job in self.started:
            try:
                job.proc.wait(120)
            except subprocess.TimeoutExpired:
                job.proc.kill()

    def whole(self, topic, total):
        """Events/s of one job without --scale-out (--test-mode: to the end)."""
        started = time.perf_counter()
        Job(self.binary, self.broker, topic, self.work / "whole", self.work / "whole-state",
            "--test-mode", "--kafka-group", "whole", "--checkpoint-interval", "1s").wait(3600)
        return total / (time.perf_counter() - started)

    def throughput(self, topic, total, members):
        """Events/s from the first claim to the commit covering every record."""
        warehouse, group = self.work / f"tp{members}", f"tp{members}"
        jobs = [self.member(topic, group, warehouse, f"tp{members}-{i}",
                            "--checkpoint-interval", "1s") for i in range(members)]
        wait_until(lambda: offsets_of(group_snapshots(warehouse, group)[-1]) >= total,
                   f"{members} member(s) never read the topic")
        snapshots = group_snapshots(warehouse, group)
        first = snapshots[0].timestamp_ms
        done = next(s.timestamp_ms for s in snapshots if offsets_of(s) >= total)
        for job in jobs:
            job.proc.send_signal(signal.SIGTERM)
            job.proc.wait(120)
        return total / ((done - first) / 1000)

    def rebalances(self, topic, total, changes, kills):
        """Pauses of partitions moved by `changes` joins and leaves, and by `kills`."""
        warehouse, group = self.work / "rebalance", "rebalance"
        flags = ("--checkpoint-interval", "1s")
        a = self.member(topic, group, warehouse, "rb-a", *flags)
        b = self.member(topic, group, warehouse, "rb-b", *flags)
        wait_until(lambda: offsets_of(group_snapshots(warehouse, group)[-1]) >= total,
                   "the two members never read the topic")
        jobs = [a, b]
        for change in range(changes):
            c = self.member(topic, group, warehouse, f"rb-c{change}", *flags)
            jobs.append(c)
            wait_until(lambda: "partitions claimed and restored" in c.log.read_text(),
                       "the joining member never claimed")
            time.sleep(2)
            c.proc.send_signal(signal.SIGTERM)
            c.proc.wait(120)
            time.sleep(3)
        # A revoke starts the pause (a member that leaves hands over in its
        # final checkpoint, before the revoke it logs on leaving).
        handed = [h for h in log_lines(jobs, "rebalanced change=Revoked(") if partitions_of_revoke(h[2])]
        claimed = log_lines(jobs, "partitions claimed and restored")
        pauses = []
        for t, _, line in handed:
            for p in partitions_of_revoke(line):
                # The next claim of it, by whichever member (the same one too).
                after = [tc for tc, _, lc in claimed if tc >= t and p in partitions_of(lc)]
                if after:
                    pauses.append(after[0] - t)
        restores = [events_in(line, "took_ms") for _, _, line in claimed]
        # Deaths: a member is killed; its partitions wait for the session timeout.
        deaths = []
        for kill in range(kills):
            d = self.member(topic, group, warehouse, f"rb-d{kill}", *flags)
            wait_until(lambda: "partitions claimed and restored" in d.log.read_text(),
                       "the member to kill never claimed")
            time.sleep(2)
            # What it holds when killed: a rebalance in the meantime may have
            # handed some of its first claim to the others already.
            held = held_by(d.log.read_text())
            if not held:
                print(f"member rb-d{kill} held nothing when it was to be killed: not counted")
                d.proc.send_signal(signal.SIGTERM)
                d.proc.wait(120)
                continue
            killed = time.time() * 1000
            d.proc.send_signal(signal.SIGKILL)
            d.proc.wait()

            def back():
                lines = log_lines([a, b], "partitions claimed and restored")
                moved = {p for t, _, ln in lines if t > killed for p in partitions_of(ln)}
                return set(held) <= moved
            wait_until(back, "a killed member's partitions never moved")
            lines = log_lines([a, b], "partitions claimed and restored")
            deaths.append(max(t for t, _, ln in lines if t > killed and set(partitions_of(ln)) & set(held)) - killed)
            time.sleep(2)
        for job in (a, b):
            job.proc.send_signal(signal.SIGTERM)
            job.proc.wait(120)
        return pauses, restores, deaths

    def restore(self, topic, sessions):
        """Restores of `sessions` open sessions: half by a joining member, all
        by one that starts after the owner stopped."""
        warehouse, group = self.work / "restore", "restore"
        flags = ("--checkpoint-interval", "2s")
        a = self.member(topic, group, warehouse, "rs-a", *flags)
        wait_until(lambda: offsets_of(group_snapshots(warehouse, group)[-1]) >= sessions,
                   "the member never read the topic")
        b = self.member(topic, group, warehouse, "rs-b", *flags)
        wait_until(lambda: "partitions claimed and restored" in b.log.read_text(),
                   "the joining member never claimed")
        time.sleep(3)
        half = [ln for ln in b.log.read_text().splitlines() if "claimed and restored" in ln][-1]
        for job in (a, b):
            job.proc.send_signal(signal.SIGTERM)
            job.proc.wait(300)
        c = self.member(topic, group, warehouse, "rs-c", *flags)
        wait_until(lambda: "partitions claimed and restored" in c.log.read_text(),
                   "the new member never claimed")
        time.sleep(2)
        whole = [ln for ln in c.log.read_text().splitlines() if "claimed and restored" in ln]
        c.proc.send_signal(signal.SIGTERM)
        c.proc.wait(300)
        return half, whole


def restore_figures(lines):
    users = sum(events_in(ln, "users") for ln in lines)
    files = sum(events_in(ln, "files") for ln in lines)
    took = sum(events_in(ln, "took_ms") for ln in lines)
    rate = users / (took / 1000) if took else float("inf")
    return f"{users:,} sessions from {files} files in {took:,} ms: {rate:,.0f} sessions/s"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", required=True)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--changes", type=int, default=20, help="joins+leaves of a third member")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--sessions", type=int, default=1_000_000, help="open sessions to restore")
    parser.add_argument("--broker", choices=("tansu", "nisshi"), default="tansu")
    args = parser.parse_args()
    binary = Path(args.binary).resolve()
    work = Path(tempfile.mkdtemp(prefix="sessionize-scale-"))
    kinds = {"tansu": MemoryTansu, "nisshi": Broker}
    broker = kinds[args.broker](work / "broker")
    broker.start()
    bench = Bench(binary, work, broker)
    try:
        events = work / "events.jsonl"
        bench.run("generate", "--output", events, "--num-users", 20000, "--rate", 200,
                  "--duration", "24h", "--late-rate", 0, "--seed", 11, "--events", args.events)
        total = sum(1 for _ in open(events))
        bench.run("produce", "--kafka-servers", broker.servers, "--topic", "clicks",
                  "--partitions", 8, "--input", events)
        print(f"{total:,} events on 8 partitions ({args.broker})")
        whole = bench.whole("clicks", total)
        one = bench.throughput("clicks", total, 1)
        two = bench.throughput("clicks", total, 2)
        print(f"\nthroughput, first claim to the commit covering every record:\n"
              f"  one job without --scale-out (start to stop): {whole:,.0f} events/s\n"
              f"  1 member:  {one:,.0f} events/s\n  2 members: {two:,.0f} events/s ({two / one:.0%})")

        pauses, restores, deaths = bench.rebalances("clicks", total, args.changes, args.kills)
        print(f"\nrebalance, {args.changes} joins and {args.changes} leaves of a third member:")
        print(f"  partition paused (revoked -> read by its new owner):      {quantiles(pauses)}")
        print(f"  claim + restore per rebalance:                            {quantiles(restores)}")
        print(f"  member killed -> its partitions read again:               {quantiles(deaths)}")

        with open(work / "open.jsonl", "w") as out:
            for i in range(args.sessions):
                out.write(f'{{"uuid":"u{i}","event_id":"e{i}","event_timestamp":'
                          f'{1_767_225_600_000 + i},"page_name":"home"}}\n')
        bench.run("produce", "--kafka-servers", broker.servers, "--topic", "open",
                  "--partitions", 8, "--input", work / "open.jsonl")
        half, whole = bench.restore("open", args.sessions)
        print(f"\nrestore of open sessions:\n  a joining member took half: {restore_figures([half])}"
              f"\n  a new member took all:      {restore_figures(whole)}")
    finally:
        bench.stop_all()
        broker.stop()
    print(f"\n(work directory: {work})")


if __name__ == "__main__":
    main()
