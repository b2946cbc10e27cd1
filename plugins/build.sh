#!/usr/bin/env bash
# Builds every example plugin to plugins/dist/<name>.wasm.
#
#   plugins/build.sh            # from any directory; idempotent, fast when nothing changed
#
# Rust examples (plugins/examples/*/Cargo.toml, one workspace) are built for
# wasm32-unknown-unknown with one of two toolchains:
#
#   rustup  when `rustup target list --installed` has wasm32-unknown-unknown
#           (`rustup target add wasm32-unknown-unknown`): plain
#           `cargo build --release --target wasm32-unknown-unknown`.
#   debian  otherwise: Debian's rustc-web/cargo-web (which ship no
#           precompiled wasm32 std) build std from rust-web-src with
#           -Zbuild-std, linking with rust-lld (lld-22). The packages are
#           installed with apt-get if missing.
#
# RUNNEL_PLUGIN_TOOLCHAIN=rustup|debian forces one; RUNNEL_PLUGIN_RUSTFLAGS
# replaces RUSTFLAGS for the guest build. C examples
# (plugins/examples/*/*.c, no Cargo.toml) are built with clang
# --target=wasm32 and wasm-ld (packages clang, lld), no C library.
#
# Output goes to plugins/target (build tree) and plugins/dist (one .wasm per
# plugin, replaced atomically and only when its bytes change). Exits
# non-zero on any failure.
set -euo pipefail

plugins_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
examples_dir="$plugins_dir/examples"
target_dir="$plugins_dir/target"
dist_dir="$plugins_dir/dist"
wasm_target=wasm32-unknown-unknown

debian_rust_packages=(rustc-web cargo-web rust-web-src lld-22)
c_packages=(clang lld)

log() { printf 'plugins/build.sh: %s\n' "$*"; }
die() { printf 'plugins/build.sh: error: %s\n' "$*" >&2; exit 1; }

# Settings meant for a host build (RUSTFLAGS=-Ctarget-cpu=native, a target
# directory or target) must not leak into the wasm build, which may run
# from a host build's tests; RUNNEL_PLUGIN_RUSTFLAGS is passed instead.
unset CARGO_TARGET_DIR CARGO_BUILD_TARGET CARGO_ENCODED_RUSTFLAGS RUSTFLAGS
if [[ -n ${RUNNEL_PLUGIN_RUSTFLAGS:-} ]]; then
    export RUSTFLAGS="$RUNNEL_PLUGIN_RUSTFLAGS"
fi

mkdir -p "$target_dir" "$dist_dir"

# Builds started concurrently (tests, CI) take turns.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$target_dir/.build.lock"
    flock 9
fi

started=$SECONDS

missing_packages() {
    local pkg
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            printf '%s\n' "$pkg"
        fi
    done
}

