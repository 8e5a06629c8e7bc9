"Habits that keep a notebook repo healthy: notebooks and package in sync, clean notebooks, importable modules."
import ast, configparser, json, shutil, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NBS = sorted(p for p in (ROOT/'nbs').rglob('*.ipynb') if '.ipynb_checkpoints' not in p.parts)
MODULE_NBS = [p for p in NBS if p.parent == ROOT/'nbs' and p.name[:2].isdigit()]


def _cfg():
    c = configparser.ConfigParser(); c.read(ROOT/'settings.ini'); return c['DEFAULT']


def test_notebooks_exist():
    # nbdev_test exits 0 when it finds no notebook: make sure there is something to test
    assert len(MODULE_NBS) >= 2, MODULE_NBS
    assert (ROOT/'nbs'/'index.ipynb').exists()


def test_settings_keep_papermill_tags():
    assert _cfg()['allowed_cell_metadata_keys'].split() == ['tags']
    assert _cfg()['lib_name'] == 'alchemist'


def _copy_project(tmp_path):
    for name in ('settings.ini', 'setup.py', 'README.md'): shutil.copy(ROOT/name, tmp_path/name)
    shutil.copytree(ROOT/'nbs', tmp_path/'nbs', ignore=shutil.ignore_patterns('.ipynb_checkpoints'))
    shutil.copytree(ROOT/'alchemist', tmp_path/'alchemist', ignore=shutil.ignore_patterns('__pycache__'))
    return tmp_path


def _tree(d: Path, pattern: str):
    return {p.relative_to(d).as_posix(): p.read_text() for p in sorted(d.rglob(pattern)) if '__pycache__' not in p.parts}


def _changed_by(tool: str, tmp_path, subdir: str, pattern: str):
    "Run nbdev `tool` in a copy of the project; return the copy and the files under `subdir` it changed (with their new text)."
    proj = _copy_project(tmp_path)
    before = _tree(proj/subdir, pattern)
    subprocess.run([str(BIN/tool)], cwd=proj, check=True, capture_output=True)
    after = _tree(proj/subdir, pattern)
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k)), after


def test_export_leaves_no_diff(tmp_path):
    "The package is in sync with the notebooks: nbdev_export in a copy changes nothing."
    changed, _ = _changed_by('nbdev_export', tmp_path, 'alchemist', '*.py')
    assert not changed, f"nbdev_export changed {changed}: edit the notebook, then run nbdev_export and commit both"


def test_no_orphan_modules():
    "Every module in alchemist/ comes from a notebook (no leftovers of a renamed notebook)."
    exported = set()
    for nb in NBS:
        for c in json.loads(nb.read_text())['cells']:
            src = ''.join(c['source'])
            if c['cell_type'] == 'code' and src.lstrip().startswith('#| default_exp'):
                exported.add(src.split()[2].replace('.', '/') + '.py')
    mods = {p.relative_to(ROOT/'alchemist').as_posix() for p in (ROOT/'alchemist').rglob('*.py')} - {'__init__.py', '_modidx.py'}
    assert mods <= exported, f"modules without a notebook: {sorted(mods - exported)}"


def test_notebooks_clean(tmp_path):
    "nbdev_clean leaves no diff, and keeps papermill's 'parameters' tag."
    changed, after = _changed_by('nbdev_clean', tmp_path, 'nbs', '*.ipynb')
    assert not changed, f"run nbdev_clean and commit: {changed}"
    for k, text in after.items():
        if k.startswith('experiments/'):
            tags = [t for c in json.loads(text)['cells'] for t in c.get('metadata', {}).get('tags', [])]
            assert 'parameters' in tags, f"{k} lost its papermill 'parameters' tag"


def _modules():
    return sorted('alchemist.' + p.stem for p in (ROOT/'alchemist').glob('*.py') if not p.stem.startswith('_'))


@pytest.mark.parametrize('mod', _modules())
def test_module_imports_in_fresh_interpreter(mod):
    "Exported code must not lean on notebook globals: each module imports on its own."
    r = subprocess.run([sys.executable, '-c', f'import {mod}'], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]


def _directive_free(src: str) -> str:
    return '\n'.join(l for l in src.splitlines() if not l.lstrip().startswith(('#|', '%', '!')))


@pytest.mark.parametrize('nb', NBS, ids=lambda p: p.relative_to(ROOT/'nbs').as_posix())
def test_imports_in_their_own_cells(nb):
    "A cell that imports does nothing else (nbdev style: imports are easy to find and re-run)."
    for i, c in enumerate(json.loads(nb.read_text())['cells']):
        if c['cell_type'] != 'code': continue
        try: tree = ast.parse(_directive_free(''.join(c['source'])))
        except SyntaxError: continue
        kinds = [isinstance(s, (ast.Import, ast.ImportFrom)) for s in tree.body]
        if any(kinds): assert all(kinds), f"{nb.name} cell {i} mixes imports with other code:\n{''.join(c['source'])[:300]}"


