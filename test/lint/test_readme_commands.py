"""Every command line in the README's bash blocks runs as written, or is listed as not run.

The command lines are read from README.md itself, so the README and this test cannot drift
apart: a line that no runner here runs and that ``NOT_RUN`` does not list fails the test, and
so does a runner that no README line uses any more.

How the lines run: in README order (later lines use what earlier ones wrote), each through
``bash -o pipefail -c`` in a temporary directory that holds links to the checkout's
``config/``, ``weights/`` and ``test/`` (what the commands read from the repository root), with
this environment's console scripts first on the PATH, as after ``source .venv/bin/activate``.
What a block says it needs is put in place first: the official checkpoint ``spann3r.pth`` is
stood in for by the tiny demo weights, written in the official container format where the
command expects the file. The README's command text is never changed; options appended to
shrink the work (30 small synthetic frames, a 64-pixel model input, two training steps on the
CPU with one thread and tiny images) are the ones each runner's ``extra`` returns. A line that
only asks a tool for ``--help`` runs as written and must print the usage.
"""

from __future__ import annotations

from dataclasses import dataclass
import json
import math
import os
from pathlib import Path
import re
import shlex
import shutil
import subprocess
import sysconfig
from typing import Callable, Optional, Union

import pytest

from spann3r_model.checkpoint import load_model
from spann3r_model.checkpoint_official import save_official
from spann3r_model.io.ply import read_ply
from spann3r_ros.pipeline.metric_frame import STATES
from training.config import load_config, TrainConfig

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / 'README.md'
#: What the README's commands read from the repository root.
LINKED = ('config', 'weights', 'test')
DEMO_WEIGHTS = ROOT / 'weights' / 'spann3r_tiny_demo.safetensors'
#: Seconds one command line may take (each takes a few seconds on tiny data).
TIMEOUT_S = 300
#: Fenced block languages whose lines are shell commands.
SHELL_LANGUAGES = ('bash', 'sh', 'shell')

#: Command lines that cannot run here, by the start of the line, with the reason.
NOT_RUN: tuple[tuple[str, str], ...] = (
    (r'ros2 ', 'needs a sourced ROS 2 and a camera driver, a running node or a bag recorder '
               '(test/ros runs the node, its services and the live evaluation)'),
    (r'torchrun ', 'multi-GPU training on the official datasets (test/training/test_ddp.py '
                   'runs the distributed path on the CPU)'),
    (r'(mkdir -p|cd) ~/ws\b', 'sets up a colcon workspace on a machine with ROS 2 installed'),
    (r'git clone ', 'clones this repository into a colcon workspace'),
    (r'rosdep ', 'installs system packages of a ROS 2 distribution'),
    (r'colcon ', 'builds the package in a sourced ROS 2 workspace'),
    (r'make (setup|lint|test|test-fast|demo)$', 'Makefile targets: `make test` runs this test '
                                                 'and test/demo runs the demo pipeline'),
    (r'python benchmarks/', 'benchmarks measure speed for minutes, not behaviour'),
    (r'(PROFILE=\$\(ros2 |export (FASTRTPS|FASTDDS|CYCLONEDDS|RMW)_\w*=)',
     'sets up the ROS 2 middleware of the shell that starts the camera driver and the node'),
    (r'sudo sysctl ', 'changes kernel network settings of the robot (needs root)'),
)


@dataclass(frozen=True)
class Command:
    """One command line of a README bash block.

    :param section: the ``## `` heading above the block.
    :param text: the line with its comment removed and continuation lines joined.
    """

    section: str
    text: str

    @property
    def segments(self) -> list[str]:
        """The pipeline / list members of the line (split at ``&&``, ``||``, ``|``, ``;``)."""
        return _segments(self.text)

    @property
    def argv(self) -> list[str]:
        """The words of the first command on the line."""
        return shlex.split(self.segments[0])


# -- reading the README -------------------------------------------------------------------------

def _strip_comments(text: str) -> tuple[str, bool]:
    """Remove the shell comments of ``text``; return the code and whether a quote is left open."""
    code, quote, comment = [], '', False
    for i, ch in enumerate(text):
        if comment:
            comment = ch != '\n'
            if comment:
                continue
        elif quote:
            quote = '' if ch == quote else quote
        elif ch in '\'"':
            quote = ch
        elif ch == '#' and (i == 0 or text[i - 1].isspace()):
            comment = True
            continue
        code.append(ch)
    return ''.join(code), bool(quote)


def _operators(text: str) -> list[tuple[int, int]]:
    """Return ``(start, end)`` of every shell list / pipe operator outside quotes."""
    found, quote, i = [], '', 0
    while i < len(text):
        ch = text[i]
        if quote:
            quote = '' if ch == quote else quote
        elif ch in '\'"':
            quote = ch
        else:
            op = next((o for o in ('&&', '||', '|', ';') if text.startswith(o, i)), None)
            if op:
                found.append((i, i + len(op)))
                i += len(op)
                continue
        i += 1
    return found


