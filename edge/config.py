"""The configuration: one tree of pydantic models, defaults in one place.

Unknown keys, wrong types and out-of-range values are refused with one line
that names the key, before any model, camera or pin is touched; so are
duplicate keys, two jobs on one GPIO pin, and a decision rule nobody can
pass. YAML is read with YAML 1.2 booleans (only true/false): ``mode: off``
is the string "off", as meant, and a boolean is never taken for a number. Relative
paths are taken relative to the configuration file, so a site can keep its
config, models and database together wherever it likes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Self, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from .errors import ConfigError
from .strictyaml import YAMLError, read_yaml, short

#: Where the package's own default configuration lives (the repository root).
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "config.yaml"
#: A config file is a few kilobytes; anything past this is refused unread (and
#: PyYAML parses about 100 KB a second on a laptop).
MAX_CONFIG_BYTES = 100_000


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        """``threshold: true`` is a type error: pydantic alone would read it as 1.0."""
        if isinstance(value, bool) and info.field_name is not None:
            kinds = get_args(cls.model_fields[info.field_name].annotation) or (
                cls.model_fields[info.field_name].annotation,
            )
            if bool not in kinds and (int in kinds or float in kinds):
                raise PydanticCustomError("bool_not_number", "must be a number, not true/false")
        return value


class ModelsConfig(_Section):
    dir: Path = Path("models")
    threads: int = Field(1, ge=1, le=16)


class DetectConfig(_Section):
    score_threshold: float = Field(0.6, gt=0.0, lt=1.0)
    iou_threshold: float = Field(0.3, gt=0.0, lt=1.0)
    #: How still photos (enroll, identify, verify) are searched for faces:
    #: "full" = full-range model on the whole photo (and a padded copy),
    #: "short" = short-range model likewise, "tiles" = short-range model on
    #: overlapping tiles as well, "both" = all of these. Whatever finds a face,
    #: its keypoints come from the short-range model on a crop around it, as
    #: at the door (Engine.still_detect).
    still_mode: Literal["short", "full", "tiles", "both"] = "full"
    #: The camera path uses the short-range model on the whole frame (faces at
    #: a door are close); "full" trades speed for range.
    camera_mode: Literal["short", "full"] = "short"
    #: Side of the square tiles searched in "tiles"/"both" mode (pixels).
    tile_size: int = Field(512, ge=128, le=4096)
    max_faces: int = Field(20, ge=1, le=100)


class AlignConfig(_Section):
    #: Faces whose eyes are closer than this (frame pixels) are not embedded.
    min_eye_distance: float = Field(16.0, ge=4.0, le=500.0)


class EmbedConfig(_Section):
    #: "sface" (licensed, the default) or "mobilefacenet" (unlicensed: comparison only).
    model: Literal["sface", "mobilefacenet"] = "sface"
    flip_average: bool = False


class MatchConfig(_Section):
    #: Provisional for SFace (its ../eval pairs: impostors at most 0.385, genuine at least 0.437).
    threshold: float = Field(0.41, gt=-1.0, lt=1.0)
    margin: float = Field(0.05, ge=0.0, lt=1.0)


class EnrollConfig(_Section):
    min_eye_distance: float = Field(20.0, ge=4.0, le=1000.0)
    min_sharpness: float = Field(25.0, ge=0.0)
    max_yaw: float = Field(0.45, gt=0.0, le=1.0)
    max_image_pixels: int = Field(40_000_000, ge=10_000)
    max_image_bytes: int = Field(50_000_000, ge=1_000)
    camera_frames: int = Field(5, ge=1, le=50)


class GalleryConfig(_Section):
    db: Path = Path("data/gallery.db")
    #: Keep each enrollment's face crop (sealed like the templates) so ``edge reembed``
    #: can recompute templates for a new embedder; off: a new model means re-enrolling.
    keep_crops: bool = True


class CameraConfig(_Section):
    #: "picamera2", a device index ("0"), an RTSP/HTTP URL, a video file,
    #: a folder of images, or a GStreamer pipeline string (Jetson CSI).
    source: str = "0"
    width: int = Field(640, ge=64, le=4096)
    height: int = Field(480, ge=64, le=4096)
    fps: float = Field(30.0, gt=0.0, le=120.0)
    reopen_max_seconds: float = Field(30.0, gt=0.0)

    @field_validator("source", mode="before")
    @classmethod
    def _index_as_text(cls, value: Any) -> Any:
        """``source: 0`` unquoted is YAML's integer 0: the device index meant."""
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class LivenessConfig(_Section):
    mode: Literal["off", "passive", "active", "both"] = "passive"
    #: Calibrated on ../shared/eval/spoof (README, Liveness): APCER 0 with margin, BPCER 4%.
    passive_threshold: float = Field(0.9, gt=0.0, lt=1.0)
    #: "v2": MiniFASNetV2 alone (measured better here); "fused": V2 + V1SE as upstream.
    passive_models: Literal["v2", "fused"] = "v2"
    passive_frames: int = Field(3, ge=1, le=30)
    blink_ear_threshold: float = Field(0.16, gt=0.0, lt=1.0)
    blink_window_seconds: float = Field(4.0, gt=0.0, le=60.0)


