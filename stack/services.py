"""The smaller services as components: NGINX in front of the replicas, Redis, the Stripe
peer (localstripe, through stack.localstripe), and our own API and worker."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from stack import procs
from stack.component import Component, render
from stack.config import ROOT, Config
from stack.errors import StackError
from stack.probes import http_ok, wait_until


class Nginx(Component):
    """NGINX's stream module balancing PostgreSQL reads across the replicas."""

    template = "nginx.conf.template"

    @property
    def conf(self) -> Path:
        return self.cfg.dir / self.name / "nginx.conf"

    def conf_values(self) -> dict[str, object]:
        module = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
        return {
            "NGINX_LOAD_STREAM_MODULE": f"load_module {module};" if module.exists() else "",
            "NGINX_PID_FILE": self.pidfile,
            "NGINX_ERROR_LOG": self.log,
            "PG_REPLICA1_ADDR": f"127.0.0.1:{self.cfg.replica1_port}",
            "PG_REPLICA2_ADDR": f"127.0.0.1:{self.cfg.replica2_port}",
            "PG_READ_LISTEN": f"127.0.0.1:{self.port}",
        }

    def command(self) -> list[str]:
        conf = render(ROOT / "nginx" / self.template, self.conf, self.conf_values())
        # nginx daemonises and writes its own pid file (the master's pid).
        return ["nginx", "-p", str(conf.parent), "-c", str(conf), "-e", str(self.log)]

    def launch(self) -> None:
        self.rotate_log()
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(self.command(), check=True, cwd=ROOT)
        wait_until(lambda: self.pid() is not None, 10)

    def owns(self, pid: int) -> bool:
        # nginx turns its command line (and the environment after it) into a title
        # that keeps the arguments: "nginx: master process nginx -p ... -c <conf> ...".
        return f" -c {self.conf} " in f"{procs.title(pid)} "

    def forked_by_us(self, pid: int) -> bool:
        # Workers outlive a killed master and keep serving our port.
        return procs.title(pid).startswith("nginx: worker process")


class NginxApi(Nginx):
    """NGINX's HTTP balancer in front of the API processes (the ha topology): clients keep
    one address, and a request refused by a dead process goes to the other at once."""

    template = "api.conf.template"

    def conf_values(self) -> dict[str, object]:
        return {
            "NGINX_PID_FILE": self.pidfile,
            "NGINX_ERROR_LOG": self.log,
            "API_UPSTREAMS": " ".join(f"server 127.0.0.1:{port} max_fails=1 fail_timeout=5s;"
                                      for port in self.cfg.api_ports()),
            "API_LISTEN": f"127.0.0.1:{self.port}",
            "DOLLAR": "$",
        }

    def ready(self) -> bool:
        # Through the balancer to an API process: NGINX alone answers 502.
        return http_ok(f"http://127.0.0.1:{self.port}/health")


class Redis(Component):
    def owns(self, pid: int) -> bool:
        # redis-server soon rewrites its command line into "redis-server 127.0.0.1:<port>",
        # environment included, and moves into its data folder (--dir), this stack's.
        title, data = procs.title(pid), (self.cfg.dir / "redis").resolve()
        return title.startswith("redis-server") and (
            procs.cwd(pid) == data or f" --dir {data} " in f"{title} ")

    def command(self) -> list[str]:
        data = self.cfg.dir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        return ["redis-server", str(ROOT / "stack" / "redis.conf"), "--port", str(self.port),
                "--bind", "127.0.0.1", "--dir", str(data), "--daemonize", "no"]

    def ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


class LocalStripe(Component):
    """localstripe, the Stripe peer, with its state in this stack's folder.

    Run through stack.localstripe (the launcher): plain localstripe rewrites its
    store on every write (to a path shared by every checkout on the machine)
    and cannot load it back past ~1,000 objects; the launcher checkpoints this
    stack's own file at most once a second, atomically, and at exit, and logs
    every change durably before answering (so a kill -9 loses nothing answered).
    """

    @property
    def store(self) -> Path:
        return self.cfg.dir / "localstripe" / "store.pickle"

    def command(self) -> list[str]:
        self.store.parent.mkdir(parents=True, exist_ok=True)
        return [str(ROOT / ".venv" / "bin" / "python"), "-m", "stack.localstripe",
                "--port", str(self.port), "--store", str(self.store)]

    def start(self, timeout: float) -> str:
        try:
            return super().start(timeout)
        except StackError:
            # A store that cannot be read (the launcher never leaves one
            # truncated, but a full disk could): keep it for a look, start empty.
            if "UnpicklingError" not in self.log.read_text(errors="replace"):
                raise
            self.store.replace(self.store.with_suffix(".pickle.corrupt"))
            print(f"  localstripe: {self.store} was unreadable; moved to *.corrupt, "
                  "starting empty")
            return super().start(timeout)

    def ready(self) -> bool:
        # Without a key localstripe answers 401 before touching its store: listing
        # took over 2 s with ~20,000 objects. One thread serves everything, so a
        # busy peer answers late, not never: allow for that before calling it down.
        return http_ok(f"http://127.0.0.1:{self.port}/v1/customers/cus_health", timeout=5.0)


class PaystreamProcess(Component):
    """Our own API or worker, run from .venv through the paystream console script."""

    def __init__(self, name: str, port: int, cfg: Config, *, args: list[str], health: str,
                 env: dict[str, str] | None = None):
        super().__init__(name, port, cfg)
        self.args = args
        self.health_path = health
        self.own_env = env or {}

    def command(self) -> list[str]:
        return [str(ROOT / ".venv" / "bin" / "paystream"), *self.args]

    def env(self) -> dict[str, str]:
        # One of several (ha): its own port, its own table store.
        return self.own_env

    def prepare(self) -> None:
        # Faust makes its data folder but not the folders above it.
        data = self.own_env.get("FAUST_DATA_DIR")
        if data:
            Path(data).mkdir(parents=True, exist_ok=True)

    def ready(self) -> bool:
        return http_ok(f"http://127.0.0.1:{self.port}{self.health_path}")
