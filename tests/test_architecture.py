"""The package's architecture: the import-linter contracts in .importlinter, and no import cycles.

Three checks run on the real tree:
  * `lint-imports` with .importlinter (layers, library-uses-interfaces, acyclic siblings);
  * an exact cycle finder over grimp's direct-import graph (function-level imports count);
  * the library-uses-interfaces rule again, on the graph *as Python runs it*: importing
    `ttc_jax.tasks.base` also executes `ttc_jax/tasks/__init__.py`, an edge grimp does not
    record, so a registry in that `__init__` would load the concrete tasks unseen.

Each check also runs on a copy of the package with one line injected, and on a synthetic
package laid out like the target architecture, so a check that can no longer fail is caught.

Every graph is built in a subprocess whose sys.path starts with the tree under test (the
copy in a tmp dir, not the installed `ttc_jax`); the subprocess refuses to run if
`ttc_jax` resolves anywhere else.
"""

from __future__ import annotations

import collections
import configparser
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / ".importlinter"
PACKAGE = "ttc_jax"

FORBIDDEN_CONTRACT = "library-uses-interfaces"
LAYERS_CONTRACT = "layers"
ACYCLIC_CONTRACT = "acyclic"

# Runs in a fresh interpreter: `root` first on sys.path, then either import-linter or grimp.
_PRELUDE = """
import importlib.util, json, os, sys
root, mode = sys.argv[1], sys.argv[2]
sys.path.insert(0, root)
spec = importlib.util.find_spec({package!r})
origin = os.path.realpath(spec.origin) if spec and spec.origin else None
if origin is None or not origin.startswith(os.path.realpath(root) + os.sep):
  sys.exit(f"refusing to analyse {package!r} from {{origin}}: expected it under {{root}}")
"""

_LINT_SCRIPT = _PRELUDE + """
from importlinter.cli import lint_imports
sys.exit(lint_imports(config_filename=sys.argv[3], limit_to_contracts=tuple(sys.argv[4:]),
                      no_cache=True, no_logo=True))
"""

_GRAPH_SCRIPT = _PRELUDE + """
import grimp
graph = grimp.build_graph({package!r}, cache_dir=None)
imports = []
for importer in sorted(graph.modules):
  for imported in sorted(graph.find_modules_directly_imported_by(importer)):
    details = graph.get_import_details(importer=importer, imported=imported)
    imports.append([importer, imported, sorted({{d["line_number"] for d in details}})])
json.dump({{"modules": sorted(graph.modules), "imports": imports}}, sys.stdout)
"""


def _subprocess_env(root: Path) -> dict[str, str]:
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join([str(root)] + [p for p in [env.get("PYTHONPATH")] if p])
  # rich wraps at the terminal width (80 in a pipe); wide lines keep contract names whole.
  env.update(COLUMNS="500", NO_COLOR="1", TERM="dumb")
  return env


def lint(root: Path, *contracts: str, config: Path = CONFIG) -> tuple[int, str]:
  """Runs import-linter on the `ttc_jax` under `root`; returns (exit code, output)."""
  proc = subprocess.run(
      [sys.executable, "-c", _LINT_SCRIPT.format(package=PACKAGE), str(root), "lint",
       str(config), *contracts],
      cwd=root, env=_subprocess_env(root), capture_output=True, text=True, timeout=300)
  return proc.returncode, proc.stdout + proc.stderr


