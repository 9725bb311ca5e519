#!/usr/bin/env bash
# Fetches Debian's rustc-web (a rustc that ships LLVM with every wasm target,
# the library source and wasm-ld) into a private cache, unpacked, not
# installed, and writes `env` beside it for other scripts to source:
#   . "$(guest/toolchain.sh)"      # sets TOOLCHAIN_RUSTC, TOOLCHAIN_WASM_LD, LD_LIBRARY_PATH
# guest/build.sh uses it when no wasm32-wasip2 target is installed; tests/run.sh
# builds the nisshi broker with it (nisshi needs a newer rustc than rustup's).
#
# The package versions are looked up in the archive (rustc-web follows Rust's
# releases in Debian's security archive), not pinned. Prints the env file's path.
set -euo pipefail

CACHE="${SESSIONIZE_CACHE:-$HOME/.cache/sessionize}"
TOOLCHAIN="$CACHE/wasm-toolchain"
ENV_FILE="$TOOLCHAIN/env"

say() { echo "toolchain: $*" >&2; }
fail() { echo "toolchain: $*" >&2; exit 1; }

# The name a package depends on that matches a pattern (libstd-rust-web-1.96, libllvm22).
dependency() {
    apt-cache depends "$1" 2>/dev/null | sed -n "s/^ *Depends: \($2\)\$/\1/p" | head -n 1
}

update_lists() {
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
    elif sudo -n true 2>/dev/null; then
        sudo apt-get update -qq
    else
        return 1
    fi
}

download() {
    (cd "$TOOLCHAIN/debs" && apt-get download -qq rustc-web "$1" libstd-rust-web-dev \
        rust-web-src "$2" "$3" 2>&1 | grep -v unsandboxed >&2) || true
}

fetch() {
    rm -rf "$TOOLCHAIN" && mkdir -p "$TOOLCHAIN/debs" "$TOOLCHAIN/root"
    if [ -z "$(dependency libstd-rust-web-dev 'libstd-rust-web-[0-9.]*')" ]; then
        update_lists || fail "Debian's package lists are empty and this user cannot update them: run 'sudo apt-get update', then this again"
    fi
    local std llvm lld
    std="$(dependency libstd-rust-web-dev 'libstd-rust-web-[0-9.]*')"
    [ -n "$std" ] || fail "Debian's archive offers no rustc-web (bookworm-security main): add it to /etc/apt/sources.list, or install a wasm32-wasip2 target with 'rustup target add wasm32-wasip2'"
    llvm="$(dependency "$std" 'libllvm[0-9]*')"
    [ -n "$llvm" ] || fail "could not tell which LLVM $std is built on (apt-cache depends $std)"
    lld="lld-${llvm#libllvm}"
    say "fetching rustc-web, $std, $llvm and $lld into $TOOLCHAIN"
    local n
    download "$std" "$llvm" "$lld"
    n="$(find "$TOOLCHAIN/debs" -name '*.deb' | wc -l)"
    if [ "$n" != 6 ]; then
        # Lists that name versions the archive no longer has (a security
        # update moved on), or none at all (an image that removed them).
        say "fetched $n of 6; updating the package lists and trying again"
        update_lists || fail "fetched $n of the 6 packages and this user cannot run 'apt-get update': run 'sudo apt-get update', then this again"
        rm -f "$TOOLCHAIN"/debs/*.deb
        download "$std" "$llvm" "$lld"
        n="$(find "$TOOLCHAIN/debs" -name '*.deb' | wc -l)"
    fi
    [ "$n" = 6 ] || fail "fetched $n of the 6 packages (apt-get download rustc-web $std libstd-rust-web-dev rust-web-src $llvm $lld); check the network and 'apt-get update', then run this again"
    for f in "$TOOLCHAIN"/debs/*.deb; do dpkg -x "$f" "$TOOLCHAIN/root"; done
    local llvm_dir="$TOOLCHAIN/root/usr/lib/llvm-${llvm#libllvm}"
    cat > "$ENV_FILE.tmp" <<EOF
TOOLCHAIN_RUSTC="$TOOLCHAIN/root/usr/bin/rustc"
TOOLCHAIN_WASM_LD="$llvm_dir/bin/wasm-ld"
export LD_LIBRARY_PATH="$TOOLCHAIN/root/usr/lib/x86_64-linux-gnu:$llvm_dir/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
EOF
    mv "$ENV_FILE.tmp" "$ENV_FILE"
}

usable() {
    [ -f "$ENV_FILE" ] || return 1
    (. "$ENV_FILE" && [ -x "$TOOLCHAIN_WASM_LD" ] && "$TOOLCHAIN_RUSTC" --version >/dev/null 2>&1)
}

if ! usable; then
    fetch
    usable || fail "the unpacked rustc in $TOOLCHAIN does not run; remove $TOOLCHAIN and run this again"
fi
echo "$ENV_FILE"
