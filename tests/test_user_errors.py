"""The plugin's own errors reach a CLI user as one block without a traceback (fairseq_ext/user_errors.py); errors
raised elsewhere keep Python's traceback, and FAIRSEQ_EXT_TRACEBACK=1 shows the plugin's too. In process: the
CLIs' side is tested in test_reliability_e2e.py."""
from fairseq_ext.compression.spec import CompressionSpec
from fairseq_ext.user_errors import DEBUG_SWITCH, reporting_user_errors


def raised(call):
    try:
        call()
    except ValueError as error:
        return error
    raise AssertionError("no ValueError")


def test_the_plugins_errors_print_one_block_and_the_others_keep_their_traceback(capsys, monkeypatch):
    monkeypatch.delenv(DEBUG_SWITCH, raising=False)
    shown = []
    hook = reporting_user_errors(lambda *args: shown.append(args))
    ours = raised(lambda: CompressionSpec(bits=12).validate())  # raised in fairseq_ext/compression/spec.py
    theirs = raised(lambda: int("twelve"))  # raised outside the plugin
    hook(ValueError, ours, ours.__traceback__)
    assert capsys.readouterr().err == (
        "ValueError: invalid compression spec (1 problem):\n"
        "  - bits=12: allowed values are 2, 3, 4, 5, 6, 7, 8, 16, 32\n")
    assert shown == []
    hook(ValueError, theirs, theirs.__traceback__)
    assert shown == [(ValueError, theirs, theirs.__traceback__)]
    monkeypatch.setenv(DEBUG_SWITCH, "1")
    hook(ValueError, ours, ours.__traceback__)
    assert shown[-1] == (ValueError, ours, ours.__traceback__) and capsys.readouterr().err == ""
