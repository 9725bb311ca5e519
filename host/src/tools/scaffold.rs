//! `sessionize plugin new`: a rules plugin project to start from, with a unit
//! test that passes and a build that works on this machine
//! (`guest/build.sh DIR`).

use std::path::{Path, PathBuf};

/// Why no project was made.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name cannot name a crate and a component.
    #[error(
        "{0:?} is not a plugin name: use 2 to 64 lowercase letters, digits and dashes, \
         starting with a letter (for example checkout-rules)"
    )]
    Name(String),
    /// Something is already there.
    #[error("{} already exists: choose another name or --dir", .0.display())]
    Exists(PathBuf),
    /// The SDK is not where it was looked for.
    #[error(
        "no Sessionize SDK at {}: pass --sdk with the path of guest/sdk in a Sessionize checkout",
        .0.display()
    )]
    NoSdk(PathBuf),
    /// The Python SDK or the contract is not where it was looked for.
    #[error(
        "no Sessionize Python SDK at {}: pass --sdk with the path of guest/python-sdk in a \
         Sessionize checkout",
        .0.display()
    )]
    NoPythonSdk(PathBuf),
    /// The JavaScript SDK is not where it was looked for.
    #[error(
        "no Sessionize JavaScript SDK at {}: pass --sdk with the path of guest/js-sdk in a \
         Sessionize checkout",
        .0.display()
    )]
    NoJsSdk(PathBuf),
    /// A file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Writes a Rust rules plugin called `name` into `dir/name`, depending on the
/// SDK at `sdk`; returns the project's directory.
pub fn new_rust_plugin(name: &str, dir: &Path, sdk: &Path) -> Result<PathBuf, ScaffoldError> {
    check_name(name)?;
    let sdk = sdk.canonicalize().map_err(|_| ScaffoldError::NoSdk(sdk.to_owned()))?;
    if !sdk.join("Cargo.toml").is_file() {
        return Err(ScaffoldError::NoSdk(sdk));
    }
    let project = fresh_project(dir, name)?;
    let rules = type_name(name);
    let sdk = sdk.display().to_string();
    let build =
        sdk.strip_suffix("/sdk").map_or("guest/build.sh".to_owned(), |g| format!("{g}/build.sh"));
    let files = [
        ("Cargo.toml", CARGO_TOML.replace("__NAME__", name).replace("__SDK__", &sdk)),
        ("src/lib.rs", LIB_RS.replace("__NAME__", name).replace("__RULES__", &rules)),
        (
            "README.md",
            README_MD
                .replace("__NAME__", name)
                .replace("__BUILD__", &build)
                .replace("__WASM__", &name.replace('-', "_")),
        ),
        (".gitignore", "/target\n/Cargo.lock\n*.wasm\n".to_owned()),
    ];
    write_files(&project, &files)?;
    Ok(project)
}

/// Writes a Python rules plugin called `name` into `dir/name`, on the Python
/// SDK at `sdk` (guest/python-sdk, beside the checkout's `wit/`); returns the
/// project's directory.
pub fn new_python_plugin(name: &str, dir: &Path, sdk: &Path) -> Result<PathBuf, ScaffoldError> {
    check_name(name)?;
    let sdk = sdk.canonicalize().map_err(|_| ScaffoldError::NoPythonSdk(sdk.to_owned()))?;
    let wit = sdk.join("../../wit");
    if !sdk.join("sessionize_sdk.py").is_file() || !wit.join("sessionize.wit").is_file() {
        return Err(ScaffoldError::NoPythonSdk(sdk));
    }
    let wit = wit.canonicalize().map_err(|_| ScaffoldError::NoPythonSdk(sdk.clone()))?;
    let project = fresh_project(dir, name)?;
    let fill = |text: &str| fill(text, name, &sdk).replace("__WIT__", &wit.display().to_string());
    let files = [
        ("app.py", fill(APP_PY)),
        ("test_app.py", fill(TEST_APP_PY)),
        ("test.sh", fill(TEST_SH)),
        ("build.sh", fill(BUILD_SH)),
        ("README.md", fill(PY_README_MD)),
        (".gitignore", "/bindings\n__pycache__\n*.wasm\n".to_owned()),
    ];
    write_scripted(&project, &files)?;
    Ok(project)
}

