"""MQTT against a real mosquitto broker the test starts, with a real paho subscriber.

The broker keeps sessions across a restart (persistence on), so the
subscriber, whose session is not clean, gets what was published while it was
reconnecting; the daemon's own events wait in the gallery meanwhile.
"""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from pathlib import Path

from gpiozero.pins.mock import MockFactory

from edge.daemon import Daemon
from edge.gallery import Gallery
from edge.voice import Voice, WavEngine

from .conftest import FACES, wait_for
from .helpers import Subscriber, edge_run, needs_mosquitto
from .test_daemon import config, enroll_photos, folder_of, relay_states

pytestmark = needs_mosquitto

PHOTO = FACES / "spoof/image_T1.jpg"


def mqtt_config(site: Path, port: int, **extra):
    mq = {"host": "127.0.0.1", "port": port, **extra}
    return config(site, liveness={"mode": "off"}, mqtt=mq, door={"name": "front"})


def test_events_discovery_store_and_forward_and_commands(site, tmp_path, engine, broker):
    cfg = mqtt_config(site, broker.port)
    enroll_photos(cfg, "her", PHOTO, engine=engine)
    sub = Subscriber(broker.port)
    factory = MockFactory()
    voice = Voice(cfg.voice, engine_factory=lambda: WavEngine(tmp_path / "speech"))
    daemon = Daemon(cfg, cfg.path(cfg.gallery.db), source=folder_of(tmp_path, "f", PHOTO, 10),
                    voice=voice, pin_factory=factory, handle_signals=False)
    started = threading.Event()

    def life() -> None:  # the gallery is used on the thread that opened it
        try:
            daemon.start()
            started.set()
            daemon.run()
        finally:
            daemon.close()

    loop = threading.Thread(target=life)
    loop.start()
    try:
        assert started.wait(120)
        # A grant reaches the subscriber as an event, an HA access event and states.
        assert wait_for(lambda: [e for e in sub.events() if e["kind"] == "access"], 60)
        assert wait_for(lambda: b"LOCKED" in sub.topic("/lock/state")[1:], 30)
        access = [e for e in sub.events() if e["kind"] == "access"]
        assert [(e["name"], e["decision"]) for e in access] == [("her", "granted")]
        assert json.loads(sub.topic("front/access")[0])["event_type"] == "granted"
        assert sub.topic("front/last_person") == [b"her"]
        assert b"UNLOCKED" in sub.topic("/lock/state")
        assert sub.topic("front/availability")[-1] == b"online"
        for obj in ("lock/front/lock", "event/front/access", "sensor/front/last_person",
                    "binary_sensor/front/contact", "binary_sensor/front/lockout"):
            conf = json.loads(sub.topic(f"homeassistant/{obj}/config")[0])
            assert conf["unique_id"].startswith("edge-access-front-")
            assert conf["availability_topic"] == "edge-access/front/availability"
        lat_ms = (next(t for t, tp, _, _ in sub.got if tp.endswith("front/access"))
                  - access[0]["mono"]) * 1000
        print(f"grant event to subscriber: {lat_ms:.1f} ms")

        # The broker goes away; the door keeps working and its events wait in the gallery.
        broker.stop()
        assert wait_for(lambda: not daemon.mqtt._connected.is_set(), 30)
        published_before = len(sub.events())
        for _ in range(3):
            daemon.door.unlock(0.05)
            assert wait_for(lambda: not daemon.door.is_unlocked, 10)
        daemon.events.flush(10)
        with Gallery(cfg.path(cfg.gallery.db)) as g:
            waiting = sorted(g.events(kind="door"), key=lambda e: e.id)[-6:]
        assert [e.reason for e in waiting] == ["unlocked", "locked"] * 3

        broker.start()  # same port: both clients reconnect by themselves
        assert wait_for(lambda: len(sub.events()) >= published_before + 6, 60)
        time.sleep(0.5)
        evs = sub.events()
        ids = [e["id"] for e in evs]
        assert ids == sorted(set(ids)), "out of order or repeated"
        assert [e["reason"] for e in evs if e["kind"] == "door"][-6:] == ["unlocked",
                                                                          "locked"] * 3
        # Discovery re-announced on the reconnect.
        assert wait_for(lambda: len(sub.topic("homeassistant/lock/front/lock/config")) >= 2, 30)
        assert daemon.mqtt.cursor == max(ids)

        # Commands: lock always; unlock refused unless allowed; both audited.
        sub.client.publish("edge-access/front/lock/set", "UNLOCK", qos=1)
        sub.client.publish("edge-access/front/lock/set", "LOCK", qos=1)
        assert wait_for(lambda: len([e for e in sub.events() if e["kind"] == "admin"]) == 2, 30)
        admin = [e for e in sub.events() if e["kind"] == "admin"]
        assert [e["reason"] for e in admin] == ["remote unlock refused: not allowed",
                                                "lock over MQTT"]
        assert all(e["actor"] == "mqtt" for e in admin)
    finally:
        daemon.stop.set()
        loop.join(60)
    assert wait_for(lambda: sub.topic("front/availability")[-1:] == [b"offline"], 10)
    sub.close()
    # Only the grant and the three test pulses ever unlocked the relay: not the refused UNLOCK.
    assert relay_states(factory, cfg.door.pin) == [False, *[True, False] * 4]


def test_remote_unlock_when_allowed_and_last_will_on_a_killed_daemon(site, tmp_path, broker):
    text = (site / "config.yaml").read_text()
    text = text.replace("host: null", "host: 127.0.0.1").replace("port: 1883",
                                                                 f"port: {broker.port}")
    text = text.replace("allow_remote_unlock: false", "allow_remote_unlock: true")
    text = text.replace("  name: null ", "  name: side ")
    (site / "config.yaml").write_text(text)
    sub = Subscriber(broker.port)
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        shutil.copyfile(PHOTO, frames / f"{i}.jpg")
    proc = edge_run(site, "--source", str(frames), "--liveness", "off")
    try:
        assert wait_for(lambda: sub.topic("side/availability")[-1:] == [b"online"], 60)
        sub.client.publish("edge-access/side/lock/set", "UNLOCK", qos=1)
        assert wait_for(lambda: b"UNLOCKED" in sub.topic("side/lock/state"), 30)
        assert wait_for(lambda: [e for e in sub.events() if e["kind"] == "admin"], 30)
        admin = [e for e in sub.events() if e["kind"] == "admin"]
        assert admin[0]["reason"] == "remote unlock over MQTT" and admin[0]["actor"] == "mqtt"
        proc.send_signal(signal.SIGKILL)  # no goodbye: the broker sends the last will
        proc.wait(10)
        assert wait_for(lambda: sub.topic("side/availability")[-1:] == [b"offline"], 30)
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close()
