# Sourced by build.sh and test.sh: puts a Node >= 20 on PATH and the npm
# packages of package.json (exact versions in package-lock.json) in $JS_DEPS.
#
# The packages are installed once into $SESSIONIZE_CACHE/js-rules-node
# (default ~/.cache/sessionize) and reused while the lock file is unchanged.
# Without a Node >= 20, this fetches Node from npm's node-linux-<arch> package
# (and, if npm itself is missing, Debian's npm first).

JS_SDK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
JS_DEPS="${SESSIONIZE_CACHE:-$HOME/.cache/sessionize}/js-rules-node"
NODE_MIN=20
NODE_PKG=22.23.5 # version of npm's node-linux-<arch>, used only as a fallback

node_ok() { command -v node >/dev/null && [ "$(node -p 'process.versions.node.split(".")[0]')" -ge "$NODE_MIN" ]; }

mkdir -p "$JS_DEPS"
[ -x "$JS_DEPS/node/bin/node" ] && export PATH="$JS_DEPS/node/bin:$PATH"
if ! node_ok; then
    if ! command -v npm >/dev/null; then
        echo "js-sdk: installing Debian's npm (to fetch Node >= $NODE_MIN)"
        SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
        $SUDO apt-get update -qq && $SUDO apt-get install -y -qq npm >/dev/null
    fi
    case "$(uname -m)" in x86_64) arch=x64 ;; aarch64) arch=arm64 ;; *) arch="$(uname -m)" ;; esac
    echo "js-sdk: fetching Node $NODE_PKG from npm (node-linux-$arch) into $JS_DEPS/node"
    rm -rf "$JS_DEPS/node-pkg" "$JS_DEPS/node"
    npm install --prefix "$JS_DEPS/node-pkg" --no-save --no-audit --no-fund --loglevel=error \
        "node-linux-$arch@$NODE_PKG"
    mv "$JS_DEPS/node-pkg/node_modules/node-linux-$arch" "$JS_DEPS/node" && rm -rf "$JS_DEPS/node-pkg"
    export PATH="$JS_DEPS/node/bin:$PATH"
    node_ok || { echo "js-sdk: no usable Node >= $NODE_MIN" >&2; exit 1; }
fi

# Install (npm ci: exactly the lock file) only when the manifests changed.
# package.json names @bytecodealliance/preview2-shim itself: componentize-js
# imports it without declaring it, and `npm ci` would leave it out.
JS_STAMP="$(cat "$JS_SDK/package.json" "$JS_SDK/package-lock.json" | sha256sum | cut -c1-16)"
if [ "$(cat "$JS_DEPS/stamp" 2>/dev/null)" != "$JS_STAMP" ] || [ ! -d "$JS_DEPS/node_modules" ]; then
    echo "js-sdk: installing npm packages into $JS_DEPS (Node $(node --version))"
    cp "$JS_SDK/package.json" "$JS_SDK/package-lock.json" "$JS_DEPS/"
    rm -f "$JS_DEPS/stamp"
    (cd "$JS_DEPS" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$JS_STAMP" >"$JS_DEPS/stamp"
fi
