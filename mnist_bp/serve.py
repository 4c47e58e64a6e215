"""`mnist-bp serve`: draw a digit in the browser and watch the networks answer; a small
prediction API for any program.

    mnist-bp serve runs/default/checkpoints/best.npz runs/robust/checkpoints/best.npz
    curl --data-binary @digit.png 'http://127.0.0.1:8000/api/predict?invert=no'
    curl --data-binary @digit.png http://127.0.0.1:8000/api/explain

Built on Starlette (routing, requests, responses) served by uvicorn: the `serve` extra,
imported only here. Every checkpoint is loaded once (`model.load`); an image is read and
preprocessed once per request (imageprep.py, as `predict` does) and then shown to every
network.

Limits, so that no request and no client can take the server down (docs/reliability.md):
- a body over `MAX_BODY` bytes gets 413; an image over `MAX_UPLOAD_PIXELS` pixels, in a
  format other than imageprep.FORMATS, corrupt or blank, gets 400 with a JSON error;
- request bodies share a budget of `BODY_BUDGET` bytes, taken as the bytes arrive: a client
  sending slowly holds only what it sent, and large uploads at once wait for room (503 after
  `BUDGET_WAIT` s); `DECODES` images are decoded at once, explanations queue on a thread of
  their own (at most `EXPLAINS_WAITING`), so predictions never wait behind them;
- a client that hangs up mid-upload is one line in the log;
- a client must send its whole request within `REQUEST_TIMEOUT` seconds of connecting (or of
  its previous answer), else the connection is closed: idle and trickling connections cannot
  pile up; up to `MAX_CONNECTIONS` are held at once;
- listening on loopback, only requests whose Host header names the loopback (or a name given
  with --allow-host) are answered; others get 403 (DNS rebinding).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np

from mnist_bp import limits
from mnist_bp.errors import UserError
from mnist_bp.imageprep import ImageError
from mnist_bp.model import NO_ANSWER, load
from mnist_bp.prediction import predictions

# The server's limits (limits.py says why each value)
MAX_BODY = limits.UPLOAD_BYTES  # bytes of one uploaded image
MAX_UPLOAD_PIXELS = limits.UPLOAD_PIXELS  # pixels of one decoded upload
BODY_BUDGET = limits.UPLOAD_BUDGET  # bytes of request bodies held at once, over all requests
SMALL_BODY = limits.UPLOAD_FREE_BYTES  # the first bytes of each body, outside that budget
BUDGET_WAIT = limits.UPLOAD_WAIT  # seconds an upload may wait for room in that budget
EXPLAINS_WAITING = limits.EXPLAINS_WAITING  # explanations queued or running at once
DECODES = limits.SERVE_DECODERS  # images decoded and preprocessed at once (one per core)
REQUEST_TIMEOUT = limits.REQUEST_SECONDS  # seconds for a client to send a whole request
KEEP_ALIVE = limits.KEEP_ALIVE_SECONDS  # seconds an idle kept-alive connection stays open
MAX_CONNECTIONS = limits.CONNECTIONS  # connections held at once; more get 503
LOOPBACK = ("127.0.0.1", "localhost", "::1")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
INVERT_CHOICES = ("auto", "yes", "no")
INSTALL_HINT = "install the serve extra: pip install 'mnist-bp[serve]' (starlette, uvicorn)"


def model_names(paths: list[Path]) -> list[str]:
    """A unique name per checkpoint: its run directory's name (RUN/checkpoints/best.npz), else
    the file's stem; repeats get -2, -3..."""
    from mnist_bp.rundir import run_name

    names = []
    for path in paths:
        base = run_name(path)
        name, k = base, 1
        while name in names:
            k += 1
            name = f"{base}-{k}"
        names.append(name)
    return names


class BodyTooLarge(Exception):
    pass


class ServerBusy(Exception):
    pass


