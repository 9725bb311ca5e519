"""`sessionize plugin new`: the project it makes passes its unit test, builds
into a component with the repository's guest build, and that component runs."""

import json
import os
import subprocess

from conftest import ROOT
from test_plugin_test import T0, event


def test_a_new_rust_plugin_tests_builds_and_runs(run, tmp_path):
    out = run("plugin", "new", "checkout-rules", "--dir", tmp_path).stdout.decode()
    project = tmp_path / "checkout-rules"
    assert f"made {project}" in out
    readme = (project / "README.md").read_text()
    assert f"{ROOT}/guest/build.sh ." in readme

    env = dict(os.environ)
    tested = subprocess.run(["cargo", "test", "--quiet"], cwd=project, capture_output=True,
                            env=env, timeout=900)
    assert tested.returncode == 0, tested.stderr.decode()[-3000:]
    assert "1 passed" in tested.stdout.decode()

    built = subprocess.run([str(ROOT / "guest" / "build.sh"), "."], cwd=project,
                           capture_output=True, env=env, timeout=1200)
    assert built.returncode == 0, built.stderr.decode()[-3000:]
    component = project / "checkout_rules.wasm"
    assert component.stat().st_size > 10_000

    events = tmp_path / "events.jsonl"
    visits = [("ann", 0, "home"), ("ann", 2, "order-confirmed"), ("ann", 3, "home")]
    events.write_text("".join(event(*v) + "\n" for v in visits))
    sessions = [json.loads(line) for line in
                run("plugin", "test", component, "--input", events).stdout.decode().splitlines()]
    assert [(s["start_ms"] - T0, s["event_count"], s["end_reason"]) for s in sessions] == [
        (0, 2, "purchase"), (180_000, 1, "end_of_input")]
    assert sessions[0]["rule_version"].startswith("checkout-rules@0.1.0+")


def test_a_new_python_plugin_tests_builds_and_runs(run, tmp_path):
    out = run("plugin", "new", "py-rules", "--lang", "python", "--dir", tmp_path).stdout.decode()
    project = tmp_path / "py-rules"
    assert f"made {project}" in out
    bin_dir = os.path.dirname(os.environ.get("COMPONENTIZE_PY", "")) or str(
        os.path.expanduser("~/.cache/sessionize/venv/bin"))
    env = dict(os.environ, COMPONENTIZE_PY=os.path.join(bin_dir, "componentize-py"),
               PYTHON=os.path.join(bin_dir, "python"))
    tested = subprocess.run(["./test.sh"], cwd=project, capture_output=True, env=env, timeout=600)
    assert tested.returncode == 0, (tested.stdout + tested.stderr).decode()[-3000:]
    assert "Ran 1 test" in tested.stderr.decode() and "OK" in tested.stderr.decode()

    built = subprocess.run(["./build.sh"], cwd=project, capture_output=True, env=env, timeout=600)
    assert built.returncode == 0, built.stderr.decode()[-3000:]
    assert_cuts_at_the_purchase(run, tmp_path, project / "py_rules.wasm", "py-rules@0.1.0+")


def test_a_new_js_plugin_tests_builds_and_runs(run, tmp_path):
    out = run("plugin", "new", "js-checkout", "--lang", "js", "--dir", tmp_path).stdout.decode()
    project = tmp_path / "js-checkout"
    assert f"made {project}" in out
    tested = subprocess.run(["./test.sh"], cwd=project, capture_output=True, timeout=600)
    assert tested.returncode == 0, (tested.stdout + tested.stderr).decode()[-3000:]
    assert "# pass 1" in tested.stdout.decode() and "# fail 0" in tested.stdout.decode()

    built = subprocess.run(["./build.sh"], cwd=project, capture_output=True, timeout=600)
    assert built.returncode == 0, built.stderr.decode()[-3000:]
    assert_cuts_at_the_purchase(run, tmp_path, project / "js_checkout.wasm", "js-checkout@0.1.0+")


def assert_cuts_at_the_purchase(run, tmp_path, component, version):
    """The scaffold's rules, built: a confirmed order ends the session and
    sets `purchased`."""
    events = tmp_path / "events.jsonl"
    visits = [("ann", 0, "home"), ("ann", 2, "order-confirmed"), ("ann", 3, "home")]
    events.write_text("".join(event(*v) + "\n" for v in visits))
    sessions = [json.loads(line) for line in
                run("plugin", "test", component, "--input", events).stdout.decode().splitlines()]
    assert [(s["start_ms"] - T0, s["event_count"], s["end_reason"], s["attributes"]["purchased"])
            for s in sessions] == [(0, 2, "purchase", True), (180_000, 1, "end_of_input", False)]
    assert sessions[0]["rule_version"].startswith(version)


def test_names_it_cannot_make_are_refused(run, tmp_path):
    bad = run("plugin", "new", "Checkout_Rules", "--dir", tmp_path, check=False)
    assert bad.returncode != 0 and "is not a plugin name" in bad.stderr.decode()
    nowhere = run("plugin", "new", "py-rules", "--lang", "python", "--dir", tmp_path,
                  "--sdk", tmp_path, check=False)
    assert nowhere.returncode != 0 and "no Sessionize Python SDK" in nowhere.stderr.decode()
    assert not (tmp_path / "py-rules").exists()
    nowhere = run("plugin", "new", "js-rules", "--lang", "js", "--dir", tmp_path,
                  "--sdk", tmp_path, check=False)
    assert nowhere.returncode != 0 and "no Sessionize JavaScript SDK" in nowhere.stderr.decode()
    assert not (tmp_path / "js-rules").exists()
