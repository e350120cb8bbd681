#!/bin/sh
# Builds hutch's built-in base root filesystem from Debian's busybox-static:
# the busybox binary with every applet linked, a minimal /etc (root and nobody), /tmp and /root.
# Usage: build.sh DEST [STAMP]   (DEST is replaced atomically; STAMP is touched when done)
set -eu
dest=$1
stamp=${2:-}
busybox=/bin/busybox
if ! [ -x "$busybox" ] || ! "$busybox" --list-full >/dev/null 2>&1; then
    echo "rootfs/busybox: $busybox is missing or not busybox-static (install it: apt-get install busybox-static)" >&2
    exit 1
fi
case "$(file -b "$busybox" 2>/dev/null || echo static)" in
    *dynamically*) echo "rootfs/busybox: $busybox is dynamically linked; install busybox-static" >&2; exit 1 ;;
esac

tmp="$dest.tmp.$$"
rm -rf "$tmp"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp"
cd "$tmp"
mkdir -p bin sbin usr/bin usr/sbin etc root tmp proc sys dev home var/tmp run
cp "$busybox" bin/busybox
chmod 0755 bin/busybox
# Every applet as a relative symlink to /bin/busybox, at the path busybox itself lists.
"$busybox" --list-full | while read -r applet; do
    [ "$applet" = bin/busybox ] && continue
    dir=$(dirname "$applet")
    up=$(echo "$dir" | sed 's|[^/]*|..|g')
    [ -e "$applet" ] || ln -s "$up/bin/busybox" "$applet"
done
chmod 1777 tmp var/tmp
chmod 0700 root
cat > etc/passwd <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat > etc/group <<'GROUP'
root:x:0:
tty:x:5:
nogroup:x:65534:
GROUP
echo "hosts: files dns" > etc/nsswitch.conf
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' > etc/hosts
: > etc/resolv.conf
echo "hutch-busybox" > etc/hostname
cd - >/dev/null
rm -rf "$dest.old"
[ -e "$dest" ] && mv "$dest" "$dest.old"
mv "$tmp" "$dest"
trap - EXIT
rm -rf "$dest.old"
[ -n "$stamp" ] && touch "$stamp"
exit 0