class ByteBudget:
    """Bytes of request bodies held in memory at once, across all requests: taken as they
    arrive, given back when the answer is sent. Waiting longer than BUDGET_WAIT for room is
    ServerBusy (503), so uploads can never wait on each other for ever."""

    def __init__(self, total: int):
        import asyncio

        self.free = total
        self.changed = asyncio.Condition()

    async def take(self, n: int) -> None:
        import asyncio

        async with self.changed:
            try:
                await asyncio.wait_for(self.changed.wait_for(lambda: self.free >= n),
                                       BUDGET_WAIT)
            except TimeoutError:
                raise ServerBusy from None
            self.free -= n

    async def give(self, n: int) -> None:
        if n:
            async with self.changed:
                self.free += n
                self.changed.notify_all()


def log_line(message: str) -> None:
    """One line in the server's log (stderr)."""
    import sys

    print(f"mnist-bp serve: {message}", file=sys.stderr, flush=True)


def explain_bytes(models: dict, body: bytes, invert: str, decoders=None) -> dict:
    """`/api/explain`'s answer for one image: each model's attribution for its own predicted
    digit, by its default method (explain.py), or ImageError."""
    from mnist_bp.explain import explain

    prepared = next(iter(models.values())).prepare(body, invert, False, decoders,
                                                   MAX_UPLOAD_PIXELS)[0]
    out = []
    for name, model in models.items():
        if not model.answerable(model.probabilities(prepared.image[None])).all():
            raise ImageError(f"{name}: {NO_ANSWER}")
        e = explain(model, prepared.image)
        out.append({"model": name, "digit": int(e.digits[0]), "target": int(e.targets[0]),
                    "method": e.method, "probability": float(e.probabilities[0]),
                    "attribution": [[float(f"{v:.4g}") for v in row]
                                    for row in e.attributions[0]]})
    return {"explanations": out}


def predict_bytes(models: dict, body: bytes, invert: str, decoders=None) -> dict:
    """The API's answer for one image: each model's `Prediction` (prediction.py, as
    `predict` and the Python API make it) with its name and the 28x28 input; or ImageError
    (whatever went wrong with it). The image is decoded once (in a worker process unless it
    is a small PNG, GIF or BMP: decoding.py)."""
    first = next(iter(models.values()))
    inputs = first.prepare(body, invert, False, decoders, MAX_UPLOAD_PIXELS)
    out = []
    for name, model in models.items():
        probs = model.probabilities(np.stack([p.image for p in inputs]))
        [result] = predictions(probs, [inputs], None, False, model.answerable(probs),
                               f"{name}: {NO_ANSWER}")
        if not result.ok:
            raise ImageError(result.error)
        out.append({"model": name, **result, "input": np.round(result.input, 3).tolist()})
    return {"predictions": out}


def host_of(header: str) -> str:
    """The host part of a Host header: `[::1]:8000` -> `[::1]`, `a.b:80` -> `a.b`; a header
    that is not `host` or `host:port` comes back whole (and matches no allowed name)."""
    header = header.strip().lower().removesuffix(".")  # "localhost." is localhost
    if header.startswith("["):
        end = header.find("]") + 1
        host, rest = (header[:end], header[end:]) if end else (header, "")
    else:
        host, sep, port = header.partition(":")
        rest = sep + port
    if rest and not (rest[0] == ":" and rest[1:].isascii() and rest[1:].isdigit()):
        return header
    return host


def allowed_hosts(listen: str, extra: tuple[str, ...] = ()) -> set[str] | None:
    """Host header values the server answers, or None for any. On loopback: the loopback's
    names; on another address: that address and `extra` when given, else any (as Jupyter
    does when told to listen beyond the loopback)."""
    extra = {host_of(h) for h in extra}
    if listen in LOOPBACK:
        return {*LOOPBACK_HOSTS, *extra}
    if not extra:
        return None
    listen_host = f"[{listen}]" if ":" in listen else listen
    return {listen_host, *LOOPBACK_HOSTS, *extra}


class HostCheck:
    """ASGI middleware: 403 with a JSON error for a Host header not in `allowed`."""

    def __init__(self, app, allowed: set[str] | None):
        self.app, self.allowed = app, allowed

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.allowed is not None:
            headers = dict(scope.get("headers") or [])
            host = host_of(headers.get(b"host", b"").decode("latin-1"))
            if host not in self.allowed:
                body = json.dumps({"error": f"Host {host!r} is not served here; use "
                                            f"http://127.0.0.1 or start with --allow-host"})
                await send({"type": "http.response.start", "status": 403,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body.encode()})
                return
        await self.app(scope, receive, send)


