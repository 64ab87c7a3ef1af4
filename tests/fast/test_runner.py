"""The one command runner: argument lists, stderr as the error, a time limit on the whole group."""
import os
import time

import pytest

from bmi import runner


def test_stdout_is_the_answer_and_stderr_the_error():
    assert runner.run(["echo", "a b"], 10) == "a b\n"
    with pytest.raises(runner.CommandFailed, match="^first; second$"):
        runner.run(["bash", "-c", "echo first >&2; echo; echo ' second ' >&2; exit 3"], 10)
    with pytest.raises(runner.CommandFailed, match="^false failed with exit code 1$"):
        runner.run(["false"], 10)


def test_no_shell_reads_the_arguments(tmp_path):
    assert runner.run(["echo", "$(touch %s/x); `id`" % tmp_path], 10) == "$(touch %s/x); `id`\n" % tmp_path
    assert os.listdir(tmp_path) == []


def test_the_time_limit_kills_the_whole_group(tmp_path):
    pid_file = tmp_path / "pid"
    started = time.monotonic()
    with pytest.raises(runner.CommandFailed, match=r"^no answer within 0.5 s \(BMI_SCRIPT_TIMEOUT\)$"):
        runner.run(["bash", "-c", "sleep 60 & echo $! > %s; wait" % pid_file], 0.5)
    assert time.monotonic() - started < 10
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):   # the script's own child is gone too
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.05)


def test_a_missing_command_is_a_failure_not_a_crash():
    with pytest.raises(runner.CommandFailed, match="No such file"):
        runner.run(["/nonexistent/command"], 10)
