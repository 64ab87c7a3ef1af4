# What the bmi-rpc scripts share (see scripts/README). A script sources this file, defines main,
# and ends with: run_main "$@"
set -euo pipefail

die() { echo "$*" >&2; exit 1; }

# run_main ARGS: run main ARGS. The server's death sends the script SIGTERM (bmi/runner.py): then
# every command it started stops too, a tgtadm blocked on a hung tgtd included. bash acts on a
# signal only between commands, so main runs in the background while this shell waits, which a
# signal interrupts.
run_main() {
    trap 'kill -KILL 0' TERM
    main "$@" &
    wait $!
}

# check_raw_image PATH: refuse what cannot be a raw disk image.
check_raw_image() {
    local size
    [ -f "$1" ] || die "no such file on the server: $1"
    size=$(stat -c %s -- "$1")
    (( size > 0 && size % 512 == 0 )) || die "$1 is $size bytes: a raw disk image is a non-zero multiple of 512 bytes"
}