def create_app(checkpoints: list[Path], allowed: set[str] | None = None):
    """The Starlette application serving `checkpoints` (loaded now: errors surface here),
    answering only Host headers in `allowed` (None: any)."""
    import asyncio
    import contextlib
    from concurrent.futures import ThreadPoolExecutor

    try:
        from starlette.applications import Starlette
        from starlette.requests import ClientDisconnect
        from starlette.responses import HTMLResponse, JSONResponse
        from starlette.routing import Route
    except ImportError:
        raise UserError(f"serve needs starlette and uvicorn; {INSTALL_HINT}") from None
    paths = [Path(p) for p in checkpoints]
    loaded = {name: load(path) for name, path in zip(model_names(paths), paths, strict=True)}
    # the file's name only: the API does not reveal where checkpoints live
    models = [{"name": name, "checkpoint": p.path.name, "dataset": p.cfg.data.dataset,
               "hidden": list(p.cfg.model.hidden),
               "invert_augmentation": p.cfg.augment.invert.p, "colors_augmentation":
               p.cfg.augment.colors.p} for name, p in loaded.items()]
    page = resources.files("mnist_bp").joinpath("web", "index.html").read_text()

    def error(message: str, status: int):
        return JSONResponse({"error": message}, status_code=status)

    async def index(request):
        return HTMLResponse(page)

    async def healthz(request):
        return JSONResponse({"status": "ok"})

    async def list_models(request):
        return JSONResponse({"models": models})

    async def api_predict(request):
        return await answer_image(request, predict_bytes)

    async def api_explain(request):
        return await answer_image(request, explain_bytes, explainer)

    async def answer_image(request, answer_of, pool=None):
        invert = request.query_params.get("invert", "auto")
        if invert not in INVERT_CHOICES:
            return error(f"invert must be one of {', '.join(INVERT_CHOICES)}, not {invert!r}",
                         400)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY:
            return error(f"body of {int(declared):,} bytes is over the {MAX_BODY:,} allowed",
                         413)
        held = [0]  # bytes of the body budget this request holds
        try:
            try:
                body = await read_limited(request, held)
            except BodyTooLarge:
                return error(f"body is over the {MAX_BODY:,} bytes allowed", 413)
            except ServerBusy:
                return error("the server is busy receiving other uploads; try again", 503)
            except ClientDisconnect:
                log_line(f"a client hung up during its upload to {request.url.path}")
                return error("the client hung up", 400)
            if not body:
                return error("empty body: send the image's bytes (curl --data-binary "
                             "@digit.png)", 400)
            if pool is explainer and explains.locked():
                return error("too many explanations are waiting; try again", 503)
            async with (explains if pool is explainer else contextlib.nullcontext()):
                try:
                    if pool is None:  # a small PNG/GIF/BMP never queues behind uploads that
                        # wait for a decoding worker (images made to be slow among them)
                        pool = light if linear_and_small(body) else decoder
                    answer = await asyncio.get_running_loop().run_in_executor(
                        pool, answer_of, loaded, body, invert, decoders)
                except ImageError as exc:
                    return error(str(exc), 400)
        finally:
            await budget.give(held[0])
        return JSONResponse(answer)

    async def read_limited(request, held: list) -> bytes:
        """The body, its bytes taken from the shared budget as they arrive: a client that
        sends slowly holds only what it sent, never a slot that a normal request needs."""
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY:
                raise BodyTooLarge
            # the first SMALL_BODY bytes of every request are free (connections are bounded:
            # CONNECTIONS x SMALL_BODY), so a drawn digit never waits for room that large
            # stalled uploads hold
            over = max(0, size - SMALL_BODY) - held[0]
            if over > 0:
                await budget.take(over)
                held[0] += over
            chunks.append(chunk)
        return b"".join(chunks)

    budget = ByteBudget(BODY_BUDGET)
    explains = asyncio.Semaphore(EXPLAINS_WAITING)
    # Images are decoded on DECODES threads of their own, not on the shared thread pool: each
    # thread keeps a malloc arena of its largest decode, so 40 pool threads would hold 40.
    decoder = ThreadPoolExecutor(DECODES, thread_name_prefix="mnist-bp-decode")
    light = ThreadPoolExecutor(DECODES, thread_name_prefix="mnist-bp-light")
    # Explanations (a path of 64 points through every network) queue on a thread of their
    # own: however many a page or a client asks for, predictions never wait behind them.
    explainer = ThreadPoolExecutor(1, thread_name_prefix="mnist-bp-explain")
    # ...and each image is decoded in a worker process, killed when it takes longer than
    # SERVE_DECODE_SECONDS (an image made to be slow): one per decode thread and the explainer
    from mnist_bp.decoding import Decoders, linear_and_small

    decoders = Decoders(DECODES + 1, limits.SERVE_DECODE_SECONDS)
    routes = [Route("/", index), Route("/healthz", healthz), Route("/api/models", list_models),
              Route("/api/predict", api_predict, methods=["POST"]),
              Route("/api/explain", api_explain, methods=["POST"])]
    async def http_error(request, exc):  # 404, 405...: JSON like every other answer
        return error(exc.detail, exc.status_code)

    from starlette.exceptions import HTTPException

    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    app.state.models = loaded
    app.state.decoders = decoders
    return HostCheck(app, allowed)


