"""``serve``: the recommendation service over HTTP, as BentoML serves it in every environment."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from recsys_assets.config import get_settings, variables
from recsys_assets.config.settings import BENTOML_HOME_VAR, PROJECT_ROOT
from recsys_assets.runs import SERVICE


def add_commands(commands: argparse._SubParsersAction) -> None:
    serve_parser = commands.add_parser("serve", help="serve the promoted model over HTTP")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=3001)
    serve_parser.set_defaults(handler=serve)


def serve(args: argparse.Namespace) -> int:
    """Replace this process with ``bentoml serve`` of the recommendation service, on the
    environment's BentoML store (the latest promoted model unless RECSYS_MODEL_TAG says)."""
    os.environ.setdefault(BENTOML_HOME_VAR, str(get_settings().bentoml_home))
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    if variables.MODEL_TAG.name not in os.environ:  # the champion, not BentoML's newest
        # BentoML reads its home when first imported: only now
        from recsys_assets.serving.registry import current_promoted

        champion = current_promoted()
        if champion is not None:
            os.environ[variables.MODEL_TAG.name] = champion["tag"]
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    bentoml = str(Path(sys.executable).parent / "bentoml")
    command = [bentoml, "serve", SERVICE, "--host", args.host, "--port", str(args.port)]
    os.chdir(PROJECT_ROOT)
    os.execvp(command[0], command)
    return 0  # not reached