def _segments(text: str) -> list[str]:
    bounds = [0] + [b for op in _operators(text) for b in op] + [len(text)]
    return [text[a:b].strip() for a, b in zip(bounds[::2], bounds[1::2])]


def readme_commands(text: str) -> list[Command]:
    """Return the command lines of every shell block of a README, in order."""
    commands: list[Command] = []
    section, in_block, shell, pending = '', False, False, ''
    # A command goes on while a line ends in a backslash or leaves a quote open.
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith('```'):
            if in_block:
                assert not pending, f'{section}: a block ends inside a continued line'
            else:
                shell = stripped[3:].strip() in SHELL_LANGUAGES
            in_block = not in_block
            continue
        if not in_block:
            if raw.startswith('## '):
                section = raw[3:].strip()
            continue
        if not shell:
            continue
        pending += raw + '\n'
        code, open_quote = _strip_comments(pending)
        if open_quote or code.rstrip().endswith('\\'):
            continue
        code, pending = re.sub(r'\s*\\\n\s*', ' ', code.strip()), ''
        if code:
            commands.append(Command(section, code))
    return commands


# -- preparing what a block says it needs -------------------------------------------------------

def _value(argv: list[str], option: str) -> Optional[str]:
    """Return the last value given to ``option`` (argparse keeps the last one)."""
    found = None
    for i, word in enumerate(argv):
        if word == option and i + 1 < len(argv):
            found = argv[i + 1]
        elif word.startswith(option + '='):
            found = word.split('=', 1)[1]
    return found


def _path(ws: Path, word: str) -> Path:
    """Resolve a path word as bash does in ``ws`` with ``HOME=ws``."""
    word = re.sub(r'^~(?=/|$)', str(ws), word.replace('$HOME', str(ws)))
    return ws / word


def _out(ws: Path, argv: list[str]) -> Path:
    out = _value(argv, '--out')
    assert out, f'{shlex.join(argv)} names no --out'
    return _path(ws, out)


