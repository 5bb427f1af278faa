"""Run a command like ``subprocess.run(..., capture_output=True)`` and also measure its peak resident memory.

The peak is the child's own ``ru_maxrss``, read from ``os.wait4`` when it is reaped (``subprocess`` reaps with
``waitpid`` and drops it; ``getrusage(RUSAGE_CHILDREN)`` is the maximum over every child so far, not this one's).
Used by the benchmark scripts and the sweep, for the peak RSS of each fairseq-generate / fairseq-validate.

Plain python: no torch or fairseq import.
"""
import os
import subprocess
import threading
from dataclasses import dataclass


@dataclass
class MeasuredRun:
    returncode: int
    stdout: str
    stderr: str
    peak_rss_mb: float  # decimal MB, as the compression reports count


def run_measured(cmd, *, cwd=None, env=None, timeout=None) -> MeasuredRun:
    """Run ``cmd`` to its end; its exit code, stdout and stderr (utf-8, undecodable bytes replaced) and peak RSS.
    subprocess.TimeoutExpired (the child killed) after ``timeout`` seconds."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            encoding="utf-8", errors="replace")
    streams = {}
    readers = [threading.Thread(target=lambda name=name, pipe=pipe: streams.__setitem__(name, pipe.read()))
               for name, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr))]
    for reader in readers:
        reader.start()
    killed = threading.Event()

    def kill():
        killed.set()
        proc.kill()

    timer = threading.Timer(timeout, kill) if timeout else None
    if timer:
        timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        if timer:
            timer.cancel()
    for reader in readers:
        reader.join()
    proc.stdout.close()
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
    if killed.is_set():
        raise subprocess.TimeoutExpired(cmd, timeout, streams["stdout"], streams["stderr"])
    return MeasuredRun(proc.returncode, streams["stdout"], streams["stderr"], usage.ru_maxrss * 1024 / 1e6)
