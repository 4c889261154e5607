"""maskzoo's face is imported by users, never by maskzoo's own modules: an inner module that imports
the package (``import maskzoo``, ``from maskzoo import build``) depends on the face that imports it,
the loop that forces function-local imports."""

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import maskzoo

PACKAGE_DIR = Path(maskzoo.__file__).parent
SUBMODULES = {m.name for m in pkgutil.iter_modules([str(PACKAGE_DIR)])}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _face_imports(source: str, package: str) -> list[int]:
    """Lines of ``source`` (a module of ``package``) whose imports reach maskzoo/__init__.py's names."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [node.lineno for a in node.names if a.name == "maskzoo"]
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:  # relative: resolve against this module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            if target == "maskzoo" and any(a.name not in SUBMODULES for a in node.names):
                found.append(node.lineno)
    return found


def test_no_module_inside_maskzoo_imports_the_package_face():
    files = [p for p in PACKAGE_DIR.rglob("*.py") if p != PACKAGE_DIR / "__init__.py"]
    assert len(files) > 20  # the walk really sees the package
    offenders = []
    for path in files:
        module = _module_name(path)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        offenders += [f"{path}:{line}" for line in _face_imports(path.read_text(), package)]
    assert offenders == []


def test_the_walk_catches_every_spelling_and_allows_submodules():
    source = (
        "import maskzoo\n"
        "from maskzoo import build\n"
        "from .. import list_models\n"
        "def f():\n"
        "    import maskzoo as mz\n"
        "from maskzoo import zoo\n"
        "from maskzoo.zoo import build\n"
        "from . import io\n"
    )
    assert _face_imports(source, "maskzoo.checkpoint") == [1, 2, 3, 5]


def test_models_and_the_list_command_need_none_of_the_optional_dependencies():
    # Why the few function-local imports exist: Pillow, pycocotools, tqdm and safetensors (the
    # maskzoo extra) are imported where files are read or written, not by `import maskzoo`.
    script = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('PIL', 'pycocotools', 'tqdm', 'safetensors'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import maskzoo\n"
        "from maskzoo.cli import main\n"
        "maskzoo.build('r18_fpn', num_classes=3)\n"
        "sys.exit(main(['list', '--names-only']))\n"
    )
    root = PACKAGE_DIR.parent
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "r18_fpn_demo" in run.stdout.split()
