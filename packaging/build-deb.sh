#!/usr/bin/env bash
# Builds the Debian package of tented-bulkd and checks what is in it.
#
#   packaging/build-deb.sh
#
# 1. installs cargo-deb if it is missing (`cargo install cargo-deb --locked`);
# 2. builds the release binary and has it write its man pages and shell completions
#    (`tented-bulkd generate-assets packaging/generated`: the same clap definitions as
#    --help);
# 3. builds the package (`cargo deb`, from [package.metadata.deb] in Cargo.toml);
# 4. lists it with `dpkg-deb -c` and fails, naming them, when any expected file is
#    missing; checks the conffile and the maintainer scripts with `dpkg-deb -I`.
# Prints the package's path last. Not part of .ci/run: building a release binary and
# cargo-deb takes several minutes.
set -euo pipefail

cd "$(dirname "$0")/.."

if ! cargo deb --version >/dev/null 2>&1; then
    echo "build-deb: installing cargo-deb" >&2
    cargo install cargo-deb --locked
fi

target_dir=$(cargo metadata --format-version 1 --no-deps \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
rm -rf packaging/generated
cargo build --release --locked
"$target_dir/release/tented-bulkd" generate-assets packaging/generated >/dev/null

deb=$(cargo deb --no-build --locked | tail -n 1)
if [ ! -f "$deb" ]; then
    echo "build-deb: cargo deb did not say where the package is (got: $deb)" >&2
    exit 1
fi

contents=$(dpkg-deb -c "$deb" | awk '{ print $NF }' | sed 's|^\./|/|')
missing=0
expect() {
    # A man page may be compressed by cargo-deb (NAME.1.gz).
    if ! grep -qxF -e "$1" -e "$1.gz" <<<"$contents"; then
        echo "build-deb: missing from the package: $1" >&2
        missing=1
    fi
}
expect /usr/bin/tented-bulkd
expect /usr/lib/systemd/system/tented-bulkd.service
expect /usr/lib/sysusers.d/tented-bulkd.conf
expect /usr/lib/tmpfiles.d/tented-bulkd.conf
expect /etc/tented-bulkd/config.toml
# The unit's Documentation= path.
documentation=$(sed -n 's|^Documentation=file:||p' systemd/tented-bulkd.service)
expect "$documentation"
expect /usr/share/doc/tented-bulkd/CHANGELOG.md
expect /usr/share/doc/tented-bulkd/LICENSE-MIT
expect /usr/share/doc/tented-bulkd/LICENSE-APACHE
expect /usr/share/bash-completion/completions/tented-bulkd
expect /usr/share/zsh/vendor-completions/_tented-bulkd
expect /usr/share/fish/vendor_completions.d/tented-bulkd.fish
for page in packaging/generated/man/*.1; do
    expect "/usr/share/man/man1/$(basename "$page")"
done

info=$(dpkg-deb -I "$deb")
for script in postinst prerm postrm conffiles; do
    if ! grep -qw "$script" <<<"$info"; then
        echo "build-deb: the package has no $script" >&2
        missing=1
    fi
done
if ! dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles | grep -qxF /etc/tented-bulkd/config.toml; then
    echo "build-deb: /etc/tented-bulkd/config.toml is not a conffile" >&2
    missing=1
fi

if [ "$missing" -ne 0 ]; then
    echo "build-deb: $deb is incomplete" >&2
    exit 1
fi
echo "build-deb: $(wc -l <<<"$contents") entries checked" >&2
echo "$deb"