class DecisionConfig(_Section):
    agree_matches: int = Field(3, ge=1, le=30)
    #: Faces turned further than this (see edge.align.yaw) are tracked but not recognised.
    max_yaw: float = Field(0.5, gt=0.0, le=2.0)
    window_frames: int = Field(10, ge=1, le=300)
    cooldown_seconds: float = Field(10.0, ge=0.0)
    unknown_log_seconds: float = Field(10.0, ge=0.0)
    snapshot_dir: Path | None = None
    snapshot_max_mb: float = Field(100.0, gt=0.0)

    @model_validator(mode="after")
    def _passable(self) -> Self:
        if self.agree_matches > self.window_frames:
            raise ValueError(
                f"agree_matches {self.agree_matches} is more than window_frames "
                f"{self.window_frames}: nobody could ever be granted"
            )
        return self


class DoorConfig(_Section):
    pin: int = Field(17, ge=0, le=27)
    active_high: bool = True
    unlock_seconds: float = Field(3.0, gt=0.0, le=60.0)
    contact_pin: int | None = Field(None, ge=0, le=27)
    held_open_seconds: float = Field(30.0, gt=0.0)
    exit_button_pin: int | None = Field(None, ge=0, le=27)
    #: What a grant drives (edge/outputs.py), several at once; [] is a kiosk
    #: (greet and log only, no relay).
    outputs: tuple[Literal["relay", "wiegand", "osdp"], ...] = ("relay",)
    #: The door's name in MQTT and Home Assistant; None = the host name.
    name: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    #: The IANA time zone access schedules are read in (edge/rules.py); None = the system's.
    timezone: str | None = Field(None, min_length=1, max_length=64)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str | None) -> str | None:
        from .rules import zone

        zone(v)  # a RuleError (a ValueError) names the zone
        return v

    @model_validator(mode="after")
    def _one_job_per_pin(self) -> Self:
        """Two devices on one pin fail only at start (GPIOPinInUse) or, worse, not at all."""
        jobs: dict[int, str] = {}
        for key, job in (("pin", "the relay"), ("contact_pin", "the door contact"),
                         ("exit_button_pin", "the exit button")):
            pin = getattr(self, key)
            if pin is None:
                continue
            if pin in jobs:
                raise ValueError(f"{key} {pin} is already {jobs[pin]}: pins must be distinct")
            jobs[pin] = f"{job}'s pin (door.{key})"
        return self


class WiegandConfig(_Section):
    """A Wiegand reader output to a panel (edge/wiegand.py)."""

    format: Literal[26, 34] = 26
    d0_pin: int = Field(23, ge=0, le=27)
    d1_pin: int = Field(24, ge=0, le=27)
    pulse_us: float = Field(50.0, ge=20.0, le=500.0)
    interval_ms: float = Field(2.0, ge=0.2, le=50.0)


class OsdpConfig(_Section):
    """An OSDP reader (PD) on RS-485 (edge/osdp.py); cards laid out as wiegand.format."""

    device: str | None = None
    baud: Literal[9600, 19200, 38400, 57600, 115200] = 9600
    address: int = Field(0, ge=0, le=126)
    #: 32 hex digits, mode 0600; a systemd credential "osdp-scbk" takes precedence.
    scbk_file: Path | None = None
    led_pin: int | None = Field(None, ge=0, le=27)


class MetricsConfig(_Section):
    #: "HOST:PORT" for a Prometheus endpoint (e.g. 127.0.0.1:9108); None = off.
    listen: str | None = Field(None, pattern=r"^[^:\s]*:[0-9]{1,5}$")


#: Host names and addresses a console may listen on without TLS: this machine only.
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


