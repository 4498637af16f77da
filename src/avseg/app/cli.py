"""`avseg app (--checkpoint CKPT | CONFIG [key=value ...] --random-init) [--host H] [--port P] ...`.

Starts the web page of `avseg.app.page` and serves it until Ctrl-C or SIGTERM (both remove its
temp folder of results). It binds 127.0.0.1 unless --host says otherwise; uploads over
--max-upload-mb are refused; nothing is sent anywhere.
"""

from __future__ import annotations

import argparse
import atexit
import errno
import signal
import sys
import warnings
from pathlib import Path

from avseg.errors import UserError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    from avseg.inference.cli import add_model_arguments

    add_model_arguments(parser, "the page's results are MEANINGLESS (a banner says so)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the network)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--max-upload-mb", type=float, default=200.0,
                        help="largest video the page accepts, in MB (default 200)")
    parser.add_argument("--examples", type=Path, default=None, metavar="DIR",
                        help="a folder of example videos to offer; default: three synthetic clips generated "
                             "on first start into ~/.cache/avseg/app-examples")


def run_cli(args: argparse.Namespace) -> int:
    from avseg.data.synth.video import ensure_examples, list_examples
    from avseg.app.results import max_upload_bytes
    from avseg.cli_common import config_and_overrides
    from avseg.inference.cli import build_predictor

    config, overrides = config_and_overrides(args)
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: must lie in [0, 65535] (0: the first free one from 7860)")
    max_upload_bytes(args.max_upload_mb)
    examples = list_examples(args.examples) if args.examples is not None else None
    predictor = build_predictor(args, config, overrides)  # prints the random-init warning itself
    if examples is None:
        print("avseg app: preparing the synthetic example videos ...", file=sys.stderr, flush=True)
        examples = ensure_examples(predictor.class_names)
    if args.host not in LOCAL_HOSTS:
        print(f"avseg app: warning: binding {args.host}: anyone who can reach this machine can use the page "
              "and run the model (there is no login)", file=sys.stderr, flush=True)

    from avseg.app.page import build_app, launch_app

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        demo = build_app(predictor, examples, args.max_upload_mb)
    atexit.register(demo.avseg_settings["store"].cleanup)
    # SIGTERM (kill, systemd, docker stop) ends the app as Ctrl-C does: the server closes, then
    # the atexit cleanup removes the folder of results
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        launch_app(demo, args.host, args.port or None, block=True)
    except OSError as err:
        if err.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL) or "port" in str(err).lower():
            raise UserError(f"cannot serve on {args.host}:{args.port} ({err}); pick another --port") from None
        raise
    return 0