def test_git_revision_dirty_ignores_reports(tmp_path):
    "A sweep rewriting reports/results must not mark its runs dirty; a changed tracked source file must."
    from alchemist.core import git_revision
    git = lambda *a: subprocess.run(['git', '-c', 'user.name=t', '-c', 'user.email=t@t', *a], cwd=tmp_path, check=True, capture_output=True)
    git('init', '-q')
    (tmp_path/'reports').mkdir(); (tmp_path/'reports'/'r.csv').write_text('a\n'); (tmp_path/'code.py').write_text('x = 1\n')
    git('add', '.'); git('commit', '-qm', 'init')
    rev = git_revision(tmp_path)
    assert rev != 'unknown' and not rev.endswith('+dirty')
    (tmp_path/'reports'/'r.csv').write_text('a\n1\n')
    assert git_revision(tmp_path) == rev
    (tmp_path/'code.py').write_text('x = 2\n')
    assert git_revision(tmp_path) == rev + '+dirty'


def _imports(path: Path):
    "`(module_level, in_functions)`: the alchemist modules `path` imports at module level, and (line, statement, lineno) of imports inside functions."
    tree = ast.parse(path.read_text())
    def targets(node):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1: return [node.module or ''] if node.module else [a.name for a in node.names]
            if node.module == 'alchemist': return [a.name for a in node.names]
            if node.module and node.module.startswith('alchemist.'): return [node.module.split('.')[1]]
            return []
        return [a.name.split('.')[1] for a in node.names if a.name.startswith('alchemist.')]
    top, inner = set(), []
    funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    nested = {id(i) for f in funcs for i in ast.walk(f) if isinstance(i, (ast.Import, ast.ImportFrom))}
    for n in ast.walk(tree):
        if not isinstance(n, (ast.Import, ast.ImportFrom)): continue
        if id(n) in nested: inner.append((n.lineno, ast.unparse(n), targets(n)))
        else: top |= set(targets(n))
    return top, inner


def _package_graph():
    mods = {p.stem: p for p in (ROOT/'alchemist').glob('*.py') if not p.stem.startswith('_')}
    return mods, {m: _imports(p) for m, p in mods.items()}


def _cycle(graph: dict):
    "One import cycle of `graph` (module -> set of modules) as a list, or None."
    state, stack = {}, []
    def visit(m):
        state[m] = 'open'; stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 'open': return stack[stack.index(n):] + [n]
            if n not in state and (c := visit(n)): return c
        state[m] = 'done'; stack.pop(); return None
    for m in sorted(graph):
        if m not in state and (c := visit(m)): return c
    return None


def test_cycle_finder_finds_a_cycle():
    assert _cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
    assert _cycle({'a': {'b'}, 'b': set(), 'c': {'a', 'b'}}) is None


def test_no_import_cycle():
    "No module of the package imports (at module level or inside a function) a module that imports it back, directly or not."
    mods, info = _package_graph()
    graph = {m: (top | {t for _, _, ts in inner for t in ts}) & set(mods) for m, (top, inner) in info.items()}
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph))}"


def test_imports_inside_functions_say_why():
    "An import inside a function (a heavy optional dependency, or a fast `alchemist --help`) says why on its line or the line above."
    mods, info = _package_graph()
    bad = []
    for m, (_, inner) in info.items():
        lines = (ROOT/'alchemist'/f'{m}.py').read_text().splitlines()
        for lineno, stmt, _ in inner:
            if '#' not in lines[lineno - 1] and '#' not in lines[lineno - 2]:
                bad.append(f"{m}.py:{lineno}: `{stmt}` inside a function without a '# why' comment (or import it at the top)")
    assert not bad, '\n'.join(bad)


def test_docs_build_writes_nothing_into_the_repo(tmp_path):
    "Building the docs renders the stored outputs: it executes no cell, so reports/, data/ and nbs/ stay as they were."
    status = lambda: subprocess.run(['git', 'status', '--porcelain', '--untracked-files=all'], cwd=ROOT, capture_output=True, text=True).stdout
    before = status()
    r = subprocess.run([sys.executable, str(ROOT/'scripts'/'build_docs.py'), '--only', '02b_oracle,09_select', '--out', str(tmp_path/'site'),
                        '--no-screenshot'], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert status() == before, "the docs build changed files in the repo"
    page = (tmp_path/'site'/'09_select.html').read_text()
    assert 'image/png' in page or '<img' in page, "the stored outputs (a plot) are not on the page"