class ConsoleConfig(_Section):
    """The installer's web console inside the daemon (edge/console/); off unless listen is set."""

    #: "HOST:PORT" (e.g. 127.0.0.1:8080, reached over ``ssh -L``); None = off.
    listen: str | None = Field(None, pattern=r"^[^\s]*:[0-9]{1,5}$")
    #: PEM certificate and key: required when ``listen`` is not a loopback address.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: The login token (made once, 0600); default console.token beside the gallery.
    token_file: Path | None = None
    #: At most this many JPEG frames a second go to viewers (encoded only while watched).
    max_fps: float = Field(10.0, gt=0.0, le=30.0)
    #: JPEG quality of the live view.
    jpeg_quality: int = Field(80, ge=30, le=95)

    @model_validator(mode="after")
    def _tls_off_this_machine(self) -> Self:
        if self.listen is None:
            return self
        host = self.listen.rpartition(":")[0]
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both or neither")
        if host not in LOOPBACK and self.tls_cert is None:
            raise ValueError(
                f"listen {self.listen} is reachable from other machines: set tls_cert and "
                "tls_key, or listen on 127.0.0.1 and use ssh -L"
            )
        return self


class MqttConfig(_Section):
    #: The broker; None = MQTT off.
    host: str | None = None
    port: int = Field(1883, ge=1, le=65535)
    tls: bool = False
    username: str | None = None
    #: File holding the password; a systemd credential "mqtt-password" takes precedence.
    password_file: Path | None = None
    topic_prefix: str = Field("edge-access", min_length=1, pattern=r"^[^#+\s]+$")
    discovery_prefix: str = Field("homeassistant", min_length=1, pattern=r"^[^#+\s]+$")
    allow_remote_unlock: bool = False


class FleetConfig(_Section):
    """The central store of a fleet of doors (edge/fleet/); None url = this door stands alone."""

    #: libpq URL of the fleet database, without a password
    #: (e.g. postgresql://front@fleet.example/edge?sslmode=verify-full).
    url: str | None = None
    #: File holding the password (mode 0600); a systemd credential "fleet-password" wins.
    password_file: Path | None = None
    #: The fleet key templates are sealed under at the centre (mode 0600);
    #: a systemd credential "fleet-key" wins. Copied to each door from the admin's machine.
    key_file: Path = Path("data/fleet.key")
    #: TLS: "verify-full" checks the server's certificate and name against sslrootcert.
    sslmode: Literal["disable", "prefer", "require", "verify-ca", "verify-full"] | None = None
    sslrootcert: Path | None = None
    connect_timeout_seconds: int = Field(5, ge=1, le=300)


class VoiceConfig(_Section):
    enabled: bool = True
    welcome: str = "Welcome, {name}"
    denied: str = "Sorry, access denied"
    voice: str | None = None
    rate: int = Field(160, ge=50, le=400)
    volume: float = Field(1.0, ge=0.0, le=1.0)
    min_interval_seconds: float = Field(5.0, ge=0.0)


class StorageConfig(_Section):
    #: Below this much free space on the data disk, snapshots and backups stop
    #: (access decisions are always written); a `storage` event marks the recovery.
    min_free_mb: float = Field(50.0, ge=0.0)
    #: Events waiting in memory while the database is busy; more go to a spill file.
    event_memory_cap: int = Field(10_000, ge=10)


class BackupConfig(_Section):
    dir: Path = Path("data/backups")
    interval_hours: float = Field(24.0, gt=0.0)
    keep: int = Field(7, ge=1, le=1000)
    #: A corrupt gallery at start: "restore" the newest good backup, or "refuse" to start.
    on_corrupt: Literal["restore", "refuse"] = "restore"


class SecurityConfig(_Section):
    #: AES-256 key for templates at rest. A systemd credential named
    #: "gallery-key" ($CREDENTIALS_DIRECTORY) takes precedence when present.
    key_file: Path = Path("data/gallery.key")
    #: Lockout: this many liveness failures or unknown faces within the window
    #: stop all grants for lockout_seconds and raise an alarm event.
    lockout_failures: int = Field(5, ge=1, le=1000)
    lockout_window_seconds: float = Field(60.0, gt=0.0)
    lockout_seconds: float = Field(300.0, ge=0.0)


class PrivacyConfig(_Section):
    #: Unknown-face snapshots older than this are deleted.
    snapshot_days: float = Field(7.0, gt=0.0)


