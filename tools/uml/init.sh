#!/bin/sh
# PID 1 of the User-Mode Linux guest that tools/uml/run.sh boots (see README.md beside this file).
# It runs from the host's / (hostfs, read-only) and finds everything else in the exchange
# directory whose host path the kernel command line hands it as UML_XCHG (the kernel passes
# unknown NAME=VALUE words of its command line to init as environment variables):
#   spec     shell text run.sh wrote: UML_USER, UML_CWD, UML_RW, UML_TMPFS, a function uml_env that exports
#            the caller's environment, and `set -- CMD ARG...`
#   stdout, stderr   CMD's output, written through hostfs as it comes (run.sh tails them)
#   status   CMD's exit status, written once it ends
#   started  written as soon as init runs (run.sh tells "cannot boot" from "failed later")
#   init.log this script's own messages
# The guest's root is an overlay: a tmpfs upper over the host's / as the read-only lower, so
# every host binary and library works and nothing the guest writes reaches the host, except in
# the exchange directory and the directories run.sh was asked to share read-write (--rw).
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
umask 022

X=/run/uml-xchg          # where the exchange directory is mounted (in both roots)
B=/run/uml-boot          # scratch of the first stage: the overlay's layers and new root
R=$B/root

halt() {
    sync
    echo o >/proc/sysrq-trigger 2>/dev/null
    busybox poweroff -f 2>/dev/null
    while :; do sleep 60; done   # PID 1 must not exit: sysrq's power-off runs asynchronously
}

die() {
    echo "uml-init: $*" >&2
    [ -d "$X" ] && echo "uml-init: $*" >>"$X/init.log" 2>/dev/null
    halt
}

log() {
    read -r up _ </proc/uptime 2>/dev/null
    echo "uml-init: [${up:-?}] $*" >>"$X/init.log"
}

# ------------------------------------------------------------------------------------------
# Stage 2 (after pivot_root, on the overlay root): cgroups, users, then CMD.
if [ "${1:-}" = stage2 ]; then
    umount -l /.oldroot 2>/dev/null && rmdir /.oldroot 2>/dev/null
    . "$X/spec" || die "cannot read $X/spec"
    log "stage 2"

    echo uml >/proc/sys/kernel/hostname
    ip link set lo up 2>/dev/null

    # The cgroup2 hierarchy of this kernel, laid out like systemd's.
    cg=/sys/fs/cgroup
    read -r avail <$cg/cgroup.controllers
    ctrls=""
    for c in cpu io memory pids; do
        case " $avail " in *" $c "*) ctrls="$ctrls +$c" ;; esac
    done
    cg_enable() {
        for d; do
            [ -z "$ctrls" ] || echo "$ctrls" >"$d/cgroup.subtree_control" || die "cannot enable$ctrls in $d"
        done
    }

    uid=0
    if [ -n "${UML_USER:-}" ]; then
        IFS=: read -r name _ uid gid _ home shell <<EOF_PW
