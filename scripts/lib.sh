# What the bmi-rpc scripts share (see scripts/README). A script sources this file, defines main,
# and ends with: run_main "$@"
set -euo pipefail

# die MESSAGE: say MESSAGE on stderr and fail. Values are only ever data: printf's format is fixed,
# never a value (echo would take a message of "-e" or "-n" for an option).
die() { printf '%s\n' "$*" >&2; exit 1; }

# The refusals of a request, each as die with an exit code of its kind (scripts/README), which the
# server raises as that kind of bmi/errors.py: no reading of the message.
die_not_found() { printf '%s\n' "$*" >&2; exit 66; }
die_exists() { printf '%s\n' "$*" >&2; exit 73; }
die_in_use() { printf '%s\n' "$*" >&2; exit 75; }
refuse() { printf '%s\n' "$*" >&2; exit 77; }   # well formed, but the service will not do it
unavailable() { printf '%s\n' "$*" >&2; exit 69; }   # what the request needs does not answer

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

# The settings that name files the service keeps for itself, each with what it is (bmi/storage.py
# refuses the same, before any script runs: this is the check of the file actually opened).
OWN_FILES=(BMI_KEY_FILE "its key file" BMI_TLS_CERT "its TLS certificate" BMI_TLS_KEY "its TLS key"
           BMI_TLS_CA "its TLS CA certificate" BMI_AUDIT_LOG "its audit log" BMI_ROLES_FILE "its roles file")

