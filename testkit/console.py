"""Type commands at a VM's serial console and read their output (the test OS of testkit/osimage.py).

qemu serves the guest's COM1 on a Unix socket and copies everything to a log file as well:

    -chardev socket,id=console,path=SOCK,server=on,wait=off,logfile=LOG -serial chardev:console

The log holds the whole boot, from power-on (markers like BMI-ROOT are looked for there); the
socket is for typing.  Keep the Console open while the VM runs: a thread drains the socket,
because qemu holds back the guest's serial output, log included, while a connected client leaves
the socket unread (the guest then stalls writing to its console).  The test OS's shell echoes what is typed and prints ``BMI# `` when it is
ready for the next command, so ``run`` sends one line and returns what came between the echo and
that prompt.

    console = Console(sock, log)
    console.wait_for_log("BMI-ROOT ", 300)
    console.wait_prompt(60)
    assert console.run("cat /marker") == "hello"
    console.send("reboot -f")
"""
import contextlib
import os
import re
import socket
import threading
import time

PROMPT = "BMI# "
ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # terminal control sequences


class ConsoleTimeout(TimeoutError):
    """The console did not show what was awaited; the message has what it did show last."""


class Console:
    def __init__(self, sock_path, log_path=None, prompt=PROMPT, connect_timeout=30):
        self.sock_path = os.fspath(sock_path)
        self.log_path = os.fspath(log_path) if log_path else None
        self.prompt = prompt
        self.buffer = ""  # what the socket gave and no wait has consumed yet
        self.closed = False  # the socket reached EOF (qemu exited) or close() was called
        self.changed = threading.Condition()
        self.sock = self._connect(connect_timeout)
        # Drain the socket all the time: qemu stops the guest's serial output (and so the guest's
        # writes to its console) while a connected client leaves the socket unread.
        self.reader = threading.Thread(target=self._read_forever, daemon=True)
        self.reader.start()

    def _connect(self, timeout):
        deadline = time.monotonic() + timeout
        while True:  # qemu makes the socket a moment after it starts
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self.sock_path)
                return sock
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _read_forever(self):
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                data = b""
            with self.changed:
                if not data:
                    self.closed = True
                    self.changed.notify_all()
                    return
                # the tty turns \n into \r\n, and ash's line editing asks the terminal where its
                # cursor is (ESC [ 6 n): drop both, so callers see plain lines
                text = data.decode("utf-8", errors="replace").replace("\r", "")
                self.buffer += ESCAPE.sub("", text)
                self.changed.notify_all()

    def close(self):
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            self.sock.close()
            self.reader.join(5)
            self.sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def wait_for(self, text, timeout):
        """Wait until text has come from the console; return all before it and consume through
        it."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while text not in self.buffer:
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    raise ConsoleTimeout("console: no %r within %s s%s; last output: %r"
                                         % (text, timeout, " (closed)" if self.closed else "",
                                            self.buffer[-500:]))
                self.changed.wait(left)
            before, _, self.buffer = self.buffer.partition(text)
            return before

    def clear(self):
        with self.changed:
            self.buffer = ""

    def wait_prompt(self, timeout=60):
        """Wait until the shell is ready: press Enter until a prompt answers (one may have gone
        by before we connected), then drop whatever came before it."""
        deadline = time.monotonic() + timeout
        while True:
            self.send("")
            try:
                self.wait_for(self.prompt, min(5, max(0.1, deadline - time.monotonic())))
                break
            except ConsoleTimeout:
                if self.closed or time.monotonic() > deadline:
                    raise
        time.sleep(0.5)  # Enter may have been pressed more than once: let the extra prompts come
        self.clear()

    def send(self, line):
        """Type line and Enter, without waiting for anything."""
        self.sock.sendall(line.encode() + b"\n")

    def run(self, command, timeout=30):
        """Type command, wait for the prompt after it; return its output (echo and prompt cut off,
        trailing newline stripped).  Call wait_prompt once first, after boot."""
        self.clear()
        self.send(command)
        # the echo of what we typed ends at the first newline
        self.wait_for("\n", timeout)
        return self.wait_for(self.prompt, timeout).rstrip("\n")

    def log(self):
        """The whole serial log so far (qemu's logfile), as text."""
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", errors="replace").replace("\r", "")

    def wait_for_log(self, text, timeout, proc=None, since=0):
        """Poll the log until text appears at or after character since; return the line that
        holds it.  With proc (qemu's Popen), give up once it has exited."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                log = self.log()[since:]
            except FileNotFoundError:
                log = ""
            at = log.find(text)
            if at >= 0:
                start = log.rfind("\n", 0, at) + 1
                end = log.find("\n", at)
                return log[start:end if end >= 0 else len(log)]
            if time.monotonic() > deadline or (proc is not None and proc.poll() is not None):
                raise ConsoleTimeout("log %s: no %r within %s s; ends: %r"
                                     % (self.log_path, text, timeout, log[-800:]))
            time.sleep(0.2)
