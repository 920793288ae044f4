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
