#!/usr/bin/env bash
# Installs, enables, removes, purges and reinstalls the package on this machine (as root)
# and checks what each step leaves, as the README promises:
# - install: the user and group, the folders with their modes, the units, not enabled;
# - remove: the binary gone; the configuration, the store and the results kept;
# - purge: the configuration and every enable link gone (a purged package must not
#   start at the next boot), the store, the results, the user and group kept;
# - reinstall after a purge: the service is not enabled.
# Leaves the package purged and its folders removed (the user and group stay, as a purge
# leaves them).
#
#   packaging/test-package.sh [PATH.deb]     (default: what packaging/build-deb.sh builds)
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "test-package: run as root" >&2; exit 2; }
deb=${1:-$(packaging/build-deb.sh | tail -n 1)}
fail=0
# Whatever happens, the package does not stay installed.
trap 'dpkg --purge tented-bulkd >/dev/null 2>&1 || true' EXIT
check() { # check WHAT COMMAND...
    local what=$1; shift
    if "$@" >/dev/null 2>&1; then echo "ok   $what"; else echo "FAIL $what"; fail=1; fi
}
wants=/etc/systemd/system/multi-user.target.wants
mode() { stat -c %a "$1"; }

echo "== install $deb"
dpkg -i "$deb" >/dev/null
check "the binary runs" tented-bulkd --version
check "the user tented-bulkd exists" getent passwd tented-bulkd
check "the group tented-bulkd exists" getent group tented-bulkd
check "inbox is 3770" test "$(mode /var/lib/tented-bulkd/inbox)" = 3770
check "state is 0700" test "$(mode /var/lib/tented-bulkd/state)" = 700
check "the unit is installed" test -f /usr/lib/systemd/system/tented-bulkd.service
check "the template unit is installed" test -f /usr/lib/systemd/system/tented-bulkd@.service
check "not enabled at install" test ! -e "$wants/tented-bulkd.service"
check "dpkg --verify finds every file as shipped" dpkg --verify tented-bulkd

echo "== enable, as an operator would, and leave a key and a result"
systemctl enable tented-bulkd.service >/dev/null 2>&1 || true
systemctl enable tented-bulkd@acme.service >/dev/null 2>&1 || true
check "enabled: the wants link exists" test -L "$wants/tented-bulkd.service"
check "an instance enabled: its wants link exists" test -L "$wants/tented-bulkd@acme.service"
install -m 0600 /dev/null /etc/tented-bulkd/api_key
echo '{}' >/var/lib/tented-bulkd/outbox/kept.result.json

echo "== remove"
dpkg -r tented-bulkd >/dev/null
check "the binary is gone" test ! -e /usr/bin/tented-bulkd
check "the configuration is kept" test -f /etc/tented-bulkd/config.toml
check "the results are kept" test -f /var/lib/tented-bulkd/outbox/kept.result.json

echo "== purge"
dpkg --purge tented-bulkd >/dev/null
check "the configuration is gone" test ! -e /etc/tented-bulkd/config.toml
check "no enable link is left" test ! -e "$wants/tented-bulkd.service"
check "no instance's enable link is left" test ! -e "$wants/tented-bulkd@acme.service"
check "no unit is left" test ! -e /usr/lib/systemd/system/tented-bulkd.service
check "the results and the store are kept" test -f /var/lib/tented-bulkd/outbox/kept.result.json
check "the user is kept" getent passwd tented-bulkd
check "the group is kept" getent group tented-bulkd

echo "== reinstall after the purge"
dpkg -i "$deb" >/dev/null
check "not enabled after a purge and a reinstall" test ! -e "$wants/tented-bulkd.service"
state=$(systemctl is-enabled tented-bulkd.service 2>/dev/null || true)
check "systemctl is-enabled says disabled (said: $state)" test "$state" = disabled

echo "== clean up"
dpkg --purge tented-bulkd >/dev/null 2>&1
rm -rf /var/lib/tented-bulkd /etc/tented-bulkd
[ "$fail" = 0 ] && echo "test-package: every check passed" || { echo "test-package: some checks failed" >&2; exit 1; }