def build_graph(root: Path) -> tuple[set[str], dict[str, dict[str, list[int]]]]:
  """grimp's graph of the `ttc_jax` under `root`: (modules, {importer: {imported: lines}})."""
  proc = subprocess.run(
      [sys.executable, "-c", _GRAPH_SCRIPT.format(package=PACKAGE), str(root), "graph"],
      cwd=root, env=_subprocess_env(root), capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  data = json.loads(proc.stdout)
  edges: dict[str, dict[str, list[int]]] = collections.defaultdict(dict)
  for importer, imported, lines in data["imports"]:
    edges[importer][imported] = lines
  return set(data["modules"]), dict(edges)


def contract_status(output: str) -> dict[str, str]:
  """{contract name: 'KEPT' | 'BROKEN'} from import-linter's summary."""
  names = _contract_names()
  status = {}
  for line in output.splitlines():
    m = re.fullmatch(r"(.*) (KEPT|BROKEN)", line.strip())
    if m and m.group(1) in names.values():
      status[m.group(1)] = m.group(2)
  return status


def _config() -> configparser.ConfigParser:
  parser = configparser.ConfigParser()
  assert parser.read(CONFIG), f"{CONFIG} is missing"
  return parser


def _contract_names() -> dict[str, str]:
  parser = _config()
  return {section.split(":", 2)[2]: parser[section]["name"] for section in parser.sections()
          if section.startswith("importlinter:contract:")}


def _name(contract_id: str) -> str:
  return _contract_names()[contract_id]


def _modules_option(contract_id: str, option: str) -> list[str]:
  return _config()[f"importlinter:contract:{contract_id}"][option].split()


def _fmt_chain(chain: list[str], edges) -> str:
  steps = []
  for importer, imported in zip(chain, chain[1:]):
    lines = edges.get(importer, {}).get(imported)
    where = f" (l.{', '.join(map(str, lines))})" if lines else " (parent package, implicit)"
    steps.append(f"{importer} -> {imported}{where}")
  return "\n    ".join(steps)


# ---- cycle finder over the direct-import graph ----


def strongly_connected(edges: dict[str, dict[str, list[int]]]) -> list[set[str]]:
  """The import graph's strongly connected components that hold a cycle, by smallest name.

  Tarjan's algorithm, iterative (no recursion limit on long chains).
  """
  index: dict[str, int] = {}
  low: dict[str, int] = {}
  on_stack: set[str] = set()
  stack: list[str] = []
  components: list[set[str]] = []
  nodes = sorted(set(edges) | {m for targets in edges.values() for m in targets})
  for start in nodes:
    if start in index:
      continue
    index[start] = low[start] = len(index)
    stack.append(start)
    on_stack.add(start)
    work = [(start, iter(sorted(edges.get(start, {}))))]
    while work:
      node, children = work[-1]
      child = next(children, None)
      if child is None:
        work.pop()
        if work:
          low[work[-1][0]] = min(low[work[-1][0]], low[node])
        if low[node] == index[node]:
          component = set()
          while True:
            member = stack.pop()
            on_stack.discard(member)
            component.add(member)
            if member == node:
              break
          if len(component) > 1 or node in edges.get(node, {}):
            components.append(component)
      elif child not in index:
        index[child] = low[child] = len(index)
        stack.append(child)
        on_stack.add(child)
        work.append((child, iter(sorted(edges.get(child, {})))))
      elif child in on_stack:
        low[node] = min(low[node], index[child])
  return sorted(components, key=min)


def find_cycles(edges: dict[str, dict[str, list[int]]]) -> list[list[str]]:
  """One cycle (first module repeated last) per strongly connected component.

  Each is the shortest cycle through the component's smallest module name, so the report
  is deterministic and short; fixing it and rerunning shows any other cycle left.
  """
  cycles = []
  for component in strongly_connected(edges):
    first = min(component)
    inside = {m: {c: l for c, l in edges.get(m, {}).items() if c in component}
              for m in component}
    if first in inside[first]:  # imports itself
      cycles.append([first, first])
      continue
    # Shortest chain from `first` to a module that imports `first` back.
    chain = _shortest_chain(inside, first, lambda m, first=first: first in inside[m])
    cycles.append(chain + [first])
  return cycles


def cycle_report(edges) -> str:
  parts = []
  for i, (component, cycle) in enumerate(zip(strongly_connected(edges), find_cycles(edges))):
    parts.append(f"  cycle {i + 1}:\n    {_fmt_chain(cycle, edges)}")
    if len(component) > len(cycle) - 1:
      parts.append(f"    (all on cycles with it: {', '.join(sorted(component))})")
  return "\n".join(parts)


# ---- the forbidden contract as Python runs it (parents are imported before children) ----


def runtime_edges(modules: set[str], edges) -> dict[str, dict[str, list[int]]]:
  """The direct imports plus, for every module, the implicit import of its parent package."""
  out = {m: dict(targets) for m, targets in edges.items()}
  for module in modules:
    parent = module.rpartition(".")[0]
    if parent:
      out.setdefault(module, {}).setdefault(parent, [])
  return out


def _shortest_chain(graph, source: str, is_target) -> list[str] | None:
  """Breadth-first: the shortest import chain from `source` to a module `is_target` accepts."""
  parents: dict[str, str | None] = {source: None}
  frontier = [source]
  while frontier:
    nxt = []
    for node in frontier:
      for child in sorted(graph.get(node, {})):
        if child in parents:
          continue
        parents[child] = node
        if is_target(child):
          chain = [child]
          while parents[chain[-1]] is not None:
            chain.append(parents[chain[-1]])
          return chain[::-1]
        nxt.append(child)
    frontier = nxt
  return None


def forbidden_runtime_chains(modules: set[str], edges, sources: list[str],
                             forbidden: list[str]) -> list[list[str]]:
  """Shortest chain from each source module (or descendant) that loads a forbidden module."""
  def within(module, packages):
    return any(module == p or module.startswith(p + ".") for p in packages)

  graph = runtime_edges(modules, edges)
  chains = []
  for source in sorted(m for m in modules if within(m, sources)):
    chain = _shortest_chain(graph, source, lambda m: within(m, forbidden))
    if chain:
      chains.append(chain)
  return chains


def forbidden_runtime_report(root: Path) -> str:
  modules, edges = build_graph(root)
  chains = forbidden_runtime_chains(
      modules, edges, _modules_option(FORBIDDEN_CONTRACT, "source_modules"),
      _modules_option(FORBIDDEN_CONTRACT, "forbidden_modules"))
  return "\n".join(f"  {c[0]} loads {c[-1]}:\n    {_fmt_chain(c, runtime_edges(modules, edges))}"
                   for c in chains)


def package_dirs_without_init(root: Path) -> list[str]:
  """Folders of .py files under root/ttc_jax with no __init__.py: grimp skips them whole."""
  missing = []
  for folder, dirs, files in os.walk(root / PACKAGE):
    dirs[:] = [d for d in dirs if d != "__pycache__"]
    if any(f.endswith(".py") for f in files) and "__init__.py" not in files:
      missing.append(os.path.relpath(folder, root))
  return sorted(missing)


# ---- a synthetic package with the target layout ----

# Module path -> source. Imports follow the architecture (every contract kept, no cycle);
# each case of _INJECTIONS adds one import and names the contracts it must break.
_MINI = {
    "__init__.py": '"""Root: imports nothing."""',
    "main.py": """
        from absl import app
        from ttc_jax.pipeline import settings
        from ttc_jax.pipeline.stages import data, report, search
        def run():
          app.run(lambda argv: None)
        """,
    "testing.py": """
        from ttc_jax.models import transformer
        from ttc_jax.sampling.sampler import Sampler
        from ttc_jax.tasks import builtin
        from ttc_jax.tokenizers.char import CharTokenizer
        """,
    "compilation.py": "import contextlib",
    "pipeline/__init__.py": "",
    "pipeline/state.py": "import dataclasses",
    "pipeline/artifacts.py": "from ttc_jax.io import shards",
    "pipeline/settings.py": "import ml_collections",
    "pipeline/common.py": """
        from ttc_jax.pipeline import artifacts, settings, state
        from ttc_jax.tasks import builtin
        from ttc_jax.tokenizers import char
        """,
    "pipeline/figures.py": "from ttc_jax.stats import intervals",
    "pipeline/report.py": "from ttc_jax.pipeline import figures\nfrom ttc_jax.io import metrics",
    "pipeline/stages/__init__.py": "",
    **{f"pipeline/stages/{stage}.py": "from ttc_jax.pipeline import common"
       for stage in ["data", "base_lm", "evaluation", "prm_labels", "verifiers",
                     "revisions", "larger_model"]},
    "pipeline/stages/search.py": """
        from ttc_jax.pipeline import common
        import ttc_jax.search
        from ttc_jax.search import base
        from ttc_jax.io import sweep
        """,
    "pipeline/stages/allocator.py": """
        from ttc_jax.pipeline import common
        from ttc_jax.allocator import compute_optimal
        def run():
          from ttc_jax.revisions import sequential  # function-level, still a legal import
        """,
    "pipeline/stages/report.py": "from ttc_jax.pipeline import common, report",
    "allocator/__init__.py": "",
    "allocator/compute_optimal.py": """
        from ttc_jax.allocator import difficulty, flops
        from ttc_jax.search import base
        from ttc_jax.stats import intervals
        """,
    "allocator/difficulty.py": "import numpy as np",
    "allocator/flops.py": "from ttc_jax.models import transformer",
    # As in the real package: importing ttc_jax.search registers the built-in strategies.
    "search/__init__.py": "from ttc_jax.search import beam, best_of_n, dvts, lookahead",
    "search/base.py": """
        from ttc_jax import compilation
        from ttc_jax.models import reward
        from ttc_jax.sampling.sampler import Sampler
        from ttc_jax.search import selection
        from ttc_jax.tasks import base as task_base
        from ttc_jax.tokenizers.base import Tokenizer
        """,
    "search/selection.py": "import numpy as np",
    "search/beam.py": "from ttc_jax.search import base\nfrom ttc_jax.parallel import mesh",
    "search/best_of_n.py": "from ttc_jax.search import base, selection",
    "search/dvts.py": "from ttc_jax.search import base, beam",
    "search/lookahead.py": "from ttc_jax.search import base, beam",
    "revisions/__init__.py": "",
    "revisions/sequential.py": """
        from ttc_jax.models import reward
        from ttc_jax.revisions import trajectories
        from ttc_jax.sampling import sampler
        from ttc_jax.tokenizers import base
        """,
    "revisions/trajectories.py": "from ttc_jax.io import shards\nfrom ttc_jax.sampling import sampler",
    "training/__init__.py": "",
    "training/trainer.py": "from ttc_jax.io import metrics\nfrom ttc_jax.parallel import mesh",
    "training/prm_labels.py": "from ttc_jax.models import reward\nfrom ttc_jax.sampling import sampler",
    "sampling/__init__.py": "",
    "sampling/sampler.py": """
        from ttc_jax.parallel import mesh
        from ttc_jax.tokenizers import base
        class Sampler:
          def model(self):
            from ttc_jax.models import transformer  # function-level
        """,
    "models/__init__.py": "",
    "models/transformer.py": "from ttc_jax.parallel import mesh",
    "models/reward.py": "from ttc_jax.models import transformer",
    "models/convert.py": "import ttc_jax.models.transformer",
    "parallel/__init__.py": "",
    "parallel/mesh.py": "import jax",
    "tasks/__init__.py": '"""Interfaces only: imports nothing (see .importlinter)."""',
    # The registry (register/create) lives in base; built-ins register on import, and
    # tasks.builtin imports them all: only pipeline, main and testing import it.
    "tasks/base.py": "import abc\nfrom ttc_jax.tokenizers import base",
    "tasks/builtin.py": "from ttc_jax.tasks import chain_arithmetic",
    "tasks/chain_arithmetic/__init__.py": "from . import problems\nfrom ttc_jax.tasks import base",
    "tasks/chain_arithmetic/problems.py": "import random",
    "tasks/chain_arithmetic/seqio_tasks.py": """
        from ttc_jax.tasks.chain_arithmetic import problems
        from ttc_jax.tokenizers import base
        """,
    "tasks/chain_arithmetic/tfds_builder.py": "from .problems import random",
    "tokenizers/__init__.py": '"""Interfaces only: imports nothing."""',
    "tokenizers/base.py": "import abc",
    "tokenizers/char.py": "from ttc_jax.tokenizers import base",
    "io/__init__.py": "",
    "io/metrics.py": "import json",
    "io/shards.py": "from ttc_jax.io import metrics",
    "io/sweep.py": "import json",
    "stats/__init__.py": "",
    "stats/intervals.py": "import scipy.stats",
}


def make_mini_package(root: Path) -> Path:
  for rel, source in _MINI.items():
    path = root / PACKAGE / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source).strip() + "\n")
  return root


