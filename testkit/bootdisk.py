"""A tiny bootable disk image for boot tests.

``write_boot_image`` writes a sparse raw image whose MBR is a hand-assembled
16-bit x86 boot sector: it prints a marker line on COM1 (0x3F8) and halts.
A test boots a VM from the image (locally or via iSCSI sanboot) and waits for
the marker in the VM's serial log.
"""

import struct

SECTOR = 512
MAX_MARKER = 200
COM1 = 0x3F8


def _code(labels):
    """Emit the boot sector code; ``labels`` maps label -> offset (pass 2).

    The code is position-independent (call/pop finds its own address, and
    DS is taken from CS), so it works whether the loader jumps to
    0000:7C00 (SeaBIOS, iPXE sanboot) or 07C0:0000.
    """
    out = bytearray()
    found = {}

    def emit(*b):
        out.extend(b)

    def here(name):
        found[name] = len(out)

    def rel8(name):  # displacement from the end of a 2-byte short jump
        d = labels.get(name, len(out) + 2) - (len(out) + 2)
        assert -128 <= d <= 127, name
        return d & 0xFF

    emit(0xFA)                          # cli
    emit(0x31, 0xC0)                    # xor ax, ax
    emit(0x8E, 0xD0)                    # mov ss, ax
    emit(0xBC, 0x00, 0x7C)              # mov sp, 0x7C00  (stack below us)
    emit(0xFB)                          # sti
    emit(0xFC)                          # cld  (lodsb counts upwards)
    emit(0x0E)                          # push cs
    emit(0x1F)                          # pop ds

    # UART init: 115200 8N1, FIFO on, no interrupts.  QEMU ignores the
    # rate, but real 16550s need a sane divisor.
    for port, value in ((COM1 + 1, 0x00),   # IER: no interrupts
                        (COM1 + 3, 0x80),   # LCR: DLAB=1 to set divisor
                        (COM1 + 0, 0x01),   # DLL: divisor 1 = 115200
                        (COM1 + 1, 0x00),   # DLM: 0
                        (COM1 + 3, 0x03),   # LCR: 8N1, DLAB=0
                        (COM1 + 2, 0xC7),   # FCR: enable + clear FIFOs
                        (COM1 + 4, 0x03)):  # MCR: DTR + RTS
        emit(0xBA, *struct.pack("<H", port))    # mov dx, port
        emit(0xB0, value)                       # mov al, value
        emit(0xEE)                              # out dx, al

    emit(0xE8, 0x00, 0x00)              # call next  (pushes address of next)
    here("next")
    emit(0x5E)                          # next: pop si  (si = offset of next)
    emit(0x81, 0xC6, *struct.pack("<H", (labels.get("msg", 0) - labels.get("next", 0)) & 0xFFFF))
                                        # add si, msg - next
    here("loop")
    emit(0xAC)                          # loop: lodsb  (al = [ds:si++])
    emit(0x84, 0xC0)                    # test al, al
    emit(0x74, rel8("halt"))            # jz halt  (NUL ends the message)
    emit(0x88, 0xC4)                    # mov ah, al  (keep the char)
    emit(0xBA, *struct.pack("<H", COM1 + 5))    # mov dx, 0x3FD  (LSR)
    here("wait")
    emit(0xEC)                          # wait: in al, dx
    emit(0xA8, 0x20)                    # test al, 0x20  (THR empty?)
    emit(0x74, rel8("wait"))            # jz wait
    emit(0x88, 0xE0)                    # mov al, ah
    emit(0xBA, *struct.pack("<H", COM1))        # mov dx, 0x3F8  (THR)
    emit(0xEE)                          # out dx, al
    emit(0xEB, rel8("loop"))            # jmp loop
    here("halt")
    emit(0xFA)                          # halt: cli
    emit(0xF4)                          # hlt
    emit(0xEB, rel8("halt"))            # jmp halt  (hlt can wake on NMI)
    here("msg")
    return bytes(out), found


def boot_sector(marker):
    """Return the 512-byte boot sector that prints ``marker`` + CRLF on COM1."""
    if not isinstance(marker, str) or not marker:
        raise ValueError("marker must be a non-empty str")
    if len(marker) > MAX_MARKER:
        raise ValueError(f"marker longer than {MAX_MARKER} chars")
    if not all(0x20 <= ord(c) < 0x7F for c in marker):
        raise ValueError("marker must be printable ASCII")
    _, labels = _code({})          # pass 1: find label offsets
    code, labels2 = _code(labels)  # pass 2: resolve forward references
    assert labels2 == labels
    sector = code + marker.encode("ascii") + b"\r\n\0"
    # Bytes 446..509 stay zero: an empty partition table.
    assert len(sector) <= 446
    return sector.ljust(510, b"\0") + b"\x55\xAA"


def write_boot_image(path, marker, size_bytes=64 * 1024 * 1024):
    """Write a sparse raw disk image of ``size_bytes`` booting to ``marker``.

    Keep the default size: iPXE sanboot of a 4 MiB disk was seen to fail
    with an I/O error.
    """
    if size_bytes < SECTOR or size_bytes % SECTOR:
        raise ValueError("size_bytes must be a positive multiple of 512")
    sector = boot_sector(marker)
    with open(path, "wb") as f:
        f.write(sector)
        f.truncate(size_bytes)  # the rest is a hole: reads as zeros
    return path


if __name__ == "__main__":
    import sys

    write_boot_image(sys.argv[1], sys.argv[2])
