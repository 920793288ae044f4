"""What the command-line tools share: bad input to exit code 2, and the engine options."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Optional, Sequence

#: Exit code for bad input (a bad argument, file or bag); argparse uses it too.
EXIT_BAD_INPUT = 2
#: Exit code for a run that started and then failed.
EXIT_FAILED = 1


def run_tool(parser: argparse.ArgumentParser, body: Callable[[argparse.Namespace], int],
             argv: Optional[Sequence[str]] = None, *,
             failures: tuple[type[BaseException], ...] = (),
             log_format: str = '%(levelname)s %(message)s') -> int:
    """Parse ``argv``, set up logging and run ``body``; turn its errors into exit codes.

    :param body: the tool's work; returns the exit code (0 on success).
    :param failures: exception types that mean "the run failed" (exit code 1, ``failed:``);
        a :class:`ValueError` always means bad input (exit code 2, ``error:``).
    :return: the exit code. The one-line message goes to stderr, prefixed with the program
        name as argparse writes its own errors.
    """
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=log_format)
    try:
        return body(args)
    except ValueError as exc:
        print(f'{parser.prog}: error: {exc}', file=sys.stderr)  # noqa: T201
        return EXIT_BAD_INPUT
    except failures as exc:
        print(f'{parser.prog}: failed: {exc}', file=sys.stderr)  # noqa: T201
        return EXIT_FAILED


def add_frame_options(parser: argparse.ArgumentParser, every_help: str) -> None:
    """Add ``--every K`` and ``--max-frames N`` (checked by :func:`check_frame_options`)."""
    parser.add_argument('--every', type=int, default=1, help=every_help)
    parser.add_argument('--max-frames', type=int, default=0,
                        help='use at most this many frames (0: all)')


def frame_selection(args: argparse.Namespace, frame_ids: Sequence[int]) -> list[int]:
    """Return every ``--every``-th of ``frame_ids``, at most ``--max-frames`` of them.

    :raises ValueError: for ``--every`` below 1 or a negative ``--max-frames``.
    """
    check_frame_options(args)
    chosen = list(frame_ids)[::args.every]
    return chosen[:args.max_frames] if args.max_frames else chosen


def check_frame_options(args: argparse.Namespace) -> None:
    """Check ``--every`` and ``--max-frames``.

    :raises ValueError: for ``--every`` below 1 or a negative ``--max-frames``.
    """
    if args.every < 1 or args.max_frames < 0:
        raise ValueError('--every must be >= 1 and --max-frames >= 0')


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """Add the model and engine options of the tools that run a checkpoint."""
    parser.add_argument('--preset',
                        help='architecture preset for checkpoints without a config')
    parser.add_argument('--device', default='auto', help='auto, cpu, cuda or cuda:N')
    parser.add_argument('--image-size', type=int, default=224,
                        help='model resolution (224 for the released weights)')
    parser.add_argument('--precision', default='fp32', help='fp32, fp16, bf16 or int8')
    parser.add_argument('--no-pose', action='store_true',
                        help='do not estimate camera poses (no ATE; faster)')


def session_from_args(args: argparse.Namespace, checkpoint: str):
    """Apply the process settings and open a streaming session as the engine options say.

    :raises ValueError: for a bad checkpoint or engine option.
    """
    from spann3r_model.backends.process import apply_process_settings
    from spann3r_model.config import EngineConfig
    from spann3r_model.session import StreamingSession

    engine = EngineConfig(device=args.device, precision=args.precision,
                          image_size=args.image_size)
    apply_process_settings(engine)
    return StreamingSession.from_checkpoint(str(checkpoint), engine_config=engine,
                                            preset=args.preset, estimate_pose=not args.no_pose)
