"""How the plugin's own errors reach a user of the fairseq CLIs: one clear block, no Python traceback.

A ValueError (or a refused pickle) raised by the plugin's code is bad input for the user to fix (a flag, a file),
not a bug: the command prints its type and message, the same last line a traceback ends with, and exits 1.
FAIRSEQ_EXT_TRACEBACK=1 shows the whole traceback (to debug the plugin itself); every other exception, and any
raised outside the plugin's code, keeps Python's traceback.
"""
import os
import pickle
import sys
import traceback
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
DEBUG_SWITCH = "FAIRSEQ_EXT_TRACEBACK"
USER_ERRORS = (ValueError, pickle.UnpicklingError)


def raised_by_the_plugin(error):
    """Whether the innermost frame of the error's traceback is the plugin's code."""
    frame = error.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    return frame is not None and Path(frame.tb_frame.f_code.co_filename).resolve().is_relative_to(PACKAGE)


def reporting_user_errors(excepthook):
    """sys.excepthook, printing the plugin's user errors without their traceback."""

    def report(kind, error, trace):
        if isinstance(error, USER_ERRORS) and raised_by_the_plugin(error) and not os.environ.get(DEBUG_SWITCH):
            sys.stderr.write("".join(traceback.format_exception_only(kind, error)))
            return
        excepthook(kind, error, trace)

    return report
