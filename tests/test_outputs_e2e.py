"""One replay with every output at once: relay, Wiegand, MQTT (real mosquitto) and metrics.

Prints the grant-to-output latencies it saw (decision to the first Wiegand
edge, to the MQTT subscriber); it asserts on what arrived, not on timings.
"""

from __future__ import annotations

import json
import threading

from gpiozero.pins.mock import MockFactory

from edge.camera import open_source
from edge.cards import set_card
from edge.daemon import Daemon
from edge.gallery import Gallery
from edge.voice import Voice, WavEngine
from edge.wiegand import Card, decode

from .conftest import PEOPLE, wait_for
from .helpers import Broker, Subscriber, free_port, needs_mosquitto
from .test_daemon import CLIP, config, enroll_photos, relay_states
from .test_metrics import scrape
from .test_outputs import falling_edges, wiegand_bits

pytestmark = needs_mosquitto


def test_relay_wiegand_mqtt_and_metrics_at_once(site, tmp_path, engine):
    broker = Broker(tmp_path / "broker")
    port = free_port()
    cfg = config(site, liveness={"mode": "off"},
                 door={"outputs": ("relay", "wiegand"), "name": "lobby"},
                 mqtt={"host": "127.0.0.1", "port": broker.port},
                 metrics={"listen": f"127.0.0.1:{port}"})
    enroll_photos(cfg, "lin_manuel_miranda", PEOPLE / "lin_manuel_miranda/lin1.png",
                  engine=engine)
    with Gallery(cfg.path(cfg.gallery.db)) as g:
        set_card(g, "lin_manuel_miranda", "101:20202", cfg.wiegand.format)
    sub = Subscriber(broker.port)
    factory = MockFactory()
    voice = Voice(cfg.voice, engine_factory=lambda: WavEngine(tmp_path / "speech"))
    daemon = Daemon(cfg, cfg.path(cfg.gallery.db), source=open_source(str(CLIP), cfg.camera),
                    voice=voice, pin_factory=factory, handle_signals=False)
    ready = threading.Event()
    scraped: dict[str, float] = {}

    def life() -> None:
        try:
            daemon.start()
            ready.set()
            daemon.run()
        finally:
            daemon.close()

    loop = threading.Thread(target=life)
    loop.start()
    try:
        assert ready.wait(120)
        assert wait_for(lambda: [e for e in sub.events() if e.get("decision") == "granted"], 120)
        assert wait_for(lambda: len(wiegand_bits(factory, cfg.wiegand)) == 26, 30)
        # Metrics are counted in batches off the frame loop: wait for both to land.
        assert wait_for(lambda: scrape(port).get("edge_door_unlocks_total") == 1, 30)
        wiegand_done = 'edge_output_delivery_seconds_count{output="wiegand"}'
        assert wait_for(lambda: scrape(port).get(wiegand_done) == 1, 30)
        scraped = scrape(port)
    finally:
        daemon.stop.set()
        loop.join(60)
        sub.close()
        broker.stop()
    grants = [e for e in sub.events() if e.get("decision") == "granted"]
    assert [e["name"] for e in grants] == ["lin_manuel_miranda"]
    grant = grants[0]
    assert relay_states(factory, cfg.door.pin) == [False, True, False]
    assert decode(wiegand_bits(factory, cfg.wiegand)) == Card(101, 20202)
    kinds = [json.loads(p)["event_type"] for p in sub.topic("lobby/access")]
    assert "granted" in kinds and set(kinds) <= {"granted", "denied", "unknown"}
    assert scraped['edge_decisions_total{decision="granted",reason="recognised"}'] == 1
    assert scraped['edge_output_delivery_seconds_count{output="wiegand"}'] == 1
    first_edge = min(falling_edges(factory.pin(cfg.wiegand.d0_pin))
                     + falling_edges(factory.pin(cfg.wiegand.d1_pin)))
    got_mqtt = next(t for t, topic, p, _ in sub.got
                    if topic.endswith("lobby/access") and b'"granted"' in p)
    frame_ms = scraped['edge_output_delivery_seconds_sum{output="wiegand"}'] * 1000
    print(f"\ngrant -> first Wiegand edge {(first_edge - grant['mono']) * 1000:.1f} ms; "
          f"whole Wiegand frame done {frame_ms:.1f} ms; "
          f"grant -> MQTT subscriber {(got_mqtt - grant['mono']) * 1000:.1f} ms")
