"""`mnist-bp serve`: draw a digit in the browser and watch the networks answer; a small
prediction API for any program.

    mnist-bp serve runs/default/checkpoints/best.npz runs/robust/checkpoints/best.npz
    curl --data-binary @digit.png 'http://127.0.0.1:8000/api/predict?invert=no'

Built on Starlette (routing, requests, responses) served by uvicorn: the `serve` extra,
imported only here. Every checkpoint is loaded once (`model.load`); an image is read and
preprocessed once per request (imageprep.py, as `predict` does) and then shown to every
network. Limits: bodies over `MAX_BODY` bytes get 413, images over `MAX_UPLOAD_PIXELS`
pixels 400; any bad request gets a JSON error and the server goes on.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from mnist_bp.errors import UserError
from mnist_bp.imageprep import ImageError, prepare, read_image
from mnist_bp.model import digit_fields, load

MAX_BODY = 4 * 1024 * 1024  # bytes of one uploaded image
MAX_UPLOAD_PIXELS = 16_000_000  # pixels of one decoded upload
INVERT_CHOICES = ("auto", "yes", "no")
INSTALL_HINT = "install the serve extra: pip install 'mnist-bp[serve]' (starlette, uvicorn)"


def model_names(paths: list[Path]) -> list[str]:
    """A unique name per checkpoint: its run directory's name (RUN/checkpoints/best.npz), else
    the file's stem; repeats get -2, -3..."""
    names = []
    for path in paths:
        path = Path(path).resolve()
        base = path.parent.parent.name if path.parent.name == "checkpoints" else path.stem
        name, k = base, 1
        while name in names:
            k += 1
            name = f"{base}-{k}"
        names.append(name)
    return names


class BodyTooLarge(Exception):
    pass


def predict_bytes(models: dict, body: bytes, invert: str) -> dict:
    """The API's answer for one image, or ImageError."""
    prepared = prepare(read_image(body, max_pixels=MAX_UPLOAD_PIXELS), invert)
    x = prepared.image[None]
    out = []
    seen = np.round(prepared.image, 3).tolist()
    for name, model in models.items():
        out.append({"model": name, **digit_fields(model.probabilities(x)[0]),
                    "inverted": prepared.inverted, "input": seen})
    return {"predictions": out}


def create_app(checkpoints: list[Path]):
    """The Starlette application serving `checkpoints` (loaded now: errors surface here)."""
    try:
        from starlette.applications import Starlette
        from starlette.concurrency import run_in_threadpool
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
        invert = request.query_params.get("invert", "auto")
        if invert not in INVERT_CHOICES:
            return error(f"invert must be one of {', '.join(INVERT_CHOICES)}, not {invert!r}",
                         400)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY:
            return error(f"body of {int(declared):,} bytes is over the {MAX_BODY:,} allowed",
                         413)
        try:
            body = await read_limited(request)
        except BodyTooLarge:
            return error(f"body is over the {MAX_BODY:,} bytes allowed", 413)
        if not body:
            return error("empty body: send the image's bytes (curl --data-binary @digit.png)",
                         400)
        try:
            answer = await run_in_threadpool(predict_bytes, loaded, body, invert)
        except ImageError as exc:
            return error(str(exc), 400)
        return JSONResponse(answer)

    async def read_limited(request) -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY:
                raise BodyTooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    routes = [Route("/", index), Route("/healthz", healthz), Route("/api/models", list_models),
              Route("/api/predict", api_predict, methods=["POST"])]
    app = Starlette(routes=routes)
    app.state.models = loaded
    return app


def serve(checkpoints: list[Path], host: str, port: int, open_browser: bool, echo) -> None:
    """Load the checkpoints, bind, print `serving on http://HOST:PORT`, serve until Ctrl-C or
    SIGTERM (uvicorn stops cleanly on both)."""
    import contextlib
    import signal
    import socket

    app = create_app(checkpoints)
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

    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_keep_alive=5,
                            limit_concurrency=64)
    Server(config).run(sockets=[sock])
    echo("stopped")
