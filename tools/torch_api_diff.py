"""The torch Python API names that a newer torch has and an older one lacks, as data for
tests/test_versions.py (which keeps fastcnn's code off them: the oldest supported torch is 2.11).

    pip download --no-deps -d /tmp/t211 torch==2.11.0 && unzip -q /tmp/t211/torch-*.whl 'torch/*' -d /tmp/t211
    python tools/torch_api_diff.py /tmp/t211 "$(python -c 'import torch, os; print(os.path.dirname(torch.__path__[0]))')" \
        > tests/data/torch_api_after_2.11.txt

Both trees are read statically (no import: an older CUDA wheel needs no GPU libraries here) with one
rule, so what the rule misses it misses on both sides: per module file (.py and the .pyi stubs of
torch._C), the names bound at module level (def, class, assignment, ``__all__``, imports from
within torch, ``from ... import *`` of a torch module, followed), inside top-level if/try/with
blocks too; ``torch`` also gets torch._C._VariableFunctions' names (torch/__init__.py copies them in
a loop). Names a module merely imports from outside torch (``Callable``, ``annotations``) are left
out. Output: ``module`` for a module the old torch lacks, ``module name`` for a new name; sorted.
Not seen: new keyword arguments of existing functions, new Tensor methods, the C++ API.
"""

from __future__ import annotations

import ast
import os
import sys


def module_files(root: str) -> dict[str, list[str]]:
    mods: dict[str, list[str]] = {}
    for dirpath, _, files in os.walk(os.path.join(root, "torch")):
        for f in files:
            if not f.endswith((".py", ".pyi")):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), root)
            parts = rel.rsplit(".", 1)[0].split(os.sep)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods.setdefault(".".join(parts), []).append(os.path.join(dirpath, f))
    return mods


def _absolute(module: str, level: int, current: str, is_pkg: bool) -> str:
    if level == 0:
        return module
    base = current.split(".") if is_pkg else current.split(".")[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


class Names:
    def __init__(self, root: str):
        self.files = module_files(root)
        self.cache: dict[str, set[str]] = {}

    def __call__(self, mod: str, stack: tuple = ()) -> set[str]:
        if mod in self.cache:
            return self.cache[mod]
        if mod in stack or mod not in self.files:
            return set()
        out: set[str] = set()
        for path in self.files[mod]:
            is_pkg = os.path.basename(path).startswith("__init__")
            try:
                tree = ast.parse(open(path, encoding="utf-8").read())
            except (SyntaxError, UnicodeDecodeError):
                continue
            self._walk(tree.body, mod, is_pkg, out, stack)
        if mod == "torch":
            out |= self("torch._C._VariableFunctions", stack + (mod,))
        self.cache[mod] = out
        return out

    def _walk(self, body, mod, is_pkg, out, stack):
        for n in body:
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                out.add(n.name)
            elif isinstance(n, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = n.targets if isinstance(n, ast.Assign) else [n.target]
                for t in targets:
                    out.update(e.id for e in ast.walk(t) if isinstance(e, ast.Name))
                if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets) and \
                        isinstance(n.value, (ast.List, ast.Tuple)):
                    out.update(e.value for e in n.value.elts if isinstance(e, ast.Constant) and isinstance(e.value, str))
            elif isinstance(n, ast.Import):
                out.update((a.asname or a.name).split(".")[0] for a in n.names if a.name.startswith("torch"))
            elif isinstance(n, ast.ImportFrom):
                src = _absolute(n.module or "", n.level, mod, is_pkg)
                if not src.startswith("torch"):
                    continue
                for a in n.names:
                    if a.name == "*":
                        out.update(x for x in self(src, stack + (mod,)) if not x.startswith("_"))
                    else:
                        out.add(a.asname or a.name)
            elif isinstance(n, (ast.If, ast.Try, ast.With)):
                for part in (n.body, getattr(n, "orelse", []), getattr(n, "finalbody", [])):
                    self._walk(part, mod, is_pkg, out, stack)
                for h in getattr(n, "handlers", []):
                    self._walk(h.body, mod, is_pkg, out, stack)


def diff(old_root: str, new_root: str) -> list[str]:
    old, new = Names(old_root), Names(new_root)
    lines = []
    for mod in sorted(new.files):
        if mod not in old.files:
            lines.append(mod)
            continue
        lines += [f"{mod} {name}" for name in sorted(new(mod) - old(mod))]
    return lines


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print(__doc__)
        return 2
    old_root, new_root = argv
    print(f"# torch Python API names in {_version(new_root)} that {_version(old_root)} lacks "
          "(tools/torch_api_diff.py; tests/test_versions.py reads this file)")
    for line in diff(old_root, new_root):
        print(line)
    return 0


def _version(root: str) -> str:
    try:
        tree = ast.parse(open(os.path.join(root, "torch", "version.py")).read())
        for n in tree.body:
            if isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "__version__" for t in n.targets):
                return f"torch {n.value.value}"
    except (OSError, AttributeError):
        pass
    return root


if __name__ == "__main__":
    sys.exit(main())