def inject(root: Path, rel: str, code: str) -> None:
  path = root / PACKAGE / rel
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "a") as f:
    f.write("\n" + textwrap.dedent(code).strip() + "  # injected\n")


@pytest.fixture
def mini(tmp_path) -> Path:
  return make_mini_package(tmp_path)


# ---- the real tree ----


def test_contracts_hold():
  rc, output = lint(REPO)
  assert rc == 0, f"lint-imports {CONFIG.name} failed:\n{output}"


def test_no_import_cycles():
  _, edges = build_graph(REPO)
  report = cycle_report(edges)
  assert not report, f"import cycles in {PACKAGE} (function-level imports count):\n{report}"


def test_library_never_loads_concrete_implementations():
  report = forbidden_runtime_report(REPO)
  assert not report, (
      "library modules load concrete tasks/tokenizers at run time (a package __init__ on the "
      "way imports them; keep ttc_jax/tasks/__init__.py and ttc_jax/tokenizers/__init__.py "
      f"free of imports):\n{report}")


def test_every_package_folder_has_init():
  missing = package_dirs_without_init(REPO)
  assert not missing, f"grimp, hence every contract, cannot see these folders: {missing}"


_TARGETS = ["search/base.py", "search/beam.py", "sampling/sampler.py", "models/transformer.py"]


