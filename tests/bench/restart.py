"""Benchmark: how long a streaming job takes to start, the first time and on
restarts, with a rules component (default: the Python rules, the slowest to
compile). A restart finds the compiled component in `<state-dir>/compiled/`.

Starts nisshi (memory storage), sends a few events, then runs `sessionize run
--test-mode` against it `--restarts + 1` times with one state directory:
each run reads the topic to its end, commits and stops. Prints, per run, the
time from start to "rules loaded" and the whole run's wall time; then the
same once more with the compiled components removed before every run.

    tests/bench/run.sh restart [--plugin guest/dist/python_rules.wasm] [--restarts 3]
"""

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from kafka import Broker  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def loaded_after(log: str, started: float) -> float:
    """Seconds from `started` (epoch) to the log's "rules loaded" line."""
    for line in log.splitlines():
        if "rules loaded" in line:
            stamp = re.match(r"^(\S+)Z", line).group(1)[:26]
            return datetime.fromisoformat(stamp + "+00:00").timestamp() - started
    sys.exit(f"no 'rules loaded' line in the job's log:\n{log[-3000:]}")


def run_job(args, broker, work, state, name):
    log = work / f"{name}.log"
    started = time.time()
    with open(log, "wb") as err:
        subprocess.run(
            [args.binary, "run", "--test-mode", "--kafka-servers", broker.servers,
             "--kafka-topic", "clicks", "--warehouse", str(work / "warehouse"),
             "--state-dir", str(state), "--metrics-addr", "off", "--plugin", str(args.plugin)],
            stdout=subprocess.DEVNULL, stderr=err, check=True,
            env={"SESSIONIZE_LOG": "info", "NO_COLOR": "1", "PATH": "/usr/bin:/bin"})
    wall = time.time() - started
    return loaded_after(log.read_text(errors="replace"), started), wall


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", required=True)
    parser.add_argument("--plugin", type=Path, default=ROOT / "guest/dist/python_rules.wasm")
    parser.add_argument("--restarts", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sessionize-restart-") as tmp:
        work = Path(tmp)
        broker = Broker(work / "broker")
        broker.start()
        try:
            subprocess.run([args.binary, "produce", "--kafka-servers", broker.servers,
                            "--topic", "clicks", "--events", "2000", "--fast"],
                           stdout=subprocess.DEVNULL, check=True)
            print(f"{args.plugin.name}: {args.plugin.stat().st_size / 2**20:.1f} MiB")
            print(f"{'run':<28}{'to rules loaded s':>20}{'wall s':>10}")
            state = work / "state"
            for i in range(args.restarts + 1):
                what = "first start" if i == 0 else f"restart {i}"
                loaded, wall = run_job(args, broker, work, state, f"kept-{i}")
                print(f"{what + ' (kept)':<28}{loaded:>20.2f}{wall:>10.2f}", flush=True)
            for i in range(args.restarts):
                shutil.rmtree(state / "compiled", ignore_errors=True)
                loaded, wall = run_job(args, broker, work, state, f"cold-{i}")
                print(f"{f'restart {i + 1} (removed)':<28}{loaded:>20.2f}{wall:>10.2f}", flush=True)
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
