"""Run a training stage in a process forked from a warm server that has already imported torch.

``python -m stages.warm evaluate --domain medical --init simclr`` does what ``python -m stages.evaluate …`` does,
with the same arguments, output, exit status and results, but without paying the ~5 s of importing torch,
torchvision, timm and smp (~12 s on a loaded 2-core CPU) in every one of the demo's ~20 training stages. DVC
still runs, caches and skips each stage on its own: only the process start-up is shared.

How: the first call starts a server (``--serve``) that imports the heavy third-party libraries and nothing of
this project, then listens on a Unix socket. Each call connects, hands over its stdin / stdout / stderr, working
directory, environment and arguments; the server forks a child that runs the stage module as ``__main__`` (the
project's own modules are imported fresh in every child, so an edited module is never stale); the call exits
with the child's status and forwards Ctrl-C / SIGTERM to it. The server is keyed by interpreter, working
directory, installed packages and environment, and exits after ``WARM_STAGES_IDLE_S`` (default 120) idle
seconds. ``WARM_STAGES=0``, or a platform without ``fork`` / Unix sockets, runs the stage in this process.
``WARM_STAGES_LOG=<file>`` makes the server append one JSON line per stage it ran (module, arguments, exit
status, wall time, peak RSS): the stages are the server's children, not the caller's, so that is where their
resource use is seen (``bench/demo_repro.py`` reads it).

Standard library only: the client itself starts in ~30 ms.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import runpy
import select
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import traceback

PRELOAD = ("torch", "torchvision", "timm", "segmentation_models_pytorch", "sklearn.linear_model", "sklearn.manifold",
           "albumentations", "scipy.stats", "pydantic", "yaml", "matplotlib.figure",
           "matplotlib.backends.backend_agg")
VOLATILE_ENV = ("DVC_", "PWD", "OLDPWD", "SHLVL", "_")  # differ between calls without changing what a stage computes
START_TIMEOUT_S = 180


def main(argv: list[str]) -> int:
    if argv[:1] == ["--serve"]:
        return serve(argv[1])
    if not argv:
        sys.exit("usage: python -m stages.warm <stage> [stage arguments]")
    module = f"stages.{argv[0]}"
    if os.environ.get("WARM_STAGES", "1") == "0" or not hasattr(os, "fork") or not hasattr(socket, "AF_UNIX"):
        return run_here(module, argv[1:])
    path = socket_path()
    for _ in range(2):
        connection = connect(path) or start_server(path)
        if connection is None:
            break
        code = run_on_server(connection, module, argv[1:])
        if code is not None:
            return code
    print("warm stage server unavailable; running the stage in this process", file=sys.stderr)
    return run_here(module, argv[1:])


def run_here(module: str, args: list[str]) -> int:
    sys.argv = [module, *args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as done:
        return exit_status(done)
    return 0


def exit_status(done: SystemExit) -> int:
    """The status ``sys.exit(x)`` gives: 0 for None, the int, or 1 after printing a message."""
    if done.code is None or isinstance(done.code, int):
        return done.code or 0
    print(done.code, file=sys.stderr)
    return 1


def socket_path() -> str:
    """One server per interpreter, working directory, set of installed packages and (stable) environment."""
    site = sysconfig.get_paths()["purelib"]
    stable = sorted((key, value) for key, value in os.environ.items() if not key.startswith(VOLATILE_ENV))
    key = json.dumps([sys.executable, os.getcwd(), os.stat(site).st_mtime_ns, stable])
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"warm-stages-{os.getuid()}-{digest}.sock")


def connect(path: str) -> socket.socket | None:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect(path)
        return client
    except OSError:
        client.close()
        return None


def start_server(path: str) -> socket.socket | None:
    """Start a server and wait until it listens; None if it died on the way (the caller runs the stage itself)."""
    server = subprocess.Popen([sys.executable, "-m", "stages.warm", "--serve", path], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        connection = connect(path)
        if connection is not None:
            return connection
        if server.poll() is not None:  # it failed, or lost the race to another server for this path
            return connect(path)
        time.sleep(0.05)
    return None


def run_on_server(connection: socket.socket, module: str, args: list[str]) -> int | None:
    """Hand this process's stdio, directory, environment and arguments to a forked child; its exit status."""
    request = json.dumps({"module": module, "args": args, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
    with connection:
        try:
            socket.send_fds(connection, [request], [0, 1, 2])
            reply = connection.makefile("r")
            child = int(reply.readline())
        except (OSError, ValueError):
            return None
        forward = lambda signum, _frame: os.kill(child, signum)  # noqa: E731
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, forward)
        status = reply.readline()
    code = int(status) if status.strip() else 1
    return 128 - code if code < 0 else code  # killed by signal N: 128 + N, as a shell reports it


def serve(path: str) -> int:
    """Import the heavy libraries, then fork one child per request until idle for ``WARM_STAGES_IDLE_S``."""
    for name in os.environ.get("WARM_STAGES_PRELOAD", ",".join(PRELOAD)).split(","):
        if name:
            importlib.import_module(name)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if connect(path) is not None:
        return 0  # another server for the same key won the race
    if os.path.exists(path):
        os.unlink(path)  # left by a server that died
    listener.bind(path)
    listener.listen(8)
    idle_limit = float(os.environ.get("WARM_STAGES_IDLE_S", "120"))
    running: dict[int, tuple[socket.socket, dict, float]] = {}
    last_active = time.monotonic()
    try:
        while running or time.monotonic() - last_active < idle_limit:
            ready, _, _ = select.select([listener], [], [], 0.2)
            if ready:
                connection, _ = listener.accept()
                started = fork_child(connection, listener)
                if started:
                    running[started[0]] = (connection, started[1], time.monotonic())
            for pid in list(running):
                done, status, usage = os.wait4(pid, os.WNOHANG)
                if done:
                    connection, request, began = running.pop(pid)
                    code = os.waitstatus_to_exitcode(status)
                    with connection:
                        connection.sendall(f"{code}\n".encode())
                    log_run(request, code, time.monotonic() - began, usage.ru_maxrss)
                    last_active = time.monotonic()
    finally:
        listener.close()
        if os.path.exists(path):
            os.unlink(path)
    return 0


def log_run(request: dict, code: int, wall_s: float, max_rss_kib: int) -> None:
    """One JSON line per stage run into the caller's ``WARM_STAGES_LOG`` file, if it named one."""
    path = request["env"].get("WARM_STAGES_LOG")
    if path:
        with open(path, "a") as out:
            out.write(json.dumps({"module": request["module"], "args": request["args"], "exit": code,
                                  "wall_s": round(wall_s, 2), "max_rss_mb": round(max_rss_kib / 1024)}) + "\n")


def fork_child(connection: socket.socket, listener: socket.socket) -> tuple[int, dict] | None:
    """Fork a child that runs the requested stage with the caller's stdio; (its pid, the request) in the parent."""
    try:
        message, fds, _, _ = socket.recv_fds(connection, 1 << 20, 3)
        request = json.loads(message)
    except (OSError, ValueError):
        connection.close()
        return None
    pid = os.fork()
    if pid:
        for fd in fds:
            os.close(fd)
        connection.sendall(f"{pid}\n".encode())
        return pid, request
    listener.close()
    connection.close()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os._exit(run_child(request))


def run_child(request: dict) -> int:
    """In the forked child: become the stage process the caller would have been, run it, flush, return."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sys.path[0] = request["cwd"]
    importlib.invalidate_caches()  # modules written since the server started are found
    try:
        code = run_here(request["module"], request["args"])
    except BaseException:  # a crash prints its traceback, as the interpreter would
        traceback.print_exc()
        code = 1
    try:
        import atexit

        atexit._run_exitfuncs()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
