"""The README's interface tables are the generator's output, so they cannot drift."""

from pathlib import Path
import re
import subprocess
import sys

ROOT = Path(__file__).resolve().parents[2]


def _block(text: str, name: str) -> str:
    match = re.search(rf'<!-- {name}:begin -->\n(.*?)<!-- {name}:end -->', text, re.S)
    assert match, f'README has no {name} block'
    return match.group(1)


def test_interface_tables_match_the_typed_config():
    generated = subprocess.run([sys.executable, str(ROOT / 'tools' / 'gen_param_docs.py')],
                               capture_output=True, text=True, check=True).stdout
    readme = (ROOT / 'README.md').read_text()
    assert _block(readme, 'interface').strip() == generated.strip()


def test_readme_starts_with_the_two_commands():
    head = (ROOT / 'README.md').read_text()[:1500]
    assert 'make demo' in head and 'make test' in head


def _subpackages() -> list[str]:
    found = []
    for top in ('spann3r_model', 'spann3r_ros', 'training'):
        found += [str(p.parent.relative_to(ROOT))
                  for p in sorted((ROOT / top).glob('*/__init__.py'))]
    return found


def test_the_architecture_page_and_the_readme_name_every_folder_of_the_code():
    page = (ROOT / 'docs' / 'ARCHITECTURE.md').read_text()
    readme = (ROOT / 'README.md').read_text()
    layout = readme[readme.index('Layout (one page'):]
    for folder in _subpackages():
        assert f'`{folder}/`' in page, f'docs/ARCHITECTURE.md does not describe {folder}/'
        assert f'`{folder.split("/")[-1]}/`' in layout, f'the README layout misses {folder}/'


def test_every_module_the_architecture_page_names_exists():
    page = (ROOT / 'docs' / 'ARCHITECTURE.md').read_text()
    section = None
    missing = []
    for line in page.splitlines():
        row = re.match(r'\| `([\w/]+)/` \|(.*)', line)
        if row:
            section = row.group(1)
            missing += [f'{section}/{name}' for name in re.findall(r'`(\w+\.py)`', row.group(2))
                        if not (ROOT / section / name).is_file()]
    for path in re.findall(r'`((?:spann3r_model|spann3r_ros|training)/[\w/]+\.py)`', page):
        if not (ROOT / path).is_file():
            missing.append(path)
    assert section is not None and missing == [], missing
