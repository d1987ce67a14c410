"""The PBX side: render the shipped asterisk/ config, generate the Chinese prompts, run a development Asterisk.

Production installs the rendered files on its own PBX (`intake asterisk install-config`); development and the
test suite run Asterisk 22 from Debian sid in a cached chroot under var/ (`intake asterisk up|down|status`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from core.settings import Settings

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parents[1] / "asterisk"
PLACEHOLDER = re.compile(r"@@([A-Z_]+)@@")
ROOT_PACKAGES = ("asterisk", "asterisk-modules", "asterisk-core-sounds-en", "asterisk-moh-opsound-gsm", "tzdata")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
GENERIC_WELCOME = "custom/welcome"
GENERIC_WELCOME_TEXT = "您好，城市管理服务热线，通话将被录音，正在为您转接。"
HOURS = re.compile(r"^\d{2}:\d{2}-\d{2}:\d{2}$")


class PbxError(Exception):
    """The PBX could not be built, configured, started or stopped."""


@dataclass(frozen=True, slots=True)
class PbxParams:
    """Everything the shipped configuration is rendered with."""

    dids: tuple[str, ...] = ("12319", "12345")
    open_hours: str = "08:00-20:00"
    wrapup_seconds: int = 15
    queue_max_wait: int = 300
    service_level: int = 15
    sip_bind: str = "0.0.0.0:5060"
    sip_nat: tuple[str, ...] = ()
    seat_first: int = 8001
    seat_count: int = 20
    seat_secret: str = ""
    seat_codecs: str = "alaw,ulaw"
    seat_qualify: int = 30
    carrier_host: str = "198.51.100.10"
    carrier_port: int = 5060
    carrier_match: str = ""
    carrier_codecs: str = "alaw,ulaw"
    carrier_qualify: int = 60
    ami_bind: str = "127.0.0.1"
    ami_port: int = 5038
    ami_user: str = "intake"
    ami_secret: str = ""
    ami_permit: str = "127.0.0.1/255.255.255.255"
    rtp_start: int = 10000
    rtp_end: int = 20000
    extra: dict[str, str] = field(default_factory=dict)

    def seats(self) -> list[str]:
        """Return the seat extensions, e.g. 8001..8020."""
        return [str(self.seat_first + i) for i in range(self.seat_count)]


def seat_password(secret: str, extension: str) -> str:
    """Derive a seat's SIP password from the seat secret (nothing per seat needs storing)."""
    digest = hmac.new(secret.encode(), f"seat:{extension}".encode(), hashlib.sha256).hexdigest()
    return digest[:20]


def parse_dids(value: str) -> tuple[str, ...]:
    """Split and check the comma-separated hotline numbers."""
    dids = tuple(d.strip() for d in value.split(",") if d.strip())
    if not dids or not all(d.isdigit() for d in dids):
        raise PbxError(f"hotline numbers must be digits separated by commas, got {value!r}")
    return dids


def params_from_settings(settings: Settings, *, dev: bool) -> PbxParams:
    """Build the render parameters; `dev` adds what the local chroot PBX and its SIP test phones need."""
    if not HOURS.match(settings.hotline_open_hours):
        raise PbxError(f"INTAKE_HOTLINE_OPEN_HOURS must look like 08:00-20:00, got {settings.hotline_open_hours!r}")
    common = {
        "dids": parse_dids(settings.hotline_dids),
        "open_hours": settings.hotline_open_hours,
        "wrapup_seconds": settings.hotline_wrapup_seconds,
        "queue_max_wait": settings.hotline_queue_max_wait_seconds,
        "service_level": settings.hotline_service_level_seconds,
        "sip_bind": settings.hotline_sip_bind,
        "seat_first": settings.hotline_seat_first,
        "seat_count": settings.hotline_seat_count,
        "seat_secret": settings.hotline_seat_secret.get_secret_value(),
        "carrier_host": settings.hotline_carrier_host,
        "carrier_port": settings.hotline_carrier_port,
        "ami_port": settings.ami_port,
        "ami_user": settings.ami_username,
        "ami_secret": settings.ami_secret.get_secret_value(),
    }
    if not dev:
        return PbxParams(**common)  # type: ignore[arg-type]
    # The dev PBX shares the host's loopback with the SIP test phones (pyVoIP: ulaw only, ignores OPTIONS)
    # and keeps its RTP ports away from theirs.
    return PbxParams(**common, seat_codecs="ulaw,alaw", seat_qualify=0, carrier_qualify=0,  # type: ignore[arg-type]
                     ami_bind="127.0.0.1", ami_permit="127.0.0.0/255.0.0.0", rtp_start=20000, rtp_end=20999)