apt_install() {
    command -v apt-get >/dev/null 2>&1 ||
        die "cannot install $* (no apt-get): see plugins/README.md for the toolchain"
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "installing $* needs root or sudo"
        sudo=(sudo)
    fi
    log "installing $*"
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_packages() {
    local missing
    if ! command -v dpkg-query >/dev/null 2>&1; then
        die "no dpkg on this machine: install $* or their equivalents (see plugins/README.md)"
    fi
    mapfile -t missing < <(missing_packages "$@")
    if ((${#missing[@]})); then
        apt_install "${missing[@]}"
    fi
}

rustup_has_wasm_target() {
    command -v rustup >/dev/null 2>&1 &&
        rustup target list --installed 2>/dev/null | grep -qx "$wasm_target"
}

toolchain="${RUNNEL_PLUGIN_TOOLCHAIN:-auto}"
if [[ $toolchain == auto ]]; then
    if rustup_has_wasm_target; then toolchain=rustup; else toolchain=debian; fi
fi

cargo_build=()
case "$toolchain" in
rustup)
    rustup_has_wasm_target ||
        die "rustup has no $wasm_target target: run 'rustup target add $wasm_target'"
    cargo_build=(cargo build --release --target "$wasm_target")
    ;;
debian)
    ensure_packages "${debian_rust_packages[@]}"
    # rustc-web ships /usr/bin/rust-lld -> lld-22, the linker rustc uses for
    # wasm32; if it is missing, name lld's wasm flavour directly.
    if ! command -v rust-lld >/dev/null 2>&1 && ! [[ -x /usr/bin/rust-lld ]]; then
        for linker in wasm-ld-22 wasm-ld; do
            if command -v "$linker" >/dev/null 2>&1; then
                export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$linker"
                break
            fi
        done
    fi
    # shellcheck disable=SC2054 # the comma belongs to -Zbuild-std=std,panic_abort
    cargo_build=(env PATH="/usr/bin:$PATH" RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1
        /usr/bin/cargo build --release --target "$wasm_target" -Zbuild-std=std,panic_abort)
    ;;
*)
    die "RUNNEL_PLUGIN_TOOLCHAIN must be rustup or debian, not '$toolchain'"
    ;;
esac

# Copies $1 to $dist_dir/$2.wasm if its bytes changed; prints a line either way.
publish() {
    local built="$1" name="$2" dest="$dist_dir/$2.wasm" size state
    [[ -f $built ]] || die "$name: $built was not built"
    if cmp -s "$built" "$dest"; then
        state=unchanged
    else
        cp "$built" "$dest.tmp.$$"
        mv -f "$dest.tmp.$$" "$dest"
        state=updated
    fi
    size=$(wc -c <"$dest")
    printf '  %-24s %8d bytes  %s\n' "$name.wasm" "$size" "$state"
}

# --- Rust examples -----------------------------------------------------------
rust_examples=()
for manifest in "$examples_dir"/*/Cargo.toml; do
    name="$(basename "$(dirname "$manifest")")"
    grep -q "^name = \"$name\"" "$manifest" ||
        die "$manifest: the package must be named like its directory ($name)"
    rust_examples+=("$name")
done

log "building ${#rust_examples[@]} Rust plugins ($toolchain toolchain)"
(cd "$examples_dir" && "${cargo_build[@]}" --target-dir "$target_dir" --quiet) ||
    die "cargo build of the Rust plugins failed"

# --- C examples ----------------------------------------------------------------
c_examples=()
for dir in "$examples_dir"/*/; do
    dir="${dir%/}"
    if [[ ! -f $dir/Cargo.toml ]] && compgen -G "$dir/*.c" >/dev/null; then
        c_examples+=("$(basename "$dir")")
    fi
done

if ((${#c_examples[@]})); then
    if ! command -v clang >/dev/null 2>&1 || ! command -v wasm-ld >/dev/null 2>&1; then
        ensure_packages "${c_packages[@]}"
    fi
    log "building ${#c_examples[@]} C plugins (clang $(clang -dumpversion))"
    mkdir -p "$target_dir/c"
    for name in "${c_examples[@]}"; do
        out="$target_dir/c/$name.wasm"
        sources=("$examples_dir/$name"/*.c)
        stale=0
        [[ -f $out ]] || stale=1
        for input in "${sources[@]}" "$examples_dir/$name"/*.h "${BASH_SOURCE[0]}"; do
            if [[ -f $input && $input -nt $out ]]; then stale=1; fi
        done
        if ((stale)); then
            clang --target=wasm32 -O2 -std=c11 -ffreestanding -nostdlib -fno-builtin \
                -Wall -Wextra -Werror -Wl,--no-entry \
                -o "$out.tmp" "${sources[@]}" || die "$name: clang failed"
            mv -f "$out.tmp" "$out"
        fi
    done
fi

# --- dist --------------------------------------------------------------------
log "plugins/dist:"
for name in "${rust_examples[@]}"; do
    publish "$target_dir/$wasm_target/release/${name//-/_}.wasm" "$name"
done
for name in "${c_examples[@]}"; do
    publish "$target_dir/c/$name.wasm" "$name"
done
log "done in $((SECONDS - started)) s"