# refuse_own_file PATH: refuse the file open as fd 3 (PATH, as the caller named it) if the service
# keeps it for itself: anything in BMI_STATE_DIR (where it lies, or a hard link to a file there) and
# the files of OWN_FILES. What is judged is the open file, the one the copy reads.
refuse_own_file() {
    local path=$1 id state opened i setting file
    id=$(stat -L -c '%d:%i' /dev/fd/3)
    if [ -n "${BMI_STATE_DIR:-}" ] && state=$(realpath -e -- "$BMI_STATE_DIR" 2>/dev/null && echo .); then
        state=${state%$'\n.'}
        opened=$(readlink -- /proc/self/fd/3 && echo .)   # the readlink's own fd 3: the same open file
        opened=${opened%$'\n.'}
        if [[ $opened == "$state" || $opened == "${state%/}/"* ]] ||
           { (( $(stat -L -c %h /dev/fd/3) > 1 )) &&
             find "$state" -xdev -inum "${id#*:}" -printf '%D:%i\n' 2>/dev/null | grep -qxF -- "$id"; }; then
            refuse "$path is a file the service keeps for itself (in its state directory $state): import_image does not copy it"
        fi
    fi
    for ((i = 0; i < ${#OWN_FILES[@]}; i += 2)); do
        setting=${OWN_FILES[i]}
        file=${!setting:-}
        if [ -n "$file" ] && [ "$(stat -L -c '%d:%i' -- "$file" 2>/dev/null)" = "$id" ]; then
            refuse "$path is a file the service keeps for itself (${OWN_FILES[i + 1]}, $setting): import_image does not copy it"
        fi
    done
}

# refuse_outside_import_dirs PATH: refuse the file open as fd 3 (PATH, as the caller named it) unless
# it lies below one of BMI_IMPORT_DIRS (':' between them; none: anywhere). What is judged is where
# the open file is, its symlinks resolved, not the name the caller gave.
refuse_outside_import_dirs() {
    local path=$1 opened dir real dirs
    [ -n "${BMI_IMPORT_DIRS:-}" ] || return 0
    opened=$(readlink -- /proc/self/fd/3 && echo .)   # the readlink's own fd 3: the same open file
    opened=${opened%$'\n.'}
    IFS=: read -ra dirs <<<"$BMI_IMPORT_DIRS"
    for dir in "${dirs[@]}"; do
        if real=$(realpath -e -- "$dir" 2>/dev/null && echo .); then
            real=${real%$'\n.'}
            [[ $opened != "${real%/}/"* ]] || return 0
        fi
    done
    refuse "$path is outside the directories import_image reads (BMI_IMPORT_DIRS: $BMI_IMPORT_DIRS)"
}

# open_image PATH: check that PATH, its symlinks resolved once, is a regular file holding a disk
# image that qemu-img reads, in one of FORMATS, with nothing that would make qemu read other files
# of this host; then keep it open as fd 3, which every later step reads (/dev/fd/3), so that the
# file checked is the file copied. Sets image_format and image_size (its virtual size, in bytes).
open_image() {
    local path=$1 real info verdict said
    # Command substitution cuts every newline at the end of realpath's answer, the file name's own
    # too (a file "disk\n" would become its neighbour "disk"): a "." after the answer keeps them.
    real=$(realpath -e -- "$path" 2>/dev/null && echo .) || die_not_found "no such file on the server: $path"
    real=${real%$'\n.'}
    [ -f "$real" ] || die "$path is not a regular file"
    exec 3<"$real"
    [ -f /dev/fd/3 ] || die "$path is not a regular file"   # what was opened, should the name have moved meanwhile
    refuse_own_file "$path"
    refuse_outside_import_dirs "$path"
    if head -c 21 /dev/fd/3 | grep -q "^# Disk DescriptorFile"; then
        die "$path is a VMDK descriptor: its data lies in other files; convert it to one file first"
    fi
    # Reading an image's header is cheap; a hostile one is kept to 1 GiB of memory and 30 s of CPU.
    if ! info=$(prlimit --as=1073741824 --cpu=30 qemu-img info --output=json -- /dev/fd/3 2>&1); then
        # qemu-img's message in the caller's terms: its name off every line, the file as the caller
        # named it. Parameter expansion, no sed: a value inside a program would be program text. The
        # replacement is quoted, so that an "&" in the path stays an "&" (bash 5.2's patsub_replacement).
        said=${info//$'\nqemu-img: '/$'\n'}
        said=${said#qemu-img: }
        said=${said//\/dev\/fd\/3/"$path"}
        die "$path is not a disk image qemu-img can read: $said"
    fi
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
    [[ $image_size =~ ^[0-9]+$ ]] || die "$path declares no size qemu-img can tell"   # arithmetic below reads it
    if [ "$image_format" = raw ]; then   # qemu-img rounds a raw file's size up to whole sectors
        image_size=$(stat -L -c %s /dev/fd/3)
        (( image_size % 512 == 0 )) || die "$path is $image_size bytes: a raw disk image is a non-zero multiple of 512 bytes"
    fi
    if (( image_size > BMI_IMAGE_SIZE_CAP )); then
        refuse "$path holds a disk of $((image_size >> 30)) GiB ($image_size bytes), above the cap of $((BMI_IMAGE_SIZE_CAP >> 30)) GiB (BMI_IMAGE_SIZE_CAP)"
    fi
}

# report_progress TOTAL: read a copying command's progress meter (qemu-img convert -p, rbd) on
# stdin and say it as "progress DONE TOTAL" lines on stderr (scripts/README); pass any other line
# on to stderr. The meters end their updates with \r, which tr turns into lines as they come.
report_progress() {
    local total=$1 line
    [[ $total =~ ^[0-9]+$ ]] || total=0   # a number, or bash arithmetic would evaluate it as an expression
    stdbuf -o0 tr '\r' '\n' | while IFS= read -r line; do
        if [[ $line =~ ([0-9]+)(\.([0-9]{2}))?(/100)?%( complete)? ]]; then
            echo "progress $((total * (10#${BASH_REMATCH[1]} * 100 + 10#${BASH_REMATCH[3]:-0}) / 10000)) $total" >&2
        elif [ -n "$line" ]; then
            printf '%s\n' "$line" >&2
        fi
    done
}

# convert FORMAT SOURCE TARGET SIZE WHAT: copy SOURCE (a disk image in FORMAT, SIZE bytes) into
# TARGET (a file, or an rbd: target), as raw, with progress; sparse: runs of zeros are not written;
# on disk when it ends (-t writeback flushes at the end: qemu-img's own default, unsafe, never
# does). A failure is one line naming WHAT was being written (a full disk, say), not qemu-img.
convert() {
    local said
    if ! { said=$(qemu-img convert -p -t writeback -f "$1" -O raw -- "$2" "$3" 2>&1 >&4 4>&-); } 4> >(report_progress "$4"); then
        said=${said#qemu-img: }
        die "cannot write $5: ${said//"$3: "/}"   # the backend's own name of the target (a partial, an rbd: URI) is not the user's
    fi
}

# convert_image TARGET WHAT: convert the image open_image opened.
convert_image() {
    convert "$image_format" /dev/fd/3 "$1" "$image_size" "$2"
}
