# Sourced by the benchmarks: fills the bash array SETS with "label:user" entries, one per identity
# to measure (an empty user is the invoking one). Root measures itself and, unless NO_USER=1, the
# unprivileged BENCH_USER (default hutch-t-sub, made by tools/test-users.sh) through runuser.
# Expects BENCH_USER, USER_GIVEN, NO_USER and a die() function.
SETS=()
if [ "$(id -u)" -eq 0 ]; then
    SETS+=("root:")
    if [ "$NO_USER" -eq 0 ]; then
        [ -n "$BENCH_USER" ] || BENCH_USER=hutch-t-sub
        if id -u "$BENCH_USER" >/dev/null 2>&1; then
            [ "$(id -u "$BENCH_USER")" -ne 0 ] || die "--user must name an unprivileged user"
            command -v runuser >/dev/null 2>&1 || die "needs runuser for --user"
            SETS+=("$BENCH_USER:$BENCH_USER")
        elif [ "$USER_GIVEN" -eq 1 ]; then
            die "no such user: $BENCH_USER"
        else
            echo "!! user hutch-t-sub does not exist: measuring root only (tools/test-users.sh creates it)" >&2
        fi
    fi
else
    [ "$USER_GIVEN" -eq 0 ] || die "--user needs root (runuser)"
    SETS+=("$(id -un):")
fi
