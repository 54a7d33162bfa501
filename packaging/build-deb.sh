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
# The upstream changelog, under the name Debian gives it.
gzip -9n <CHANGELOG.md >packaging/generated/changelog.gz

deb=$(cargo deb --no-build --locked | tail -n 1)
if [ ! -f "$deb" ]; then
    echo "build-deb: cargo deb did not say where the package is (got: $deb)" >&2
    exit 1
fi

# cargo-deb writes no md5sums: add them (debsums and dpkg --verify read them), and
# repack with files owned by root.
unpacked=$(mktemp -d)
trap 'rm -rf "$unpacked"' EXIT
dpkg-deb -R "$deb" "$unpacked"
(cd "$unpacked" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' \
    | sort -z | xargs -0 md5sum >DEBIAN/md5sums)
chmod 0644 "$unpacked/DEBIAN/md5sums"
dpkg-deb --root-owner-group -Zxz -b "$unpacked" "$deb" >/dev/null

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
expect /usr/lib/systemd/system/tented-bulkd@.service
expect /usr/share/doc/tented-bulkd/changelog.gz
expect /usr/share/doc/tented-bulkd/changelog.Debian.gz
expect /usr/share/doc/tented-bulkd/copyright
expect /usr/share/tented-bulkd/tented-bulkd.rules.yml
expect /usr/share/tented-bulkd/tented-bulkd.dashboard.json
expect /usr/share/bash-completion/completions/tented-bulkd
expect /usr/share/zsh/vendor-completions/_tented-bulkd
expect /usr/share/fish/vendor_completions.d/tented-bulkd.fish
for page in packaging/generated/man/*.1; do
    expect "/usr/share/man/man1/$(basename "$page")"
done

info=$(dpkg-deb -I "$deb")
for script in postinst prerm postrm conffiles md5sums; do
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

# lintian, pedantic: no error and no warning (each accepted one is overridden, with why,
# in debian/tented-bulkd.lintian-overrides). Skipped, saying so, where it is absent.
if command -v lintian >/dev/null 2>&1; then
    report=$(lintian --pedantic --info "$deb" 2>&1 | grep -v '^running with root privileges' || true)
    if [ -n "$report" ]; then
        echo "$report" >&2
    fi
    if grep -qE '^[EW]: ' <<<"$report"; then
        echo "build-deb: lintian reports errors or warnings" >&2
        exit 1
    fi
    echo "build-deb: lintian --pedantic: no error, no warning" >&2
else
    echo "build-deb: lintian is not installed: not checked (apt-get install lintian)" >&2
fi
echo "$deb"