/// Writes a JavaScript rules plugin called `name` into `dir/name`, on the
/// JavaScript SDK at `sdk` (guest/js-sdk, whose build.sh and test.sh fetch
/// what they need); returns the project's directory.
pub fn new_js_plugin(name: &str, dir: &Path, sdk: &Path) -> Result<PathBuf, ScaffoldError> {
    check_name(name)?;
    let sdk = sdk.canonicalize().map_err(|_| ScaffoldError::NoJsSdk(sdk.to_owned()))?;
    if !sdk.join("sessionize.js").is_file() || !sdk.join("build.sh").is_file() {
        return Err(ScaffoldError::NoJsSdk(sdk));
    }
    let project = fresh_project(dir, name)?;
    let fill = |text: &str| fill(text, name, &sdk);
    let files = [
        ("rules.js", fill(RULES_JS)),
        ("rules.test.js", fill(RULES_TEST_JS)),
        ("sdk.js", fill(SDK_JS)),
        ("test.sh", fill(JS_TEST_SH)),
        ("build.sh", fill(JS_BUILD_SH)),
        ("README.md", fill(JS_README_MD)),
        (".gitignore", "*.wasm\n".to_owned()),
    ];
    write_scripted(&project, &files)?;
    Ok(project)
}

/// The project's directory, unless something is already there.
fn fresh_project(dir: &Path, name: &str) -> Result<PathBuf, ScaffoldError> {
    let project = dir.join(name);
    if project.exists() {
        return Err(ScaffoldError::Exists(project));
    }
    Ok(project)
}

/// A template with the plugin's names and its SDK's path filled in.
fn fill(text: &str, name: &str, sdk: &Path) -> String {
    text.replace("__NAME__", name)
        .replace("__RULES__", &type_name(name))
        .replace("__SDK__", &sdk.display().to_string())
        .replace("__WASM__", &name.replace('-', "_"))
}

/// Writes `files`, then makes the project's test.sh and build.sh executable.
fn write_scripted(project: &Path, files: &[(&str, String)]) -> Result<(), ScaffoldError> {
    write_files(project, files)?;
    use std::os::unix::fs::PermissionsExt;
    for script in ["test.sh", "build.sh"] {
        let path = project.join(script);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .map_err(|source| ScaffoldError::Write { path, source })?;
    }
    Ok(())
}

fn write_files(project: &Path, files: &[(&str, String)]) -> Result<(), ScaffoldError> {
    for (file, text) in files {
        let path = project.join(file);
        let write = |path: &Path| {
            std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
            std::fs::write(path, text)
        };
        write(&path).map_err(|source| ScaffoldError::Write { path, source })?;
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), ScaffoldError> {
    let valid = (2..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && !name.contains("--");
    if valid {
        Ok(())
    } else {
        Err(ScaffoldError::Name(name.to_owned()))
    }
}

/// `checkout-rules` as `CheckoutRules`.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map_or(String::new(), |c| c.to_ascii_uppercase().to_string() + chars.as_str())
        })
        .collect()
}

const CARGO_TOML: &str = r#"[package]
name = "__NAME__"
version = "0.1.0"
edition = "2021"

[lib]
# cdylib: the component; rlib: the unit tests run natively.
crate-type = ["cdylib", "rlib"]

[dependencies]
sessionize-sdk = { path = "__SDK__" }

# A workspace of its own, apart from any around it.
[workspace]

# What guest/build.sh builds with: small and fast, no unwinding (a panic aborts
# the call, and the host rebuilds the instance).
[profile.guest]
inherits = "release"
opt-level = 3
panic = "abort"
codegen-units = 1
lto = true
debug = false
strip = true
"#;

const LIB_RS: &str = r#"//! __NAME__: session rules for Sessionize.
//!
//! A session ends after the job's inactivity timeout or once it would last
//! longer than its maximum duration (`Limits`, what the default rules do); on
//! top of that, these rules end a session right after an order is confirmed.

use sessionize_sdk::{EndReason, Event, Expiry, Limits, Rules, Session, Settings};

