"""fairseq_ext.compression is plain torch + numpy: no fairseq import, and no pickle near the file format."""

import ast
import sys
from pathlib import Path

import fairseq_ext.compression

PACKAGE = Path(fairseq_ext.compression.__file__).parent


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            modules.add(node.module.split(".")[0])
    return modules


def test_the_package_imports_only_torch_numpy_and_the_standard_library():
    sources = sorted(PACKAGE.glob("*.py"))
    assert len(sources) >= 10
    for source in sources:
        third_party = imported_modules(source) - {"torch", "numpy"} - set(sys.stdlib_module_names)
        assert not third_party, f"{source.name} imports {third_party}"
        assert "pickle" not in imported_modules(source)