def _fill(text: str, values: dict[str, str], *, source: str) -> str:
    def repl(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise PbxError(f"{source}: no value for @@{name}@@")
        return values[name]

    return PLACEHOLDER.sub(repl, text)


def render_config(params: PbxParams) -> dict[str, str]:
    """Render every shipped `*.conf` of asterisk/ into the text Asterisk reads."""
    if not params.ami_secret or not params.seat_secret:
        raise PbxError("the AMI secret and the seat secret must be set")
    seat_entry = (CONFIG_DIR / "seat-entry.in").read_text(encoding="utf-8")
    seats = "".join(
        _fill(seat_entry, {"EXT": ext, "PASSWORD": seat_password(params.seat_secret, ext)}, source="seat-entry.in")
        for ext in params.seats()
    )
    values = {
        "AMI_BIND": params.ami_bind,
        "AMI_PORT": str(params.ami_port),
        "AMI_USER": params.ami_user,
        "AMI_SECRET": params.ami_secret,
        "AMI_PERMIT": params.ami_permit,
        "SIP_BIND": params.sip_bind,
        "SIP_NAT": "\n".join(params.sip_nat),
        "CARRIER_HOST": params.carrier_host,
        "CARRIER_PORT": str(params.carrier_port),
        "CARRIER_MATCH": params.carrier_match or params.carrier_host,
        "CARRIER_CODECS": params.carrier_codecs,
        "CARRIER_QUALIFY": str(params.carrier_qualify),
        "SEAT_CODECS": params.seat_codecs,
        "SEAT_QUALIFY": str(params.seat_qualify),
        "SEATS": seats,
        "OPEN_HOURS": params.open_hours,
        "QUEUE_MAX_WAIT": str(params.queue_max_wait),
        "WRAPUP": str(params.wrapup_seconds),
        "SERVICE_LEVEL": str(params.service_level),
        "FIRST_DID": params.dids[0],
        "DID_ROUTES": "\n".join(f"exten => {did},1,Goto(hotline,{did},1)" for did in params.dids),
        "QUEUES": "".join(f"\n[hotline-{did}](hotline-tpl)\n" for did in params.dids),
        "RTP_START": str(params.rtp_start),
        "RTP_END": str(params.rtp_end),
        **params.extra,
    }
    rendered = {}
    for path in sorted(CONFIG_DIR.glob("*.conf")):
        rendered[path.name] = _fill(path.read_text(encoding="utf-8"), values, source=path.name)
    return rendered


def install_config(etc_dir: Path, params: PbxParams) -> list[str]:
    """Write the rendered files into an Asterisk config directory; return the names that changed."""
    etc_dir.mkdir(parents=True, exist_ok=True)
    changed = []
    for name, text in render_config(params).items():
        target = etc_dir / name
        if target.exists() and target.read_text(encoding="utf-8") == text:
            continue
        # Secrets inside: readable by the PBX only, written atomically so a reload never sees half a file.
        fd, tmp = tempfile.mkstemp(dir=etc_dir, prefix=f".{name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o640)
        os.replace(tmp, target)
        changed.append(name)
    return changed


def prompt_texts(params: PbxParams) -> dict[str, str]:
    """Return sound name → Chinese text for every prompt the dialplan and queues play."""
    texts: dict[str, str] = {}
    for line in (CONFIG_DIR / "prompts.tsv").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, _, text = line.partition("\t")
        texts[name.strip()] = text.strip()
    for did in params.dids:
        texts.setdefault(f"custom/welcome-{did}", GENERIC_WELCOME_TEXT)
    return texts


def generate_prompts(sounds_dir: Path, params: PbxParams, *, cache_dir: Path) -> list[Path]:
    """Speak every prompt with espeak-ng (Mandarin) and convert it with sox to 8 kHz mono WAV under sounds/zh/."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise PbxError(f"{tool} is not installed (scripts/system-deps.sh installs it)")
    cache_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in prompt_texts(params).items():
        key = hashlib.sha256(f"cmn|190|{text}".encode()).hexdigest()[:16]
        cached = cache_dir / f"{key}.wav"
        if not cached.exists():
            with tempfile.TemporaryDirectory() as tmp:
                raw = Path(tmp) / "raw.wav"
                subprocess.run(["espeak-ng", "-v", "cmn", "-s", "190", "-w", str(raw), text], check=True,
                               capture_output=True, timeout=60)
                out = Path(tmp) / "out.wav"
                subprocess.run(["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer",
                                str(out), "gain", "-n", "-3"], check=True, capture_output=True, timeout=60)
                shutil.move(str(out), cached)
        target = sounds_dir / "zh" / f"{name}.wav"
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists() or target.read_bytes() != cached.read_bytes():
            shutil.copyfile(cached, target)
            target.chmod(0o644)
        written.append(target)
    return written


def debian_mirror(configured: str | None = None) -> str:
    """Use the configured mirror, else the Debian mirror of this machine's apt sources."""
    if configured:
        return configured
    candidates: list[str] = []
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        with contextlib.suppress(OSError):
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                line = line.strip()
                if line.startswith("URIs:"):
                    candidates.extend(line.split()[1:])
                elif line.startswith("deb "):
                    candidates.extend(w for w in line.split()[1:] if "://" in w)
    for uri in candidates:
        if "debian" in uri and "security" not in uri:
            return uri.rstrip("/")
    return DEFAULT_MIRROR


def _is_root() -> bool:
    return os.geteuid() == 0


class DevPbx:
    """Asterisk 22 from Debian sid in a cached chroot: built once, configured from asterisk/, run in the background."""

    def __init__(self, base_dir: Path, *, mirror: str | None = None) -> None:
        """Use `base_dir` (e.g. var/asterisk) for the root, the prompt cache, the pid file and logs."""
        self.base_dir = base_dir.resolve()
        self.root = self.base_dir / "root"
        self.stamp = self.base_dir / "root.json"
        self.pidfile = self.base_dir / "asterisk.pid"
        self.console_log = self.base_dir / "asterisk.log"
        self.mirror = mirror

    @classmethod
    def from_settings(cls, settings: Settings) -> DevPbx:
        """The dev PBX of these settings (INTAKE_HOTLINE_PBX_DIR, default var/asterisk)."""
        return cls(settings.hotline_pbx_dir or settings.var_dir / "asterisk", mirror=settings.hotline_debian_mirror)

    @property
    def monitor_dir(self) -> Path:
        """Where recordings and messages of this PBX land, seen from the host."""
        return self.root / "var/spool/asterisk/monitor"

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        # Two `up`s at once (a developer and the test suite) must not debootstrap into the same directory.
        self.base_dir.mkdir(parents=True, exist_ok=True)
        with open(self.base_dir / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def is_built(self) -> bool:
        """Tell whether a complete root with the wanted packages is cached."""
        if not self.stamp.exists() or not (self.root / "usr/sbin/asterisk").exists():
            return False
        try:
            info = json.loads(self.stamp.read_text(encoding="utf-8"))
        except ValueError:
            return False
        return bool(info.get("packages") == list(ROOT_PACKAGES))

    def build(self, *, echo: Callable[[str], None] = log.info) -> bool:
        """Debootstrap the sid root once (minutes, downloads packages); return False when the cache was used."""
        with self._lock():
            if self.is_built():
                return False
            if not _is_root():
                raise PbxError("building the development PBX needs root (debootstrap, chroot)")
            if shutil.which("debootstrap") is None:
                raise PbxError("debootstrap is not installed (scripts/system-deps.sh installs it)")
            mirror = debian_mirror(self.mirror)
            partial = self.base_dir / "root.partial"
            if partial.exists():
                shutil.rmtree(partial)
            echo(f"building a Debian sid root with Asterisk in {self.root} from {mirror} (a few minutes, once)")
            started = time.monotonic()
            result = subprocess.run(
                ["debootstrap", "--variant=minbase", f"--include={','.join(ROOT_PACKAGES)}", "sid", str(partial),
                 mirror],
                capture_output=True, text=True, timeout=1800,
            )
            if result.returncode != 0:
                tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
                raise PbxError(f"debootstrap failed ({result.returncode}):\n{tail}")
            if self.root.exists():
                shutil.rmtree(self.root)
            partial.rename(self.root)
            version = self._chroot_output(["/usr/sbin/asterisk", "-V"]).strip()
            self.stamp.write_text(json.dumps({"packages": list(ROOT_PACKAGES), "mirror": mirror, "version": version,
                                              "built_at": time.time()}), encoding="utf-8")
            echo(f"built {version} in {time.monotonic() - started:.0f} s")
            return True

    def _chroot_output(self, argv: list[str], *, timeout: float = 30) -> str:
        result = subprocess.run(["chroot", str(self.root), *argv], capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise PbxError(f"{' '.join(argv)} failed: {result.stderr.strip() or result.stdout.strip()}")
        return result.stdout

    def install(self, params: PbxParams) -> list[str]:
        """Install our config and prompts into the root; return the config files that changed."""
        changed = install_config(self.root / "etc/asterisk", params)
        generate_prompts(self.root / "usr/share/asterisk/sounds", params, cache_dir=self.base_dir / "prompts")
        # The package's config files stay as shipped but unused: modules.conf loads only what we need.
        with contextlib.suppress(PbxError):
            self._chroot_output(["chown", "-R", "root:asterisk", "/etc/asterisk"])
        for path in ("/var/lib/asterisk", "/var/spool/asterisk", "/var/log/asterisk", "/run/asterisk",
                     "/var/cache/asterisk"):
            (self.root / path.lstrip("/")).mkdir(parents=True, exist_ok=True)
            self._chroot_output(["chown", "-R", "asterisk:asterisk", path])
        self.monitor_dir.chmod(0o755)
        # Asterisk looks its host name up on every RTP session; without an entry that is a DNS query per call.
        hosts = self.root / "etc/hosts"
        wanted = f"127.0.0.1 localhost {socket.gethostname()}\n::1 localhost ip6-localhost\n"
        if not hosts.exists() or hosts.read_text(encoding="utf-8") != wanted:
            hosts.write_text(wanted, encoding="utf-8")
        return changed

    def pid(self) -> int | None:
        """Return the pid of the running Asterisk of this root, or None."""
        try:
            pid = int(self.pidfile.read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return None
        if state == "Z" or not cmdline or not cmdline[0].endswith(b"asterisk"):
            return None
        return pid

    def start(self, *, timeout: float = 30) -> int:
        """Start Asterisk in the root (private mount namespace: /dev and /proc vanish with it) and wait until booted."""
        with self._lock():
            pid = self.pid()
            if pid is not None:
                return pid
            if not _is_root():
                raise PbxError("running the development PBX needs root (chroot)")
            if not self.is_built():
                raise PbxError(f"no PBX root in {self.root}: run `intake asterisk up` to build it")
            for stale in ("run/asterisk/asterisk.ctl", "run/asterisk/asterisk.pid"):
                with contextlib.suppress(FileNotFoundError):
                    (self.root / stale).unlink()
            root = str(self.root)
            script = (f"mount --rbind /dev '{root}/dev' && mount -t proc proc '{root}/proc' && "
                      f"exec chroot '{root}' /usr/sbin/asterisk -f -n -U asterisk -G asterisk")
            with open(self.console_log, "ab") as out:
                proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                                        stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True)
            self.pidfile.write_text(str(proc.pid), encoding="utf-8")
            self._wait_booted(proc, timeout=timeout)
            return proc.pid

    def _wait_booted(self, proc: subprocess.Popen[bytes], *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise PbxError(f"asterisk exited with {proc.returncode}; see {self.console_log}")
            try:
                self._chroot_output(["/usr/sbin/asterisk", "-rx", "core waitfullybooted"], timeout=5)
                return
            except (PbxError, subprocess.TimeoutExpired):
                time.sleep(0.1)
        raise PbxError(f"asterisk did not finish booting in {timeout:.0f} s; see {self.console_log}")

    def cli(self, command: str, *, timeout: float = 15) -> str:
        """Run an Asterisk CLI command on the running PBX."""
        return self._chroot_output(["/usr/sbin/asterisk", "-rx", command], timeout=timeout)

    def stop(self, *, timeout: float = 15) -> bool:
        """Stop Asterisk (hanging up calls); return False when it was not running."""
        pid = self.pid()
        if pid is None:
            with contextlib.suppress(FileNotFoundError):
                self.pidfile.unlink()
            return False
        with contextlib.suppress(PbxError, subprocess.TimeoutExpired):
            self.cli("core stop now", timeout=5)
        if not self._wait_gone(pid, timeout):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            if not self._wait_gone(pid, 5):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                self._wait_gone(pid, 5)
        with contextlib.suppress(FileNotFoundError):
            self.pidfile.unlink()
        return True

    def _wait_gone(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap it when we are its parent (tests)
            if self.pid() is None:
                return True
            time.sleep(0.05)
        return False

    def restart(self, *, timeout: float = 30) -> int:
        """Stop and start again (every call on the PBX is cut, as in a real restart)."""
        self.stop()
        return self.start(timeout=timeout)

    def up(self, params: PbxParams, *, echo: Callable[[str], None] = log.info) -> int:
        """Build if needed, install the config, start or reload; return the pid."""
        self.build(echo=echo)
        changed = self.install(params)
        pid = self.pid()
        if pid is None:
            return self.start()
        if changed:
            # A running PBX picks up changed files without dropping calls.
            self.cli("core reload")
        return pid


def ami_reachable(host: str, port: int, *, timeout: float = 1.0) -> bool:
    """Tell whether something accepts TCP connections on the AMI port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