/// Inactivity and maximum duration, and the end of a purchase.
pub struct __RULES__ {
    limits: Limits,
}

impl Rules for __RULES__ {
    fn new(settings: &Settings) -> Result<Self, String> {
        Ok(Self { limits: Limits::from_settings(settings)? })
    }

    fn expiry(&self, session: &Session) -> Expiry {
        self.limits.expiry(session)
    }

    fn ends_after(&self, _session: &Session, event: &Event) -> Option<EndReason> {
        (event.page_name() == Some("order-confirmed")).then(|| EndReason::Custom("purchase".into()))
    }
}

sessionize_sdk::export_rules!(__RULES__);

#[cfg(test)]
mod tests {
    use sessionize_sdk::testing::{at, Harness};
    use sessionize_sdk::{EndReason, Settings};

    use super::__RULES__;

    const MIN: i64 = 60_000;

    fn sessions(events: &[sessionize_sdk::testing::TestEvent]) -> Vec<(i64, u32, EndReason)> {
        let mut harness = match Harness::<__RULES__>::new(&Settings::new(30 * MIN, 120 * MIN)) {
            Ok(harness) => harness,
            Err(error) => panic!("{error}"),
        };
        let closed = harness.finish(events);
        closed.iter().map(|c| (c.start_ms, c.event_count, c.end_reason.clone())).collect()
    }

    #[test]
    fn silence_splits_and_a_confirmed_order_ends_the_session() {
        let purchase = EndReason::Custom("purchase".into());
        let events = [
            at(0).page("home"),
            at(45 * MIN).page("cart"),
            at(46 * MIN).page("order-confirmed"),
            at(47 * MIN).page("home"),
        ];
        assert_eq!(
            sessions(&events),
            [
                (0, 1, EndReason::Inactivity),
                (45 * MIN, 2, purchase),
                (47 * MIN, 1, EndReason::EndOfInput),
            ]
        );
    }
}
"#;

const README_MD: &str = r#"# __NAME__

Session rules for Sessionize, on its Rust SDK (`src/lib.rs`).

```sh
cargo test                                   # the unit tests, natively
__BUILD__ .                 # the component: ./__WASM__.wasm
sessionize generate -o events.jsonl           # or your own events
sessionize plugin test __WASM__.wasm --input events.jsonl --against builtin   # what changes
sessionize plugin deploy __WASM__.wasm         # into a running job
```
"#;

const APP_PY: &str = r##""""__NAME__: session rules for Sessionize, on its Python SDK.

