"""The package's import graph, read from the source (no import runs): no module of fairseq_ext imports, directly
or through others, a module that imports it, and no import of the package's own modules placed inside a function
would close such a circle (an import hidden there to dodge one)."""
import ast

from clitools import REPO

PACKAGE = REPO / "fairseq_ext"


def module_name(path):
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def lazy_homes(paths):
    """{package: {name: module}} of the packages whose names load lazily (a ``_HOMES`` table in their __init__)."""
    homes = {}
    for module, path in paths.items():
        if path.name != "__init__.py":
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["_HOMES"]:
                table = ast.literal_eval(node.value)
                homes[module] = {name: f"{module}.{home}" for home, names in table.items() for name in names}
    return homes


def imported_modules(node, module, is_package, modules, homes):
    """The fairseq_ext modules that one import statement names (a name taken from a package counts as the module
    of that name where there is one, or the module a lazy package loads it from, else as the package)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in modules}
    base = node.module or ""
    if node.level:
        anchor = module.split(".")
        anchor = anchor if is_package else anchor[:-1]
        anchor = anchor[:len(anchor) - (node.level - 1)]
        base = ".".join(anchor + ([base] if base else []))
    found = set()
    for alias in node.names:
        if f"{base}.{alias.name}" in modules:
            found.add(f"{base}.{alias.name}")
        elif alias.name in homes.get(base, {}):
            found.add(homes[base][alias.name])
        elif base in modules:
            found.add(base)
    return found


def import_graph():
    """(module -> modules it imports at load time, module -> modules it imports inside a function)."""
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    homes = lazy_homes(paths)
    at_load, in_functions = {}, {}
    for module, path in paths.items():
        tree = ast.parse(path.read_text())
        is_package = path.name == "__init__.py"
        at_load[module], in_functions[module] = set(), set()
        functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        nested = {id(n) for f in functions for n in ast.walk(f) if n is not f}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                inside = id(node) in nested
                targets = imported_modules(node, module, is_package, paths, homes)
                (in_functions if inside else at_load)[module] |= targets
    return at_load, in_functions


def reachable(graph, start):
    seen, todo = set(), [start]
    while todo:
        for target in graph.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_no_import_circle_in_the_package():
    at_load, _ = import_graph()
    circles = sorted(module for module in at_load if module in reachable(at_load, module))
    assert not circles, f"modules that import themselves through others: {circles}"


def test_no_import_inside_a_function_dodges_a_circle():
    at_load, in_functions = import_graph()
    dodges = [(module, target) for module, targets in in_functions.items() for target in targets
              if target == module or module in reachable(at_load, target)]
    assert not dodges, f"imports inside a function that would close a circle at load time: {dodges}"


def test_the_graph_sees_the_package():
    at_load, _ = import_graph()
    assert "fairseq_ext.tasks.compression_config" in at_load["fairseq_ext.tasks.compression_checks"]
    assert "fairseq_ext.compression.spec" in at_load["fairseq_ext.tasks.compression_config"]  # a lazy package's name
    assert "fairseq_ext.compression.methods" in at_load["fairseq_ext.compression.spec"]