def _stand_in_checkpoint(path: Path) -> None:
    """Put the tiny demo weights where a command expects the official checkpoint."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == '.safetensors':
        shutil.copyfile(DEMO_WEIGHTS, path)
        return
    model, config = load_model(DEMO_WEIGHTS)
    save_official(model, path, config=config)


def _checkpoint_option(ws: Path, argv: list[str]) -> None:
    checkpoint = _value(argv, '--checkpoint')
    if checkpoint:
        _stand_in_checkpoint(_path(ws, checkpoint))


def _train_config(ws: Path, argv: list[str], extra: tuple[str, ...] = ()) -> TrainConfig:
    overrides = [w for w in argv[2:] if '=' in w and not w.startswith('-')]
    return load_config(_path(ws, argv[1]), [*overrides, *extra])


def _train_prepare(ws: Path, argv: list[str]) -> None:
    model = _train_config(ws, argv).model
    assert model.init in ('scratch', 'spann3r'), (
        f'{argv[1]}: model.init={model.init!r}; teach this test a stand-in for its weights')
    if model.init == 'spann3r':
        _stand_in_checkpoint(_path(ws, model.checkpoint))


def _train_extra(ws: Path, argv: list[str]) -> list[str]:
    cfg = _train_config(ws, argv)
    extra = ['run.device=cpu', 'run.num_threads=1', 'optim.precision=fp32',
             'optim.max_steps=2', 'optim.accum_steps=1', 'data.image_size=32',
             'data.batch_size=2', 'data.num_workers=0', 'log.progress=false']
    extra += [f'data.train.{i}.samples=4' for i in range(len(cfg.data.train))]
    extra += [f'data.val.{i}.samples=1' for i in range(len(cfg.data.val))]
    if cfg.model.init == 'spann3r':
        extra.append('model.preset=tiny')  # the architecture of the stand-in weights
    return extra


# -- checking what a command promises -----------------------------------------------------------

def _files(folder: Path, pattern: str) -> list[Path]:
    found = sorted(folder.glob(pattern))
    assert found, f'{folder} has no {pattern}'
    return found


def _check_help(ws: Path, command: Command, result: subprocess.CompletedProcess) -> None:
    assert result.stdout.startswith('usage: '), f'no usage text:\n{result.stdout[:500]}'


def _check_schema(ws: Path, command: Command, result: subprocess.CompletedProcess) -> None:
    preset = command.argv[1]
    assert f'"preset": "{preset}"' in result.stdout, f'no schema of {preset}:\n{result.stdout}'


def _check_parity(ws: Path, command: Command, result: subprocess.CompletedProcess) -> None:
    assert 'PASS' in result.stdout, f'the fixture does not pass:\n{result.stdout[-2000:]}'


def _check_synth(ws: Path, command: Command, result: subprocess.CompletedProcess) -> None:
    argv = command.argv
    moved = {}
    for segment in command.segments[1:]:
        words = shlex.split(segment)
        if words[0] == 'mv' and len(words) == 3:
            moved[_path(ws, words[1])] = _path(ws, words[2])
    written = [_path(ws, line) for line in result.stdout.split()]
    assert written, 'spann3r-synth named nothing it wrote'
    for path in written:
        assert moved.get(path, path).exists(), f'{moved.get(path, path)} does not exist'
    if '--scannet' in argv:
        scene = _out(ws, argv) / 'scans' / (_value(argv, '--name') or 'synthetic')
        _files(scene / 'sensor_data', 'frame-*.color.*')
        _files(scene / 'sensor_data', 'frame-*.pose.txt')


def _check_export(ws: Path, command: Command, result: subprocess.CompletedProcess) -> None:
    out = _out(ws, command.argv)
    for manifest in _files(out / 'scans', '*/manifest.json'):
        json.loads(manifest.read_text())
        _files(manifest.parent / 'sensor_data', 'frame-*.color.*')
        _files(manifest.parent / 'sensor_data', 'frame-*.depth.png')


def _check_eval(ws: Path, command: Command, result: subprocess.CompletedProcess) -> None:
    out = _out(ws, command.argv)
    report = json.loads((out / 'report.json').read_text())
    assert (out / 'report.md').is_file(), f'{out} has no report.md'
    if '--metric' in command.argv:
        # The node's own alignment may refuse a model this small: the Sim(3)-aligned scores
        # of the same run are always there, the metric ones (and their figure) once aligned.
        assert report['alignment']['final_state'] in STATES, report['alignment']
        scored = report['sim3']['metrics']
        if report['metric'] is not None:
            _files(out, 'metric_map.png')
            _files(out, '*.ply')
    else:
        scored = report['metrics']
        _files(out, '*.png')
        _files(out, '*.ply')
    for name in ('acc', 'comp', 'nc'):
        assert math.isfinite(scored[name]), f'report.json: {name} is not finite'


def _check_reconstruct(ws: Path, command: Command, result: subprocess.CompletedProcess) -> None:
    out = _out(ws, command.argv)
    assert len(read_ply(out / 'points.ply')['xyz']) > 0, 'points.ply holds no points'
    assert (out / 'trajectory.tum').read_text().strip(), 'trajectory.tum is empty'
    json.loads((out / 'transforms.json').read_text())


def _check_train(ws: Path, command: Command, result: subprocess.CompletedProcess) -> None:
    argv = command.argv
    out = _path(ws, _train_config(ws, argv, tuple(_train_extra(ws, argv))).run.output_dir)
    for name in ('config.yaml', 'checkpoint-last.pt', 'spann3r.pth'):
        assert (out / name).is_file(), f'{out} has no {name}'
    load_model(out / 'model.safetensors')


Prepare = Callable[[Path, list[str]], None]
Extra = Callable[[Path, list[str]], list[str]]
Check = Callable[[Path, Command, subprocess.CompletedProcess], None]


def _nothing(ws: Path, argv: list[str]) -> None:
    return None


def _no_options(ws: Path, argv: list[str]) -> list[str]:
    return []


def _options(*words: str) -> Extra:
    return lambda ws, argv: list(words)


def _with_checkpoint(*words: str) -> Extra:
    return lambda ws, argv: list(words) if _value(argv, '--checkpoint') else []


@dataclass(frozen=True)
class Runner:
    """How one kind of README command runs here.

    :param pattern: regular expression matched at the start of the line.
    :param check: asserts what the command promises, after it exited 0.
    :param prepare: puts in place what the block says the command needs.
    :param extra: options appended to the first command of the line to shrink its work.
    """

    pattern: str
    check: Check
    prepare: Prepare = _nothing
    extra: Extra = _no_options


RUNNERS: tuple[Runner, ...] = (
    Runner(r'spann3r-schema ', _check_schema),
    Runner(r'spann3r-parity ', _check_parity),
    Runner(r'spann3r-synth ', _check_synth,
           extra=_options('--width', '160', '--height', '120', '--frames', '30')),
    Runner(r'spann3r-export ', _check_export),
    Runner(r'spann3r-eval ', _check_eval, _checkpoint_option,
           _with_checkpoint('--image-size', '64')),
    Runner(r'spann3r-reconstruct ', _check_reconstruct, _checkpoint_option,
           _options('--image-size', '64')),
    Runner(r'spann3r-train ', _check_train, _train_prepare, _train_extra),
)


def classify(command: Command) -> Union[Runner, str, None]:
    """Return the runner of ``command``, the reason it is not run, or None when unknown."""
    runners = [r for r in RUNNERS if re.match(r.pattern, command.text)]
    assert len(runners) <= 1, f'{command.text!r} matches several runners'
    if runners:
        return runners[0]
    return next((why for pattern, why in NOT_RUN if re.match(pattern, command.text)), None)


def asks_for_help(command: Command) -> bool:
    """True for a line that only asks a tool for its usage (run as written, usage checked)."""
    return bool({'-h', '--help'} & set(command.argv))


def with_options(command: Command, extra: list[str]) -> str:
    """Return the line with ``extra`` appended to its first command."""
    if not extra:
        return command.text
    ops = _operators(command.text)
    end = ops[0][0] if ops else len(command.text)
    head, tail = command.text[:end].rstrip(), command.text[end:]
    return ' '.join([head, shlex.join(extra)]) + (' ' + tail if tail else '')


# -- the tests ----------------------------------------------------------------------------------

def test_every_readme_command_is_run_or_listed():
    commands = readme_commands(README.read_text())
    assert commands, 'README.md has no bash command lines'
    unknown = [f'{c.section}: {c.text}' for c in commands if classify(c) is None]
    assert not unknown, ('README command lines this test neither runs nor lists in NOT_RUN '
                         '(add a runner, or list them with the reason):\n' + '\n'.join(unknown))
    used = {classify(c) for c in commands}
    unused = [r.pattern for r in RUNNERS if r not in used]
    assert not unused, f'runners no README line uses any more: {unused}'


def test_reading_and_classifying_catch_a_new_command():
    text = ('## One\n```bash\nnew-tool --in a \\\n    --out b   # what it writes\n'
            '# a comment line\nspann3r-eval x --out "y z" && echo "#1"  # the tool\'s\n```\n'
            '## Two\n```python\nprint(1)\n```\n```bash\nros2 topic list\n'
            "export RMW_X='<a>\n  # <b/>'  # two lines\n```\n")
    commands = readme_commands(text)
    assert commands == [Command('One', 'new-tool --in a --out b'),
                        Command('One', 'spann3r-eval x --out "y z" && echo "#1"'),
                        Command('Two', 'ros2 topic list'),
                        Command('Two', "export RMW_X='<a>\n  # <b/>'")]
    assert classify(commands[0]) is None
    assert isinstance(classify(commands[1]), Runner)
    assert isinstance(classify(commands[2]), str) and isinstance(classify(commands[3]), str)
    assert commands[1].argv == ['spann3r-eval', 'x', '--out', 'y z']
    assert (with_options(commands[1], ['--image-size', '64'])
            == 'spann3r-eval x --out "y z" --image-size 64 && echo "#1"')


def _workspace(tmp_path: Path) -> Path:
    ws = tmp_path / 'checkout'
    ws.mkdir()
    for name in LINKED:
        (ws / name).symlink_to(ROOT / name, target_is_directory=True)
    return ws


def _environment(ws: Path) -> dict[str, str]:
    scripts = Path(sysconfig.get_path('scripts'))
    assert (scripts / 'spann3r-train').is_file(), (
        f'{scripts} has no console scripts: run `make setup` (editable install)')
    env = dict(os.environ)
    env['PATH'] = os.pathsep.join([str(scripts), env.get('PATH', '')])
    # The scripts import this checkout, wherever the environment's editable install points.
    env['PYTHONPATH'] = os.pathsep.join(p for p in (str(ROOT), env.get('PYTHONPATH')) if p)
    env['HOME'] = str(ws)
    env['PYTHONDONTWRITEBYTECODE'] = '1'
    return env


def _tail(text: str, lines: int = 30) -> str:
    return '\n'.join(text.splitlines()[-lines:])


@pytest.mark.slow
def test_readme_commands_run_as_written(tmp_path):
    ws = _workspace(tmp_path)
    env = _environment(ws)
    ran = []
    for command in readme_commands(README.read_text()):
        runner = classify(command)
        if not isinstance(runner, Runner):
            continue
        if asks_for_help(command):
            line, check = command.text, _check_help
        else:
            runner.prepare(ws, command.argv)
            line, check = with_options(command, runner.extra(ws, command.argv)), runner.check
        result = subprocess.run(['bash', '-o', 'pipefail', '-c', line], cwd=ws, env=env,
                                capture_output=True, text=True, timeout=TIMEOUT_S)
        where = f'{command.section}: `{command.text}` (run as `{line}`)'
        assert result.returncode == 0, (f'{where} exited {result.returncode}:\n'
                                        f'{_tail(result.stdout)}\n{_tail(result.stderr)}')
        try:
            check(ws, command, result)
        except (AssertionError, OSError, ValueError, KeyError) as err:
            raise AssertionError(f'{where} exited 0 but: {err}') from err
        ran.append(command.text)
    assert len(ran) >= len(RUNNERS), ran