A session ends after the job's inactivity timeout or once it would last longer
than its maximum duration (what the default rules do); on top of that, these
rules end a session right after an order is confirmed, and write one column,
`purchased`, for every session.
"""

from sessionize_sdk import Attribute, EndReason, Limits, SessionRules, export

PURCHASED = Attribute.boolean("purchased", "The session confirmed an order")


class __RULES__(SessionRules):
    fields = []
    attributes = [PURCHASED]

    def __init__(self, settings):
        self.limits = Limits.from_settings(settings)

    def expiry(self, session):
        return self.limits.expiry(session)

    def observe(self, session, event):
        session.set(PURCHASED, event.page_name == "order-confirmed")

    def ends_after(self, session, event):
        if event.page_name == "order-confirmed":
            return EndReason.custom("purchase")
        return None


Rules = export(__RULES__, name="__NAME__", version="0.1.0")
"##;

const TEST_APP_PY: &str = r#"import unittest

from sessionize_sdk import EndReason
from sessionize_testing import Harness, at

from app import PURCHASED, __RULES__

MIN = 60_000


class __RULES__Test(unittest.TestCase):
    def test_silence_splits_and_a_confirmed_order_ends_the_session(self):
        closed = Harness(__RULES__).finish([
            at(0, page="home"),
            at(45 * MIN, page="cart"),
            at(46 * MIN, page="order-confirmed"),
            at(47 * MIN, page="home"),
        ])
        got = [(c.start_ms, c.event_count, c.end_reason, c.get(PURCHASED)) for c in closed]
        self.assertEqual(got, [
            (0, 1, EndReason.INACTIVITY, False),
            (45 * MIN, 2, EndReason.custom("purchase"), True),
            (47 * MIN, 1, EndReason.END_OF_INPUT, False),
        ])


if __name__ == "__main__":
    unittest.main()
"#;

const TEST_SH: &str = r#"#!/usr/bin/env bash
# The unit tests, natively: the contract's Python bindings, then unittest.
set -euo pipefail
cd "$(dirname "$0")"
PY="${COMPONENTIZE_PY:-componentize-py}"
"$PY" -d __WIT__ -w session-rules bindings bindings >/dev/null
PYTHONPATH="bindings:__SDK__:." "${PYTHON:-python3}" -m unittest -v test_app
"#;

const BUILD_SH: &str = r#"#!/usr/bin/env bash
# The component: ./__WASM__.wasm (CPython inside, about 18 MB).
set -euo pipefail
cd "$(dirname "$0")"
PY="${COMPONENTIZE_PY:-componentize-py}"
"$PY" -d __WIT__ -w session-rules componentize app -p . -p __SDK__ -o __WASM__.wasm
"#;

const PY_README_MD: &str = r#"# __NAME__

Session rules for Sessionize, on its Python SDK (`app.py`), built with
componentize-py (`pip install componentize-py`, or the one in Sessionize's
`~/.cache/sessionize/venv/bin`; set `COMPONENTIZE_PY` to its path).

```sh
./test.sh                                    # the unit tests, natively
./build.sh                                   # the component: ./__WASM__.wasm
sessionize generate -o events.jsonl           # or your own events
sessionize plugin test __WASM__.wasm --input events.jsonl --against builtin   # what changes
sessionize plugin deploy __WASM__.wasm         # into a running job
```
"#;

const RULES_JS: &str = r#"// __NAME__: session rules for Sessionize, on its JavaScript SDK.
//
// A session ends after the job's inactivity timeout or once it would last
// longer than its maximum duration (what the default rules do); on top of
// that, these rules end a session right after an order is confirmed, and
// write one column, `purchased`, for every session.

import { Attribute, EndReason, Limits, SessionRules, exportRules } from './sdk.js';

export const PURCHASED = Attribute.boolean('purchased', 'The session confirmed an order');

export class __RULES__ extends SessionRules {
  static attributes = [PURCHASED];

  constructor(settings) {
    super();
    this.limits = Limits.fromSettings(settings);
  }

  expiry(session) {
    return this.limits.expiry(session);
  }

  observe(session, event) {
    session.set(PURCHASED, event.pageName === 'order-confirmed');
  }

  endsAfter(session, event) {
    return event.pageName === 'order-confirmed' ? EndReason.custom('purchase') : undefined;
  }
}

export const rules = exportRules(__RULES__, { name: '__NAME__', version: '0.1.0' });
"#;

const RULES_TEST_JS: &str = r#"// The rules natively, with node's test runner (./test.sh).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { EndReason, Harness, at } from './sdk.js';
import { PURCHASED, __RULES__ } from './rules.js';

const MIN = 60_000;

test('silence splits and a confirmed order ends the session', () => {
  const closed = new Harness(__RULES__).finish([
    at(0, { page: 'home' }),
    at(45 * MIN, { page: 'cart' }),
    at(46 * MIN, { page: 'order-confirmed' }),
    at(47 * MIN, { page: 'home' }),
  ]);
  assert.deepEqual(
    closed.map((c) => [Number(c.startMs), c.eventCount, c.endReason, c.get(PURCHASED)]),
    [
      [0, 1, EndReason.INACTIVITY, false],
      [45 * MIN, 2, EndReason.custom('purchase'), true],
      [47 * MIN, 1, EndReason.END_OF_INPUT, false],
    ],
  );
});
"#;

const SDK_JS: &str = r#"// The Sessionize JavaScript SDK, from the checkout this project was made
// from (`sessionize plugin new --sdk` picks another), and its test harness.
export * from '__SDK__/sessionize.js';
export { Harness, at } from '__SDK__/testing.js';
"#;

const JS_TEST_SH: &str = r#"#!/usr/bin/env bash
# The unit tests, natively, with node's test runner (Node is fetched if missing).
set -euo pipefail
cd "$(dirname "$0")"
exec __SDK__/test.sh rules.test.js
"#;

const JS_BUILD_SH: &str = r#"#!/usr/bin/env bash
# The component: ./__WASM__.wasm (a JavaScript engine inside, about 12 MB).
set -euo pipefail
cd "$(dirname "$0")"
exec __SDK__/build.sh rules.js __WASM__.wasm
"#;

const JS_README_MD: &str = r#"# __NAME__

Session rules for Sessionize, on its JavaScript SDK (`rules.js`), built with
componentize-js. The scripts fetch Node (>= 20) and the npm packages they
need into `~/.cache/sessionize/js-rules-node` the first time.

```sh
./test.sh                                    # the unit tests, natively (node --test)
./build.sh                                   # the component: ./__WASM__.wasm
sessionize generate -o events.jsonl           # or your own events
sessionize plugin test __WASM__.wasm --input events.jsonl --against builtin   # what changes
sessionize plugin deploy __WASM__.wasm         # into a running job
```
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_crates_and_types() {
        assert_eq!(type_name("checkout-rules"), "CheckoutRules");
        for bad in ["", "a", "Rules", "1rules", "my_rules", "rules-", "a--b", "ünï"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert!(check_name("checkout-rules2").is_ok());
    }

    #[test]
    fn an_existing_project_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest/sdk");
        let made = new_rust_plugin("my-rules", dir.path(), &sdk).unwrap();
        assert!(made.join("src/lib.rs").is_file());
        let lib = std::fs::read_to_string(made.join("src/lib.rs")).unwrap();
        assert!(lib.contains("pub struct MyRules") && lib.contains("export_rules!(MyRules)"));
        let again = new_rust_plugin("my-rules", dir.path(), &sdk).unwrap_err();
        assert!(matches!(again, ScaffoldError::Exists(_)), "{again}");
        let no_sdk = new_rust_plugin("other", dir.path(), dir.path()).unwrap_err();
        assert!(no_sdk.to_string().contains("--sdk"), "{no_sdk}");
    }

    #[test]
    fn a_python_project_names_its_sdk_and_contract_and_its_scripts_run() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest/python-sdk");
        let made = new_python_plugin("py-rules", dir.path(), &sdk).unwrap();
        let app = std::fs::read_to_string(made.join("app.py")).unwrap();
        assert!(app.starts_with("\"\"\"py-rules: session rules"), "{app}");
        assert!(app.contains("class PyRules(SessionRules)") && app.contains("name=\"py-rules\""));
        let test = std::fs::read_to_string(made.join("test.sh")).unwrap();
        let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit").canonicalize().unwrap();
        assert!(test.contains(&format!("-d {}", wit.display())), "{test}");
        for script in ["test.sh", "build.sh"] {
            let mode = std::fs::metadata(made.join(script)).unwrap().permissions().mode();
            assert_eq!(mode & 0o111, 0o111, "{script}");
        }
        let no_sdk = new_python_plugin("other", dir.path(), dir.path()).unwrap_err();
        assert!(no_sdk.to_string().contains("no Sessionize Python SDK"), "{no_sdk}");
    }

    #[test]
    fn a_js_project_names_its_sdk_and_its_scripts_run() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest/js-sdk");
        let made = new_js_plugin("js-rules", dir.path(), &sdk).unwrap();
        let rules = std::fs::read_to_string(made.join("rules.js")).unwrap();
        assert!(rules.contains("class JsRules extends SessionRules"), "{rules}");
        assert!(rules.contains("name: 'js-rules'"), "{rules}");
        let shim = std::fs::read_to_string(made.join("sdk.js")).unwrap();
        let sdk = sdk.canonicalize().unwrap();
        assert!(shim.contains(&format!("'{}/sessionize.js'", sdk.display())), "{shim}");
        for script in ["test.sh", "build.sh"] {
            let mode = std::fs::metadata(made.join(script)).unwrap().permissions().mode();
            assert_eq!(mode & 0o111, 0o111, "{script}");
        }
        let no_sdk = new_js_plugin("other", dir.path(), dir.path()).unwrap_err();
        assert!(no_sdk.to_string().contains("no Sessionize JavaScript SDK"), "{no_sdk}");
    }
}
