"""Run the real fairseq command-line tools (and our scripts) as subprocesses, as a user would."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's fairseq-train, fairseq-generate, ...
DATA = Path(os.environ.get("FAIRSEQ_EXT_DATA", REPO.parent / "shared" / "data"))


def clean_env(**extra):
    """The environment of a user who exported nothing: in particular no switch that turns safe loading off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCH_FORCE_")}
    # Under pytest-xdist two workers share the 2 cores: one thread per fairseq process avoids oversubscription.
    threads = "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2"
    env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", threads), **extra)
    return env


def run(cmd, *, check=True, cwd=REPO, env=None, timeout=600):
    """Run a command from the repo root; fairseq tools are taken from the venv. Returns stdout+stderr."""
    cmd = [str(c) for c in cmd]
    if (BIN / cmd[0]).exists():
        cmd[0] = str(BIN / cmd[0])
    elif cmd[0].endswith(".py"):
        cmd = [sys.executable] + cmd
    proc = subprocess.run(cmd, cwd=cwd, env=env or clean_env(), capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n{output[-6000:]}")
    proc.output = output
    return proc


def compressed_summary(output):
    """The figures of the one `compressed {json}` line a compressed task logs (exactly one, or the test fails)."""
    from fairseq_ext.analysis.fairseq_output import all_compressed_figures

    lines = all_compressed_figures(output)
    assert len(lines) == 1, f"expected one 'compressed {{json}}' line, got {len(lines)}:\n{output[-3000:]}"
    return lines[0]


def bleu(output):
    """The corpus BLEU that fairseq-generate --scoring sacrebleu prints."""
    match = re.search(r"Generate \S+ with beam=\d+: BLEU = ([\d.]+)", output)
    assert match, f"no BLEU line in:\n{output[-3000:]}"
    return float(match.group(1))


def json_log_records(output, kind):
    """fairseq --log-format json records of one kind ('train_inner', 'train', 'valid')."""
    records = []
    for line in output.splitlines():
        match = re.search(r"\| (\w+) \| (\{.*\})\s*$", line)
        if match and match.group(1) == kind:
            records.append(json.loads(match.group(2)))
    return records
