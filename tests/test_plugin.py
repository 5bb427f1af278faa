"""fairseq_ext.plugin is the one entry point: what importing each part of the package loads, and patches applied once.

Each check runs in a fresh interpreter: in this one, other tests have imported fairseq and the plugin already.
"""
import json
import subprocess
import sys
import textwrap

from clitools import REPO, clean_env


def fresh_python(code):
    """What `code` prints as JSON on its last line, run by a new interpreter of this venv."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=clean_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


LOADED = """
    import json, sys
    import {module}
    print(json.dumps({{name: name in sys.modules for name in ("fairseq", "torch", "fairseq_ext.plugin")}}))
"""


def test_the_compression_core_imports_without_fairseq():
    assert fresh_python(LOADED.format(module="fairseq_ext.compression.accounting")) == {
        "fairseq": False, "torch": True, "fairseq_ext.plugin": False}


def test_the_method_table_and_the_package_import_without_torch():
    for module in ("fairseq_ext.compression", "fairseq_ext.compression.methods"):
        assert fresh_python(LOADED.format(module=module)) == {
            "fairseq": False, "torch": False, "fairseq_ext.plugin": False}, module


def test_the_analysis_imports_without_fairseq_or_torch():
    assert fresh_python(LOADED.format(module="fairseq_ext.analysis.report")) == {
        "fairseq": False, "torch": False, "fairseq_ext.plugin": False}


def test_the_fairseq_glue_loads_the_plugin_whichever_part_comes_first():
    for module in ["fairseq_ext.tasks.compression", "fairseq_ext.models.grid", "fairseq_ext.plugin"]:
        assert fresh_python(LOADED.format(module=module)) == {
            "fairseq": True, "torch": True, "fairseq_ext.plugin": True}, module


def test_every_patch_is_applied_once_however_often_the_plugin_is_loaded():
    patched = fresh_python(f"""
        import argparse, importlib, json
        import fairseq_ext.plugin as plugin
        from fairseq import checkpoint_utils
        from fairseq.models.roberta.model import RobertaModel
        from fairseq.utils import import_user_module

        def targets():
            return [checkpoint_utils.load_checkpoint_to_cpu, checkpoint_utils.load_model_ensemble_and_task,
                    checkpoint_utils.PathManager, RobertaModel.add_args]

        first = targets()
        import_user_module(argparse.Namespace(user_dir={str(REPO / "fairseq_ext")!r}))
        importlib.reload(plugin)
        parser = argparse.ArgumentParser()
        RobertaModel.add_args(parser)  # a second --post-norm would make argparse raise here
        print(json.dumps({{
            "same objects": [a is b for a, b in zip(first, targets())],
            "marked": [getattr(t, plugin.PATCH_MARK, False) for t in targets()],
            "fairseq's own loader underneath": checkpoint_utils.load_checkpoint_to_cpu.__wrapped__.__module__,
            "underneath is unmarked": not hasattr(checkpoint_utils.load_checkpoint_to_cpu.__wrapped__,
                                                  plugin.PATCH_MARK),
            "post-norm": parser.parse_args(["--post-norm"]).post_norm,
        }}))
    """)
    assert patched == {
        "same objects": [True] * 4,
        "marked": [True] * 4,
        "fairseq's own loader underneath": "fairseq.checkpoint_utils",
        "underneath is unmarked": True,
        "post-norm": True,
    }