$(getent passwd "$UML_USER")
EOF_PW
        [ -n "$uid" ] || die "no such user: $UML_USER"
        [ -n "$home" ] || home=/home/$name
        us=$cg/user.slice
        svc=$us/user-$uid.slice/user@$uid.service
        leaf=$svc/app.slice/uml-run.scope
        dirs="$cg/init.scope $leaf /run/user/$uid $home"
    else
        leaf=$cg/system.slice/uml-run.service
        dirs="$cg/init.scope $leaf"
    fi

    # Modules come from /usr/lib/uml/modules/VERSION on the host: the kernel's on-demand loading
    # (nf_tables, veth, ...) finds them through busybox's modprobe.
    read -r kver </proc/sys/kernel/osrelease
    mods=""
    [ -d "/usr/lib/uml/modules/$kver" ] && [ ! -e "/lib/modules/$kver" ] && mods=1 && dirs="$dirs /lib/modules /run/uml-bin"
    # shellcheck disable=SC2086
    mkdir -p $dirs || die "cannot create $dirs"
    if [ -n "$mods" ]; then
        ln -s "/usr/lib/uml/modules/$kver" "/lib/modules/$kver"
        ln -s "$(command -v busybox)" /run/uml-bin/modprobe && echo /run/uml-bin/modprobe >/proc/sys/kernel/modprobe
    fi

    echo $$ >$cg/init.scope/cgroup.procs || die "cannot move init into $cg/init.scope"
    cg_enable $cg
    if [ -n "${UML_USER:-}" ]; then
        # user.slice/user-UID.slice/user@UID.service is delegated to the user as systemd does:
        # the directory and the files /sys/kernel/cgroup/delegate lists are chowned to it (so
        # are app.slice and its leaf uml-run.scope, which the user's own manager would have
        # made). CMD runs in the leaf; the user may create cgroups anywhere under user@UID.service.
        cg_enable $us "$us/user-$uid.slice" "$svc" "$svc/app.slice"
        delegate=""
        while read -r f; do delegate="$delegate $f"; done </sys/kernel/cgroup/delegate
        [ -n "$delegate" ] || delegate="cgroup.procs cgroup.threads cgroup.subtree_control"
        owned=""
        for d in "$svc" "$svc/app.slice" "$leaf"; do
            owned="$owned $d"
            for f in $delegate; do [ -e "$d/$f" ] && owned="$owned $d/$f"; done
        done
        # A home and a runtime directory of its own, on tmpfs (/home and /run are tmpfs here).
        # shellcheck disable=SC2086
        chown "$uid:$gid" $owned "$home" "/run/user/$uid" || die "cannot delegate $svc to $UML_USER"
        chmod 0700 "/run/user/$uid"
        envset="HOME=$home USER=$name LOGNAME=$name SHELL=${shell:-/bin/sh} XDG_RUNTIME_DIR=/run/user/$uid"
    else
        cg_enable $cg/system.slice
        envset="HOME=/root USER=root LOGNAME=root SHELL=/bin/sh"
    fi
    export UML_CGROUP_LEAF="${leaf#"$cg"}"
    [ -n "${UML_USER:-}" ] && export UML_CGROUP_DELEGATE="${svc#"$cg"}"
    log "running as uid $uid in cgroup $leaf"

    # CMD, in its leaf, as its user, with the caller's directory and environment.
    setpriv=$(command -v setpriv)
    (
        echo 0 >"$leaf/cgroup.procs" || { echo "uml: cannot move CMD into $leaf" >&2; exit 125; }
        unset OLDPWD
        uml_env
        # shellcheck disable=SC2086,SC2163
        export $envset
        cd "$UML_CWD" 2>/dev/null || { echo "uml: cannot enter $UML_CWD in the guest, using /" >&2; cd /; }
        if [ "$uid" -eq 0 ]; then
            exec "$@"
        else
            exec "$setpriv" --reuid="$uid" --regid="$gid" --init-groups -- "$@"
        fi
    ) </dev/null >>"$X/stdout" 2>>"$X/stderr" &
    # wait also reaps the orphans that end up with PID 1 while CMD runs.
    wait $!
    rc=$?
    echo "$rc" >"$X/status.tmp" && mv "$X/status.tmp" "$X/status"
    log "exit status $rc"
    halt
fi

# ------------------------------------------------------------------------------------------
# Stage 1 (on the host's /, read-only through hostfs): build the overlay root and enter it.
# The kernel hands init HOME=/, TERM=linux and the command line's words it did not know itself:
# none of them is CMD's business.
xchg=${UML_XCHG:-}
unset UML_XCHG uml_dir umid mem lpj TERM
HOME=/
mount -t proc proc /proc || die "cannot mount /proc"
[ -n "$xchg" ] || die "no UML_XCHG= on the kernel command line"
mount -t tmpfs -o mode=0755 uml-boot /run || die "cannot mount a tmpfs on /run"
mkdir -p $X $B
mount -t hostfs -o "$xchg" hostfs $X || die "cannot mount the exchange directory $xchg"
echo started >$X/started
log "stage 1"
. $X/spec || die "cannot read $X/spec"

read -r kver </proc/sys/kernel/osrelease
mkdir -p $B/lower $B/rw $R
mount -t hostfs -o ro,/ hostfs $B/lower || die "cannot mount the host's / through hostfs"
mount -t tmpfs -o mode=0755 uml-rw $B/rw
mkdir $B/rw/upper $B/rw/work
if ! grep -qw overlay /proc/filesystems; then
    ko=/usr/lib/uml/modules/$kver/kernel/fs/overlayfs/overlay.ko
    busybox insmod "$ko" 2>>$X/init.log || die "no overlayfs in this kernel, and cannot load $ko"
