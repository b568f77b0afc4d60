"""``riffmask app``: the browser studio (needs the ``app`` extra: ``pip install 'riffmask[app]'``)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``riffmask app`` to the ``riffmask`` parser."""
    from riffmask.cli.generate import add_generate_options

    app = subparsers.add_parser(
        "app",
        help="open the browser studio: listen, shape the mask, generate, keep the takes",
        description="Serve the riffmask studio (Gradio) on http://HOST:PORT. Every option of riffmask generate "
        "sets the studio's starting values; takes are written under --out in generate's layout.",
    )
    add_generate_options(app)
    app.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    app.add_argument("--port", type=int, help="port (default: 7860, or the next free one)")
    app.add_argument("--share", action="store_true", help="also publish a temporary public gradio.live link")
    app.add_argument("--auth", metavar="USER:PASS|FILE", help="ask for a login: user:password or a file of such lines")
    app.add_argument("--max-upload-mb", type=float, default=100.0, help="largest upload accepted (default: 100)")
    app.set_defaults(func=app_command)


def app_command(args: argparse.Namespace) -> int:
    import logging

    from riffmask.common.config import config_from_args
    from riffmask.common.errors import RiffmaskError
    from riffmask.infer.config import GenerateConfig

    try:
        from riffmask.app.ui import build_app, launch, read_auth
    except ImportError as exc:
        raise RiffmaskError(f"the studio needs Gradio ({exc}): pip install 'riffmask[app]'") from None
    from riffmask.app.studio import Studio

    # Gradio's HTTP client logs every request it makes to its own server at INFO.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    studio = Studio(config_from_args(GenerateConfig, args, args.overrides))
    auth = read_auth(args.auth)
    model = studio.defaults["model"]
    print(f"loading {model} ...", flush=True)
    try:
        studio.load({})
        status = f"Model: **{model}**"
    except RiffmaskError as exc:
        status = f"Model **{model}** is not available: {exc}. Pick another one under Model."
        print(f"warning: {exc}", flush=True)
    launch(build_app(studio, status), studio, args.host, args.port, args.share, auth, args.max_upload_mb)
    return 0
