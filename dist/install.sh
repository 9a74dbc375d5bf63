#!/bin/sh
# Installs cairn on this machine as OPERATIONS.md describes: the binary, the system user
# `cairn`, /etc/cairn with the example settings (kept if already there), the systemd
# units, man pages and shell completions. It starts nothing.
#
#   sudo dist/install.sh [BINARY]        BINARY: default target/release/cairn
#
# With DESTDIR=/some/root every path is under that root and the steps that change the
# machine itself (useradd, file owners, systemctl daemon-reload) are skipped: for
# packaging, and for the test that runs this script.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-target/release/cairn}
root=${DESTDIR:-}

[ -x "$bin" ] || { echo "install.sh: no executable $bin (cargo build --release first)" >&2; exit 1; }

if [ -z "$root" ]; then
    getent group cairn >/dev/null || groupadd --system cairn
    getent passwd cairn >/dev/null ||
        useradd --system --gid cairn --home-dir /var/lib/cairn --shell /usr/sbin/nologin cairn
    own="-o root -g cairn"
    # The data dir, ready for the first start by hand (`--init`, OPERATIONS.md); the
    # units' StateDirectory= would make it too.
    install -d -m 0700 -o cairn -g cairn /var/lib/cairn
else
    own=""
fi

install -d "$root/usr/bin" "$root/etc/systemd/system" "$root/usr/share/man/man1" \
    "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
    "$root/usr/share/fish/vendor_completions.d"
install -m 0755 "$bin" "$root/usr/bin/cairn"
# Settings and secrets: readable by root and the cairn group only.
# shellcheck disable=SC2086
install -d -m 0750 $own "$root/etc/cairn" "$root/etc/cairn/tls"
for f in cairn.toml executor.toml; do
    # shellcheck disable=SC2086
    [ -e "$root/etc/cairn/$f" ] || install -m 0640 $own "$here/$f" "$root/etc/cairn/$f"
done
install -m 0644 "$here/cairn-serve.service" "$here/cairn-executor.service" "$root/etc/systemd/system/"

"$root/usr/bin/cairn" man --dir "$root/usr/share/man/man1" >/dev/null
"$root/usr/bin/cairn" completions bash >"$root/usr/share/bash-completion/completions/cairn"
"$root/usr/bin/cairn" completions zsh >"$root/usr/share/zsh/vendor-completions/_cairn"
"$root/usr/bin/cairn" completions fish >"$root/usr/share/fish/vendor_completions.d/cairn.fish"

if [ -z "$root" ]; then
    systemctl daemon-reload
fi
echo "installed cairn; edit /etc/cairn/cairn.toml (a node) or /etc/cairn/executor.toml (an executor), then see OPERATIONS.md"
