#!/bin/sh
# Creates the two users hutch's integration tests run as (tests/integration/conftest.py calls it
# when the tests run as root):
#   hutch-t-sub   with the subordinate range 300000:65536 in /etc/subuid and /etc/subgid
#   hutch-t-solo  with no subordinate range at all
# Idempotent, and silent on success.
set -eu

if [ "$(id -u)" -ne 0 ]; then
    echo "tools/test-users.sh: must run as root" >&2
    exit 1
fi

SUB_USER=hutch-t-sub
SOLO_USER=hutch-t-solo
SUB_RANGE=300000:65536

ensure_user() {
    if ! id -u "$1" >/dev/null 2>&1; then
        useradd --create-home --shell /bin/sh --user-group "$1" >/dev/null
    fi
    # A home that exists even when the user was made by hand without one.
    home=$(getent passwd "$1" | cut -d: -f6)
    if [ -n "$home" ] && [ ! -d "$home" ]; then
        mkdir -p "$home"
        chown "$1:" "$home"
        chmod 0755 "$home"
    fi
}

# set_range FILE USER RANGE: leaves exactly one line USER:RANGE for USER (none when RANGE is
# empty), whether the user is named by name or by uid. Rewrites FILE only when it changes.
set_range() {
    file=$1
    user=$2
    range=$3
    uid=$(id -u "$user")
    [ -e "$file" ] || { : >"$file"; chmod 0644 "$file"; }
    tmp=$(mktemp "$file.hutch-test.XXXXXX")
    awk -F: -v u="$user" -v n="$uid" '$1 != u && $1 != n' "$file" >"$tmp"
    if [ -n "$range" ]; then
        echo "$user:$range" >>"$tmp"
    fi
    if cmp -s "$tmp" "$file"; then
        rm -f "$tmp"
        return
    fi
    chmod --reference="$file" "$tmp"
    chown --reference="$file" "$tmp"
    mv -f "$tmp" "$file"
}

ensure_user "$SUB_USER"
ensure_user "$SOLO_USER"
for f in /etc/subuid /etc/subgid; do
    set_range "$f" "$SUB_USER" "$SUB_RANGE"
    set_range "$f" "$SOLO_USER" ""
done