def test_forbidden_contract_catches_injected_import_in_a_copy(tmp_path):
  shutil.copytree(REPO / PACKAGE, tmp_path / PACKAGE,
                  ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
  target = next((t for t in _TARGETS if (tmp_path / PACKAGE / t).exists()), None)
  assert target, f"none of {_TARGETS} exists: update _TARGETS to a library module"
  inject(tmp_path, target, "from ttc_jax.tasks import chain_arithmetic")
  importer = f"{PACKAGE}." + target[:-len(".py")].replace("/", ".")
  line = len((tmp_path / PACKAGE / target).read_text().splitlines())

  rc, output = lint(tmp_path, FORBIDDEN_CONTRACT)
  assert rc == 1, output
  assert contract_status(output) == {_name(FORBIDDEN_CONTRACT): "BROKEN"}, output
  assert f"{importer} -> ttc_jax.tasks.chain_arithmetic (l.{line})" in output, output
  # The real tree was not touched.
  assert "# injected" not in (REPO / PACKAGE / target).read_text()


# ---- the checks themselves, on a synthetic package with the target layout ----


def test_mini_package_keeps_every_contract(mini):
  rc, output = lint(mini)
  assert rc == 0, output
  assert set(contract_status(output).values()) == {"KEPT"}, output
  assert len(contract_status(output)) == len(_contract_names()), output
  _, edges = build_graph(mini)
  assert find_cycles(edges) == []
  assert forbidden_runtime_report(mini) == ""
  assert package_dirs_without_init(mini) == []


# case: (file, injected code, the contracts it breaks, text the report must contain)
_INJECTIONS = {
    "concrete task in library": (
        "search/base.py", "from ttc_jax.tasks import chain_arithmetic", {FORBIDDEN_CONTRACT},
        "ttc_jax.search.base -> ttc_jax.tasks.chain_arithmetic (l.8)"),
    "concrete tokenizer, function-level": (
        "search/beam.py", "def f():\n  from ttc_jax.tokenizers.char import CharTokenizer",
        {FORBIDDEN_CONTRACT}, "ttc_jax.search.beam -> ttc_jax.tokenizers.char (l.5)"),
    "builtin list reaches concrete task indirectly": (
        "models/reward.py", "from ttc_jax.tasks import builtin", {FORBIDDEN_CONTRACT},
        "ttc_jax.tasks.builtin -> ttc_jax.tasks.chain_arithmetic (l.1)"),
    # A registry that imports its built-ins lazily, inside a function of tasks.base: every
    # library module typed against the interface would then reach the concrete task.
    "lazy built-in import in tasks.base": (
        "tasks/base.py", "def create(name):\n  from ttc_jax.tasks import builtin",
        {FORBIDDEN_CONTRACT, ACYCLIC_CONTRACT}, "No cycles are allowed in ttc_jax.tasks."),
    "sibling layers": (
        "search/best_of_n.py", "from ttc_jax.training import trainer", {LAYERS_CONTRACT},
        "ttc_jax.search is not allowed to import ttc_jax.training"),
    "lower layer imports pipeline": (
        "sampling/sampler.py", "from ttc_jax.pipeline import state", {LAYERS_CONTRACT},
        "ttc_jax.sampling is not allowed to import ttc_jax.pipeline"),
    "library imports test fixtures": (  # which build concrete tokenizers: both contracts
        "models/convert.py", "from ttc_jax import testing", {LAYERS_CONTRACT, FORBIDDEN_CONTRACT},
        "ttc_jax.models is not allowed to import ttc_jax.testing"),
    "tokenizers import tasks": (
        "tokenizers/char.py", "from ttc_jax.tasks import base", {LAYERS_CONTRACT},
        "ttc_jax.tokenizers is not allowed to import ttc_jax.tasks"),
    "leftover of the old layout": (
        "data/__init__.py", '"""old"""', {LAYERS_CONTRACT}, "- ttc_jax.data"),
    "cycle between two modules": (
        "search/selection.py", "def f():\n  from ttc_jax.search import best_of_n",
        {ACYCLIC_CONTRACT}, "No cycles are allowed in ttc_jax.search."),
    # stages.report -> report -> stages.evaluation: no module is on a cycle, but two
    # children of ttc_jax.pipeline are (the subpackage stages and the module report).
    "cycle between two subpackages": (
        "pipeline/report.py", "from ttc_jax.pipeline.stages import evaluation",
        {ACYCLIC_CONTRACT}, "No cycles are allowed in ttc_jax.pipeline."),
}


@pytest.mark.parametrize("case", sorted(_INJECTIONS))
def test_each_contract_catches_its_violation(mini, case):
  rel, code, contracts, expected = _INJECTIONS[case]
  inject(mini, rel, code)
  rc, output = lint(mini)
  assert rc == 1, output
  status = contract_status(output)
  assert len(status) == len(_contract_names()), output
  assert {n for n, s in status.items() if s == "BROKEN"} == {_name(c) for c in contracts}, output
  assert expected in output, output


def test_cycle_finder_reports_function_level_cycle(mini):
  inject(mini, "search/base.py", "def f():\n  from ttc_jax.search import dvts")
  _, edges = build_graph(mini)
  assert find_cycles(edges) == [
      ["ttc_jax.search.base", "ttc_jax.search.dvts", "ttc_jax.search.base"]]
  assert "ttc_jax.search.base -> ttc_jax.search.dvts (l." in cycle_report(edges)


def test_cycle_finder_sees_package_init_cycle_that_acyclic_siblings_misses(mini):
  # search/__init__ imports beam, and beam takes a name from the package.
  inject(mini, "search/beam.py", "from ttc_jax.search import SearchConfig")
  rc, output = lint(mini, ACYCLIC_CONTRACT)
  assert rc == 0, output  # import-linter's sibling check does not count a package's own __init__
  _, edges = build_graph(mini)
  assert find_cycles(edges) == [["ttc_jax.search", "ttc_jax.search.beam", "ttc_jax.search"]]


def test_cycle_finder_on_a_longer_cycle():
  edges = {"a": {"b": [1]}, "b": {"c": [2]}, "c": {"a": [3], "d": [4]}, "d": {},
           "x": {"y": [1]}, "y": {"x": [1]}}
  assert find_cycles(edges) == [["a", "b", "c", "a"], ["x", "y", "x"]]
  assert find_cycles({"a": {"b": [1]}, "b": {}}) == []


def test_registry_in_tasks_init_is_invisible_to_lint_imports_but_caught_at_run_time(mini):
  # The arrangement .importlinter advises against: ttc_jax/tasks/__init__.py registers the
  # built-ins. Library modules import only ttc_jax.tasks.base, so grimp's graph has no path
  # to the concrete task, yet Python runs the __init__ first and loads it.
  inject(mini, "tasks/__init__.py", "from ttc_jax.tasks import chain_arithmetic")
  rc, output = lint(mini, FORBIDDEN_CONTRACT)
  assert rc == 0, output
  report = forbidden_runtime_report(mini)
  assert ("ttc_jax.search.base loads ttc_jax.tasks.chain_arithmetic:\n"
          "    ttc_jax.search.base -> ttc_jax.tasks.base (l.") in report, report
  assert ("ttc_jax.tasks.base -> ttc_jax.tasks (parent package, implicit)\n"
          "    ttc_jax.tasks -> ttc_jax.tasks.chain_arithmetic (l.") in report, report


def test_folder_without_init_is_reported(mini):
  inject(mini, "pipeline/extra/stage.py", "from ttc_jax.search import base")
  assert package_dirs_without_init(mini) == [os.path.join(PACKAGE, "pipeline", "extra")]


def test_graph_is_built_from_the_copy_not_the_installed_package(mini):
  inject(mini, "compilation.py", "from ttc_jax.io import sweep")
  _, edges = build_graph(mini)
  assert "ttc_jax.io.sweep" in edges["ttc_jax.compilation"]
