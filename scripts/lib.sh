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

FORMATS="raw qcow2 vmdk vdi vhdx"   # what import_image converts from

# open_image PATH: check that PATH, its symlinks resolved once, is a regular file holding a disk
# image that qemu-img reads, in one of FORMATS, with nothing that would make qemu read other files
# of this host; then keep it open as fd 3, which every later step reads (/dev/fd/3), so that the
# file checked is the file copied. Sets image_format and image_size (its virtual size, in bytes).
open_image() {
    local path=$1 real info verdict
    real=$(realpath -e -- "$path" 2>/dev/null) || die "no such file on the server: $path"
    [ -f "$real" ] || die "$path is not a regular file"
    exec 3<"$real"
    if head -c 21 /dev/fd/3 | grep -q "^# Disk DescriptorFile"; then
        die "$path is a VMDK descriptor: its data lies in other files; convert it to one file first"
    fi
    # Reading an image's header is cheap; a hostile one is kept to 1 GiB of memory and 30 s of CPU.
    info=$(prlimit --as=1073741824 --cpu=30 qemu-img info --output=json -- /dev/fd/3 2>&1) ||
        die "$path is not a disk image qemu-img can read: $(sed 's|^qemu-img: ||; s|/dev/fd/3|'"$path"'|g' <<<"$info")"
    verdict=$(jq -r --arg formats "$FORMATS" '
        if ."backing-filename" then "has a backing file (\(."backing-filename")): it would read another file"
        elif ."format-specific".data."data-file" then
            "keeps its data in another file (\(."format-specific".data."data-file"))"
        elif .encrypted then "is encrypted"
        elif (.format | IN($formats | splits(" ")) | not) then
            "is in the \(.format) format; import_image takes \($formats | gsub(" "; ", "))"
        elif ([."format-specific".data.extents[]?.filename] - ["/dev/fd/3"] | length) > 0 then
            "keeps its data in other files"
        elif ."virtual-size" <= 0 or ."virtual-size" % 512 != 0 then
            "is \(."virtual-size") bytes: a disk is a non-zero multiple of 512 bytes"
        else "ok \(.format) \(."virtual-size")" end' <<<"$info")
    [[ $verdict == "ok "* ]] || die "$path $verdict"
    read -r _ image_format image_size <<<"$verdict"
    if [ "$image_format" = raw ]; then   # qemu-img rounds a raw file's size up to whole sectors
        image_size=$(stat -L -c %s /dev/fd/3)
        (( image_size % 512 == 0 )) || die "$path is $image_size bytes: a raw disk image is a non-zero multiple of 512 bytes"
    fi
}

# report_progress TOTAL: read a copying command's progress meter (qemu-img convert -p, rbd) on
# stdin and say it as "progress DONE TOTAL" lines on stderr (scripts/README); pass any other line
# on to stderr. The meters end their updates with \r, which tr turns into lines as they come.
report_progress() {
    local total=$1 line
    stdbuf -o0 tr '\r' '\n' | while IFS= read -r line; do
        if [[ $line =~ ([0-9]+)(\.([0-9]{2}))?(/100)?%( complete)? ]]; then
            echo "progress $((total * (10#${BASH_REMATCH[1]} * 100 + 10#${BASH_REMATCH[3]:-0}) / 10000)) $total" >&2
        elif [ -n "$line" ]; then
            echo "$line" >&2
        fi
    done
}

# convert FORMAT SOURCE TARGET SIZE WHAT: copy SOURCE (a disk image in FORMAT, SIZE bytes) into
# TARGET (a file, or an rbd: target), as raw, with progress; sparse: runs of zeros are not written;
# on disk when it ends (-t writeback flushes at the end: qemu-img's own default, unsafe, never
# does). A failure is one line naming WHAT was being written (a full disk, say), not qemu-img.
convert() {
    local said
    { said=$(qemu-img convert -p -t writeback -f "$1" -O raw -- "$2" "$3" 2>&1 >&4 4>&-); } 4> >(report_progress "$4") ||
        die "cannot write $5: ${said#qemu-img: }"
}

# convert_image TARGET WHAT: convert the image open_image opened.
convert_image() {
    convert "$image_format" /dev/fd/3 "$1" "$image_size" "$2"
}