def guarded(protocol_class):
    """uvicorn's HTTP protocol with a deadline on receiving each request: a connection must
    deliver its whole request (headers and body) within REQUEST_TIMEOUT seconds of opening, or
    of its previous answer, else it is closed. uvicorn alone waits forever for the first
    bytes of a request, so a few hundred idle sockets would hold every slot."""

    class Guarded(protocol_class):
        _deadline = None

        def connection_made(self, transport):
            super().connection_made(transport)
            self._arm()

        def _arm(self):
            self._disarm()
            self._deadline = self.loop.call_later(REQUEST_TIMEOUT, self._too_slow)

        def _disarm(self):
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def handle_events(self):
            super().handle_events()
            cycle = self.cycle
            if cycle is not None and not cycle.more_body and not cycle.response_complete:
                self._disarm()  # the whole request is in: the app has it now

        def on_response_complete(self):
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc):
            self._disarm()
            super().connection_lost(exc)

        def _too_slow(self):
            self._deadline = None
            if not self.transport.is_closing():
                self.transport.close()

    return Guarded


def serve(checkpoints: list[Path], host: str, port: int, open_browser: bool, echo,
          allow_hosts: tuple[str, ...] = ()) -> None:
    """Load the checkpoints, bind, print `serving on http://HOST:PORT`, serve until Ctrl-C or
    SIGTERM (uvicorn stops cleanly on both)."""
    import contextlib
    import signal
    import socket

    app = create_app(checkpoints, allowed_hosts(host, allow_hosts))
    try:
        import uvicorn
    except ImportError:
        raise UserError(f"serve needs uvicorn; {INSTALL_HINT}") from None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit this: a response's headers and body, written separately,
    # go out at once instead of waiting out the client's delayed ACK.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another "
                        "--port (0 picks a free one)") from None
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    url = f"http://{shown}:{bound}"

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again
            # to die by it; a user's Ctrl-C is a normal way to stop: exit 0 instead.
            handlers = {s: signal.signal(s, self.handle_exit)
                        for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for s, handler in handlers.items():
                    signal.signal(s, handler)

        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)
            if self.started:
                echo(f"serving on {url}")
                if open_browser:
                    import webbrowser

                    webbrowser.open(url)

    from uvicorn.protocols.http.h11_impl import H11Protocol

    config = uvicorn.Config(app, log_level="warning", access_log=False, http=guarded(H11Protocol),
                            timeout_keep_alive=KEEP_ALIVE, limit_concurrency=MAX_CONNECTIONS,
                            backlog=2048, h11_max_incomplete_event_size=16 * 1024)
    Server(config).run(sockets=[sock])
    echo("stopped")