class DaemonConfig(_Section):
    status_file: Path = Path("data/status.json")
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class Config(_Section):
    models: ModelsConfig = ModelsConfig()
    detect: DetectConfig = DetectConfig()
    align: AlignConfig = AlignConfig()
    embed: EmbedConfig = EmbedConfig()
    match: MatchConfig = MatchConfig()
    enroll: EnrollConfig = EnrollConfig()
    gallery: GalleryConfig = GalleryConfig()
    camera: CameraConfig = CameraConfig()
    liveness: LivenessConfig = LivenessConfig()
    decision: DecisionConfig = DecisionConfig()
    door: DoorConfig = DoorConfig()
    voice: VoiceConfig = VoiceConfig()
    daemon: DaemonConfig = DaemonConfig()
    storage: StorageConfig = StorageConfig()
    backup: BackupConfig = BackupConfig()
    security: SecurityConfig = SecurityConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    wiegand: WiegandConfig = WiegandConfig()
    osdp: OsdpConfig = OsdpConfig()
    metrics: MetricsConfig = MetricsConfig()
    mqtt: MqttConfig = MqttConfig()
    console: ConsoleConfig = ConsoleConfig()
    fleet: FleetConfig = FleetConfig()
    #: The folder relative paths are resolved against (the config file's own).
    base_dir: Path = Field(default=PROJECT_ROOT, exclude=True)

    @model_validator(mode="after")
    def _outputs_pins_are_free(self) -> Self:
        """The Wiegand lines and the OSDP LED must not share a pin with the door's devices."""
        d = self.door
        taken = {p: f"door.{k}" for k, p in (("pin", d.pin), ("contact_pin", d.contact_pin),
                                              ("exit_button_pin", d.exit_button_pin))
                 if p is not None}
        mine: list[tuple[str, int | None]] = []
        if "wiegand" in d.outputs:
            w = self.wiegand
            mine += [("wiegand.d0_pin", w.d0_pin), ("wiegand.d1_pin", w.d1_pin)]
        if "osdp" in d.outputs:
            mine.append(("osdp.led_pin", self.osdp.led_pin))
        for key, pin in mine:
            if pin is None:
                continue
            if pin in taken:
                raise ValueError(f"{key} {pin} is already {taken[pin]}: pins must be distinct")
            taken[pin] = key
        return self

    def path(self, p: Path | str) -> Path:
        """Resolve a configured path: absolute as given, else below ``base_dir``."""
        p = Path(p).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)


def with_console(cfg: Config, listen: str) -> Config:
    """``cfg`` with ``console.listen`` set (``edge run --console``), checked like the file's."""
    try:
        console = ConsoleConfig.model_validate(cfg.console.model_dump() | {"listen": listen})
    except ValidationError as e:
        why = _describe(e).removeprefix("(top level): ")
        raise ConfigError(f"--console {listen}: {why}") from None
    return cfg.model_copy(update={"console": console})


def _describe(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(
        str(x)[:60] if str(x).isprintable() else short(str(x)) for x in first["loc"]
    ) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif first["type"] == "value_error":  # our own checks: the message without a prefix
        msg = str(first.get("ctx", {}).get("error", msg))
    elif "input" in first and not isinstance(first["input"], dict):
        msg = f"{msg} (got {short(first['input'])})"
    return f"{where}: {msg}"


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read and validate a YAML config; ``None`` means ``$EDGE_CONFIG`` or the default.

    Raises :class:`ConfigError` with one line naming the file and the key.
    """
    if path is None:
        path = os.environ.get("EDGE_CONFIG") or DEFAULT_CONFIG
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes, not a config")
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read config ({e.__class__.__name__})") from None
    try:
        data = read_yaml(text)
    except YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None)
        detail = f" ({problem})" if problem and "not allowed" in problem else ""
        raise ConfigError(f"{path}: not valid YAML{where}{detail}") from None
    except Exception as e:  # PyYAML's constructors raise builtins on bad scalars (2001-13-45)
        raise ConfigError(f"{path}: not valid YAML ({short(str(e))})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    if "base_dir" in data:
        raise ConfigError(f"{path}: base_dir: unknown key")
    try:
        return Config(**data, base_dir=path.resolve().parent)
    except ValidationError as e:
        raise ConfigError(f"{path}: {_describe(e)}") from None
    except TypeError as e:
        raise ConfigError(f"{path}: {e}") from None
