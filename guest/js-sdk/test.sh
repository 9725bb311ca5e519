#!/usr/bin/env bash
# Runs JavaScript rules' unit tests natively with node's test runner:
# `test.sh [PATH...]` (default: the SDK's own tests). The tests import the
# SDK and its harness (testing.js) by relative path.
set -euo pipefail
# shellcheck source=node.sh
. "$(dirname "${BASH_SOURCE[0]}")/node.sh"
[ $# -gt 0 ] || set -- "$JS_SDK"
node --test "$@"
