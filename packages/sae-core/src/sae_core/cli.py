"""The ``sae`` command line.

The Typer app is assembled from plugins: built-in commands come from
:mod:`sae_core.commands.plugin` through the same ``register_commands`` hook third parties use.
Command modules import nothing heavy at module level, so ``sae --help`` stays fast.
"""

from __future__ import annotations

import sys

import typer

from sae_core.errors import SAEError, os_error_message

HELP = (
    "Train sparse autoencoders on the activations of any network (ViTs, CLIP, language models) "
    "and explore their features."
)


def build_app() -> typer.Typer:
    """The full CLI: core commands plus every plugin's commands."""
    from sae_core.plugins import get_manager  # lazy: loads pluggy

    app = typer.Typer(
        name="sae", help=HELP, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False
    )
    get_manager().add_commands(app)
    return app


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: user errors become one line on stderr and exit status 1.

    A full disk or an unwritable place (``OSError`` ENOSPC/EROFS/EACCES) is a user-fixable
    condition too and gets the same treatment; any other exception is a bug and keeps its
    traceback. A run stopped by SIGINT/SIGTERM exits with 128 + the signal number.
    """
    try:
        build_app()(args=argv, prog_name="sae")
    except SAEError as e:
        print(f"error: {_one_line(str(e))}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None
    except OSError as e:
        message = os_error_message(e)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None


def _one_line(message: str) -> str:
    """Error messages are one line: embedded newlines (from library errors) become spaces."""
    return " ".join(message.split())
