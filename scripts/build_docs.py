#!/usr/bin/env python
"""Build the documentation site.

Where Quarto exists this is nbdev's own `nbdev_docs` (config in nbs/_quarto.yml, nbs/nbdev.yml).
Quarto cannot be installed on machines without GitHub access, so otherwise nbconvert writes one HTML page per
notebook into _docs/ with a navigation page (`#| hide` cells dropped, nbdev directives stripped).

The pages show the outputs stored in the notebooks: building the docs executes nothing, so it never writes into
reports/ or data/. Refresh the stored outputs with `make notebooks` (scripts/run_notebooks.py).

    python scripts/build_docs.py [--only 00_core,01_data] [--out DIR]
"""
import argparse, html, shutil, subprocess, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _visible(nb):
    "Drop hidden cells and directive lines, as nbdev's processors do."
    cells = []
    for c in nb.cells:
        src = c.source.splitlines()
        if c.cell_type == 'code' and any(l.strip() in ('#| hide', '#|hide') for l in src): continue
        if c.cell_type == 'code': c.source = '\n'.join(l for l in src if not l.lstrip().startswith('#|')).strip()
        if c.cell_type == 'code' and not c.source and not c.get('outputs'): continue
        cells.append(c)
    nb.cells = cells
    return nb


def build(only=None, out=ROOT/'_docs', screenshot_check=True):
    import nbformat
    from nbconvert import HTMLExporter
    nbs = sorted(p for p in (ROOT/'nbs').glob('*.ipynb'))
    if only: nbs = [p for p in nbs if p.stem in only]
    out.mkdir(exist_ok=True)
    exporter = HTMLExporter(template_name='lab'); exporter.exclude_input_prompt = True; exporter.exclude_output_prompt = True
    pages = []
    for p in nbs:
        nb = nbformat.read(p, as_version=4)
        body, _ = exporter.from_notebook_node(_visible(nb))
        (out/f'{p.stem}.html').write_text(body)
        title = next((c.source.splitlines()[0].lstrip('# ') for c in nb.cells if c.cell_type == 'markdown' and c.source.startswith('# ')), p.stem)
        pages.append((p.stem, title))
        print(f'  {p.name} -> {out/p.stem}.html')
    links = '\n'.join(f'<li><a href="{s}.html">{html.escape(t)}</a> <small>({s})</small></li>' for s, t in pages)
    (out/'contents.html').write_text(f'<!doctype html><html><head><meta charset="utf-8"><title>alchemist docs</title></head>'
                                     f'<body style="font-family:sans-serif;max-width:50em;margin:2em auto"><h1>alchemist</h1>'
                                     f'<p>Notebook documentation (built with nbconvert; Quarto builds the full nbdev site).</p><ol>{links}</ol></body></html>')
    if (out/'index.html').exists() is False and (out/'contents.html').exists(): shutil.copy(out/'contents.html', out/'index.html')
    print(f'docs written to {out}/ (open {out}/contents.html)')
    shot = screenshot_check and screenshot(out/'01_data.html' if (out/'01_data.html').exists() else out/'contents.html', out/'screenshot.png')
    if shot: print(f'checked in headless Chromium: {shot}')


def screenshot(page: Path, png: Path):
    "Open a page in headless Chromium (where installed) and save a screenshot: the site renders for a real browser."
    exe = shutil.which('chromium') or shutil.which('chromium-browser')
    if not exe: return None
    with tempfile.TemporaryDirectory() as prof:
        subprocess.run([exe, '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                        '--disable-background-networking', '--disable-component-update', '--disable-sync',
                        f'--user-data-dir={prof}', '--window-size=1200,1400', f'--screenshot={png}', page.resolve().as_uri()],
                       capture_output=True, timeout=120)
    return png if png.exists() and png.stat().st_size > 10_000 else None


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--only', default='', help='comma-separated notebook stems')
    ap.add_argument('--out', default=str(ROOT/'_docs'), help='output folder of the HTML pages')
    ap.add_argument('--no-screenshot', action='store_true', help='skip the headless-Chromium check')
    a = ap.parse_args()
    if shutil.which('quarto') and not a.only:
        sys.exit(subprocess.call([str(Path(sys.executable).parent/'nbdev_docs')], cwd=ROOT))
    print('Quarto not found: building HTML pages with nbconvert (nbdev_docs needs Quarto).')
    build(only=[s for s in a.only.split(',') if s] or None, out=Path(a.out), screenshot_check=not a.no_screenshot)
