"""MQTT and Home Assistant: events out, lock commands in, store-and-forward from the database.

Off unless ``mqtt.host`` is set; paho-mqtt is imported only then. Topics, with
``P = mqtt.topic_prefix/door.name``:

* ``P/availability``: ``online``/``offline`` (retained; ``offline`` is the last will).
* ``P/event``: every access, door and alarm event as JSON, QoS 1, in order.
* ``P/access``: the same access events for Home Assistant's ``event`` entity
  (``event_type`` granted, denied or unknown).
* ``P/lock/state``: ``LOCKED``/``UNLOCKED`` (retained); ``P/lock/set`` takes
  ``LOCK`` always, ``UNLOCK`` only with ``mqtt.allow_remote_unlock`` (both
  audited as admin events, the refusals too).
* ``P/last_person``, ``P/contact`` (``ON`` = open), ``P/lockout`` (``ON``/``OFF``), retained.

Home Assistant discovery configs (lock, event, sensor, two binary sensors) go
to ``mqtt.discovery_prefix`` on every (re)connect.

Store and forward: events are read from the gallery's ``events`` table, not
from memory, after a cursor (the last published id, in a small state file
beside the database). Each is published with QoS 1 and the cursor moves only
once the broker acknowledged it, so events while the broker is down are sent
later, in order, none lost (at least once: a crash between the ack and the
cursor write repeats one).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sqlite3
import threading
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["MqttBridge", "door_name"]

log = logging.getLogger(__name__)

#: Events published: what a subscriber acts on (admin changes stay in the log).
KINDS = ("access", "door", "alarm", "admin")
#: Idle poll, for events other processes (admin commands) write: the daemon's own
#: event writer wakes the forwarder after each commit (:meth:`MqttBridge.nudge`).
POLL_SECONDS = 0.5
ACK_SECONDS = 5.0


def door_name(cfg: Any) -> str:
    """``door.name``, else the host name (made topic-safe)."""
    name = cfg.door.name or socket.gethostname().split(".")[0] or "door"
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _password(cfg: Any) -> str | None:
    cred = os.environ.get("CREDENTIALS_DIRECTORY")
    if cred and (Path(cred) / "mqtt-password").is_file():
        return (Path(cred) / "mqtt-password").read_text().strip()
    if cfg.mqtt.password_file is None:
        return None
    path = cfg.path(cfg.mqtt.password_file)
    try:
        return path.read_text().strip()
    except OSError as e:
        raise ConfigError(f"mqtt.password_file {path}: cannot read ({e.strerror})") from None


class MqttBridge:
    """The daemon's MQTT client. ``daemon`` gives ``door``, ``outputs``, ``_event`` and state."""

    def __init__(self, cfg: Any, db_path: Path, daemon: Any) -> None:
        import paho.mqtt.client as mqtt

        self.cfg = cfg
        m = cfg.mqtt
        self.db_path = Path(db_path)
        self.daemon = daemon
        self.node = door_name(cfg)
        self.base = f"{m.topic_prefix}/{self.node}"
        self.cursor_path = self.db_path.with_name(self.db_path.name + ".mqtt-cursor")
        self.cursor = self._read_cursor()
        self.published = 0
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._state: dict[str, str] = {}
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"edge-access-{self.node}")
        if m.username:
            c.username_pw_set(m.username, _password(cfg))
        if m.tls:
            c.tls_set()
        c.will_set(f"{self.base}/availability", "offline", qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.reconnect_delay_set(1, 30)
        self.client = c
        c.connect_async(m.host, m.port, keepalive=30)
        c.loop_start()
        self._thread = threading.Thread(target=self._run, name="mqtt-forward", daemon=True)
        self._thread.start()
        log.info("mqtt: %s:%d as %s, from event %d on", m.host, m.port, self.base, self.cursor)

    # -- the cursor ----------------------------------------------------------------

    def _read_cursor(self) -> int:
        try:
            return int(self.cursor_path.read_text().strip())
        except (OSError, ValueError):
            pass
        start = self._max_id()  # first start: from now on, not the whole history
        self._write_cursor(start)
        return start

    def _write_cursor(self, value: int) -> None:
        tmp = self.cursor_path.with_name(self.cursor_path.name + ".tmp")
        tmp.write_text(f"{value}\n")
        os.replace(tmp, self.cursor_path)

    def _connect_db(self) -> sqlite3.Connection:
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=2.0)
        conn.row_factory = sqlite3.Row
        return conn

    def _max_id(self) -> int:
        try:
            conn = self._connect_db()
        except sqlite3.Error:
            return 0
        try:
            return int(conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0])
        except sqlite3.Error:
            return 0
        finally:
            conn.close()

    # -- paho callbacks (its network thread) ----------------------------------------

    def _on_connect(self, client: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        if getattr(rc, "is_failure", False):
            log.warning("mqtt: connection refused (%s)", rc)
            return
        log.info("mqtt: connected")
        client.subscribe(f"{self.base}/lock/set", qos=1)
        self._announce()
        client.publish(f"{self.base}/availability", "online", qos=1, retain=True)
        self._state.clear()  # a new session: publish every state again
        self._publish_states()
        self._connected.set()
        self._wake.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        self._connected.clear()
        if not self._stop.is_set():
            log.warning("mqtt: disconnected (%s); events wait in the database", rc)

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        command = msg.payload.decode("utf-8", "replace").strip().upper()
        d = self.daemon
        if command == "LOCK":
            if d.outputs is not None:
                d.outputs.lock()
            d._event("admin", reason="lock over MQTT", actor="mqtt")
        elif command == "UNLOCK":
            if not self.cfg.mqtt.allow_remote_unlock:
                log.warning("mqtt: remote unlock refused (mqtt.allow_remote_unlock is false)")
                d._event("admin", reason="remote unlock refused: not allowed", actor="mqtt")
            elif d.door is None:
                d._event("admin", reason="remote unlock refused: no relay", actor="mqtt")
            elif d.door.unlock():
                log.warning("mqtt: door unlocked by a remote command")
                d._event("admin", reason="remote unlock over MQTT", actor="mqtt")
        else:
            log.warning("mqtt: unknown command %r on %s", command[:40], msg.topic)

    # -- discovery and states --------------------------------------------------------

    def _announce(self) -> None:
        disc, b, node = self.cfg.mqtt.discovery_prefix, self.base, self.node
        device = {"identifiers": [f"edge-access-{node}"], "name": f"edge-access {node}",
                  "manufacturer": "edge-access", "model": "face door"}
        common = {"availability_topic": f"{b}/availability", "device": device}
        configs: dict[tuple[str, str], dict[str, Any]] = {
            ("lock", "lock"): {"name": "Door", "state_topic": f"{b}/lock/state",
                               "command_topic": f"{b}/lock/set", "payload_lock": "LOCK",
                               "payload_unlock": "UNLOCK", "state_locked": "LOCKED",
                               "state_unlocked": "UNLOCKED"},
            ("event", "access"): {"name": "Access", "state_topic": f"{b}/access",
                                  "event_types": ["granted", "denied", "unknown"]},
            ("sensor", "last_person"): {"name": "Last person", "state_topic": f"{b}/last_person",
                                        "icon": "mdi:account"},
            ("binary_sensor", "contact"): {"name": "Door contact", "device_class": "door",
                                           "state_topic": f"{b}/contact"},
            ("binary_sensor", "lockout"): {"name": "Lockout", "device_class": "problem",
                                           "state_topic": f"{b}/lockout"},
        }
        for (component, obj), conf in configs.items():
            payload = {**common, **conf, "unique_id": f"edge-access-{node}-{obj}"}
            self.client.publish(f"{disc}/{component}/{node}/{obj}/config", json.dumps(payload),
                                qos=1, retain=True)

    def _publish_states(self) -> None:
        """Retained states that changed since last published (lock, contact, lockout)."""
        d = self.daemon
        door = d.door
        states = {
            "lock/state": "UNLOCKED" if door is not None and door.is_unlocked else "LOCKED",
            "lockout": "ON" if getattr(getattr(d, "decider", None), "lockout", None)
            and d.decider.lockout.locked else "OFF",
        }
        is_open = door.is_open if door is not None else None
        if is_open is not None:
            states["contact"] = "ON" if is_open else "OFF"
        for topic, value in states.items():
            if self._state.get(topic) != value:
                self._state[topic] = value
                self.client.publish(f"{self.base}/{topic}", value, qos=1, retain=True)

    # -- store and forward -------------------------------------------------------------

    def nudge(self) -> None:
        """New rows are in the events table (the event writer calls this after a commit)."""
        self._wake.set()

    def _run(self) -> None:
        """Block until nudged (or the idle poll), then forward what is new: never spin.

        Every wake-up takes the GIL from the frame loop, so there is one per
        committed batch of events, not a poll every few milliseconds.
        """
        conn: sqlite3.Connection | None = None
        while not self._stop.is_set():
            self._wake.wait(POLL_SECONDS)
            self._wake.clear()
            if not self._connected.is_set():
                continue
            try:
                if conn is None:
                    conn = self._connect_db()
                self._forward(conn)
                self._publish_states()
            except sqlite3.Error as e:
                log.debug("mqtt: events not read yet (%s)", e)
                if conn is not None:
                    conn.close()
                    conn = None
            except Exception:
                log.exception("mqtt: forwarding failed; retrying")
                self._stop.wait(1.0)
        if conn is not None:
            conn.close()

    def _forward(self, conn: sqlite3.Connection) -> None:
        rows = conn.execute(
            "SELECT * FROM events WHERE id > ? ORDER BY id LIMIT 200", [self.cursor]
        ).fetchall()
        for row in rows:
            if self._stop.is_set() or not self._connected.is_set():
                return
            ev = {k: row[k] for k in row.keys() if row[k] is not None}  # noqa: SIM118 (a Row)
            if isinstance(ev.get("detail"), str):
                ev["detail"] = json.loads(ev["detail"])
            if ev["kind"] in KINDS and not self._publish_event(ev):
                return  # not acknowledged: the cursor stays, it is sent again later
            self.cursor = int(row["id"])
            self._write_cursor(self.cursor)

    def _publish_event(self, ev: dict[str, Any]) -> bool:
        info = self.client.publish(f"{self.base}/event", json.dumps(ev), qos=1)
        extra = []
        if ev["kind"] == "access":
            kind = "unknown" if ev.get("name") is None else ev.get("decision", "denied")
            extra.append(("access", json.dumps({"event_type": kind, **ev}), False))
            if ev.get("name") is not None:
                extra.append(("last_person", ev["name"], True))
        elif ev["kind"] == "door" and ev.get("reason") in ("unlocked", "locked"):
            self._state["lock/state"] = ev["reason"].upper()
            extra.append(("lock/state", ev["reason"].upper(), True))
        elif ev["kind"] == "alarm" and "lockout" in (ev.get("detail") or {}):
            on = "ON" if ev["detail"]["lockout"] == "started" else "OFF"
            self._state["lockout"] = on
            extra.append(("lockout", on, True))
        infos = [info] + [self.client.publish(f"{self.base}/{t}", p, qos=1, retain=r)
                          for t, p, r in extra]
        try:
            for i in infos:
                i.wait_for_publish(ACK_SECONDS)
        except (RuntimeError, ValueError):  # disconnected under us
            return False
        return all(i.is_published() for i in infos)

    def close(self) -> None:
        """Say offline (retained), stop forwarding and disconnect. Idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._wake.set()
        self._thread.join(ACK_SECONDS + 1)
        if self._connected.is_set():
            with contextlib.suppress(RuntimeError, ValueError):
                self.client.publish(
                    f"{self.base}/availability", "offline", qos=1, retain=True
                ).wait_for_publish(2.0)
        self.client.disconnect()
        self.client.loop_stop()