fi
mount -t overlay -o lowerdir=$B/lower,upperdir=$B/rw/upper,workdir=$B/rw/work uml-root $R 2>>$X/init.log ||
    die "cannot mount the overlay root (tmpfs over the host's /)"
log "root: overlay"

# The caller's directory, when it lies under a place covered by a tmpfs below, is carried over.
keep=""
case "$UML_CWD" in
    /tmp/* | /var/tmp/* | /home/* | /root/* | /run/*)
        mkdir -p $B/keep
        mount --bind "$R$UML_CWD" $B/keep 2>/dev/null && keep=$UML_CWD ;;
esac

mount -t proc proc $R/proc || die "cannot mount proc"
mount -t sysfs sysfs $R/sys || die "cannot mount sysfs"
mount -t cgroup2 -o nsdelegate,memory_recursiveprot cgroup2 $R/sys/fs/cgroup 2>>$X/init.log ||
    mount -t cgroup2 cgroup2 $R/sys/fs/cgroup || die "cannot mount cgroup2"
mount -t devtmpfs -o mode=0755 devtmpfs $R/dev || mount -t tmpfs -o mode=0755 dev $R/dev || die "cannot mount /dev"
if [ ! -e $R/dev/null ]; then
    for n in "null 1 3" "zero 1 5" "full 1 7" "random 1 8" "urandom 1 9" "tty 5 0" "ptmx 5 2"; do
        set -- $n
        mknod -m 0666 $R/dev/$1 c $2 $3
    done
fi
# run.sh's empty scratch disk, readable and writable by every identity the tests run as, so a
# sandbox can do I/O on it under io.max (it holds nothing; the VM's devtmpfs is its own).
[ -b $R/dev/ubda ] && chmod 0666 $R/dev/ubda
mkdir -p $R/dev/pts $R/dev/shm $R/dev/mqueue
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts $R/dev/pts
mount -t tmpfs -o mode=1777 shm $R/dev/shm
mount -t mqueue mqueue $R/dev/mqueue 2>/dev/null
ln -sf /proc/self/fd $R/dev/fd
ln -sf /proc/self/fd/0 $R/dev/stdin
ln -sf /proc/self/fd/1 $R/dev/stdout
ln -sf /proc/self/fd/2 $R/dev/stderr
mount -t tmpfs -o mode=1777 tmp $R/tmp
mount -t tmpfs -o mode=1777 var-tmp $R/var/tmp
mount -t tmpfs -o mode=0755 run $R/run
mount -t tmpfs -o mode=0755 home $R/home
mount -t tmpfs -o mode=0700 root-home $R/root
if [ -n "$keep" ]; then
    mkdir -p "$R$keep" && mount --move $B/keep "$R$keep" || log "cannot carry $keep over"
fi

# Empty tmpfs over /var/lib/hutch (root's store: its sandboxes' upper layers cannot live on the
# overlay root, overlayfs refuses overlayfs as an upper layer) and the --tmpfs directories.
printf '%s\n' /var/lib/hutch "${UML_TMPFS:-}" | while IFS= read -r d; do
    [ -n "$d" ] || continue
    mkdir -p "$R$d" && mount -t tmpfs -o mode=0755 tmpfs "$R$d" || die "cannot mount a tmpfs on $d"
done

# Host directories shared read-write (--rw): UML_RW holds their paths, one a line.
if [ -n "${UML_RW:-}" ]; then
    printf '%s\n' "$UML_RW" | while IFS= read -r d; do
        [ -n "$d" ] || continue
        mkdir -p "$R$d" && mount -t hostfs -o "$d" hostfs "$R$d" || die "cannot share $d read-write"
    done
fi

# This script goes on from a copy in the new root's /run: its own path may lie under a tmpfs now.
mkdir -p $R$X $R/.oldroot
cp "$0" $R/run/uml-init.sh || die "cannot copy $0 into the new root"
mount --move $X $R$X || die "cannot move the exchange directory"
cd $R || die "cannot enter $R"
pivot_root . .oldroot || die "pivot_root failed"
exec chroot . /bin/sh /run/uml-init.sh stage2
