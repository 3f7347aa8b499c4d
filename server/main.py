"""``python run_server.py``: parse options, build the engine and app, serve until SIGINT/SIGTERM.

Startup errors (config, engine, avatar, port) print one line on stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from avatar.engine import Engine
from avatar.engines import ENGINES, create_engine
from avatar.errors import AvatarError, ConfigError
from server.app import App
from server.config import DEFAULT_CONFIG, Config, load_config
from server.logs import setup_logging

log = logging.getLogger("server")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python run_server.py",
        description="Real-time talking-portrait server (HTTP + WebSocket signalling + WebRTC).",
    )
    parser.add_argument("--host", help="interface to listen on (server.host)")
    parser.add_argument("--port", type=int, help="port to listen on, 0 = any free port (server.port)")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config file")
    parser.add_argument("--engine", help=f"animation engine: {' | '.join(ENGINES)} (engine.name)")
    parser.add_argument("--avatar", metavar="PATH", help="default portrait image (avatar.default)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override any config value (YAML syntax), e.g. --set engine.fps=30; repeatable",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser


def make_engine(config: Config) -> Engine:
    """Instantiate the configured engine; any failure becomes a one-line ``ConfigError``."""
    e = config.engine
    try:
        return create_engine(e.name, fps=e.fps, size=e.size, seed=e.seed, **e.options)
    except AvatarError:
        raise
    except Exception as exc:
        log.debug("engine start failed", exc_info=True)
        raise ConfigError(f"engine {e.name!r} failed to start: {exc.__class__.__name__}: {exc}") from None


async def wait_for_signal() -> None:
    """Return at the first SIGINT/SIGTERM; a second one then interrupts the graceful shutdown."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)


async def serve_until_signal(config: Config, engine: Engine | None = None) -> int:
    """Run the server until SIGINT/SIGTERM, then shut down gracefully. Returns the exit code."""
    owns_engine = engine is None
    engine = engine or await asyncio.to_thread(make_engine, config)
    app = App(config, engine)
    try:
        await app.start()
        print(f"talking-portrait server on http://{config.server.host}:{app.port}/ "
              f"(engine {engine.name}, Ctrl-C to stop)", file=sys.stderr, flush=True)
        await wait_for_signal()
        log.info("shutting down")
        await app.stop()
    finally:
        if owns_engine:
            await asyncio.to_thread(engine.close)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)  # text until the config (server.log_format) is read
    avatar = str(Path(args.avatar).expanduser().resolve()) if args.avatar else None  # relative to the cwd
    flags = {"server.host": args.host, "server.port": args.port, "engine.name": args.engine,
             "avatar.default": avatar}
    try:
        config = load_config(args.config, args.set, flags)
        if config.server.log_format != "text":
            setup_logging(args.log_level, config.server.log_format)
        return asyncio.run(serve_until_signal(config))
    except AvatarError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # typically the port is taken or the host is not ours
        print(f"error: cannot start the server: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
