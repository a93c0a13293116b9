"""The console's pages in a real headless Chromium (Debian's chromium + chromium-driver, Selenium).

Nothing downloads a browser: the executables are Debian's, found on PATH.
Where they cannot be had the tests are skipped, loudly (a warning naming
what to install); anything else missing fails. The network of a test
machine is closed, so Chromium runs with every background fetch off and a
fresh profile. Screenshots of the live view (a face boxed and named), the
people page and the events page are kept under build/test-artifacts/.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest

from .console_site import artifacts, edge, start
from .console_site import wait_until as _wait_until


def wait_until(predicate, timeout: float = 60.0, what: str = ""):
    """console_site.wait_until, where a page being replaced (a form posted, a
    reload) or a dialog not open yet means "not yet", not a failure."""
    from selenium.common.exceptions import (
        NoAlertPresentException,
        NoSuchElementException,
        StaleElementReferenceException,
    )

    return _wait_until(predicate, timeout, what, ignoring=(
        NoAlertPresentException, NoSuchElementException, StaleElementReferenceException))

INSTALL = "apt-get install chromium chromium-driver (make test-deps does it as root)"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000")


def chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)
    return (browser, driver) if browser and driver else None


def skip_loudly() -> None:
    """The one allowed skip: no chromium here. A warning in the summary says what to install."""
    warnings.warn(f"console browser tests SKIPPED: chromium is missing; {INSTALL}",
                  pytest.PytestWarning, stacklevel=2)
    pytest.skip(f"chromium/chromedriver missing: {INSTALL}")


@pytest.fixture(scope="module")
def door(tmp_path_factory):
    if chromium() is None:  # before a daemon is started for nothing
        skip_loudly()
    d = start(tmp_path_factory)
    yield d
    out = d.stop()
    assert "Traceback" not in out, out


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    found = chromium()
    if found is None:
        skip_loudly()
        return
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = found[0]
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    drv = webdriver.Chrome(service=Service(found[1]), options=opts)
    drv.set_page_load_timeout(120)
    yield drv
    drv.quit()


def shot(drv, name: str) -> Path:
    path = artifacts() / f"console-{name}.png"
    drv.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


def texts(drv, selector: str) -> list[str]:
    js = "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.innerText)"
    return drv.execute_script(js, selector)


def login(drv, door, page: str) -> None:
    from selenium.webdriver.common.by import By

    drv.get(door.url.rstrip("/") + page)
    if drv.find_elements(By.ID, "token"):
        drv.find_element(By.ID, "token").send_keys(door.token)
        drv.find_element(By.ID, "login").click()
    wait_until(lambda: drv.execute_script("return document.body.dataset.page") != "login",
               60, "the login to go through")


def test_login_then_the_live_view_boxes_and_names_the_face(door, browser):
    from selenium.webdriver.common.by import By

    drv = browser
    drv.get(door.url.rstrip("/") + "/live")
    assert drv.find_elements(By.ID, "token"), "no login form without a session"
    assert not drv.find_elements(By.ID, "frame")
    login(drv, door, "/live")
    assert drv.execute_script("return document.body.dataset.page") == "live"

    def named_face():
        rows = texts(drv, "#faces tbody tr.face")  # rebuilt with every frame: read in one go
        return any("barack_obama" in r for r in rows) and rows

    wait_until(named_face, 90, "Obama named in the faces table")
    ms = wait_until(lambda: drv.execute_script(
        "return document.getElementById('latency').dataset.ms"), 30, "a latency figure")
    print(f"camera -> browser latency as the page measured it: {float(ms):.0f} ms")
    img = drv.find_element(By.ID, "frame")
    assert drv.execute_script("return arguments[0].naturalWidth", img) == 640
    wait_until(lambda: drv.find_element(By.ID, "camera").text == "streaming", 30, "camera state")
    wait_until(lambda: texts(drv, "#decisions tbody tr"), 90, "a decision on the page")
    # The picture itself holds the box: the screenshot is the artefact an installer would see.
    wait_until(named_face, 30, "Obama named again for the screenshot")
    assert shot(drv, "live").stat().st_size > 10_000
    # The cookie the page runs on is not readable by scripts.
    assert "edge_console" not in drv.execute_script("return document.cookie")


def test_people_page_disable_and_remove_with_confirmation(door, browser):
    from selenium.webdriver.common.by import By

    edge(door.site, "enroll", "alex_lacamoire",
         str(Path(door.obama).parent.parent / "alex_lacamoire" / "alex1.jpg"))
    drv = browser
    login(drv, door, "/people")
    row = 'tr[data-name="alex_lacamoire"]'
    drv.find_element(By.CSS_SELECTOR, f"{row} button[name=do]").click()
    wait_until(lambda: "disabled" in drv.find_element(By.CSS_SELECTOR, row).text, 30,
               "alex disabled on the page")
    assert "alex_lacamoire: disabled" in drv.find_element(By.ID, "message").text
    shot(drv, "people")
    # Remove asks first; dismissing keeps them.
    drv.find_element(By.CSS_SELECTOR, f"{row} form[data-confirm] button").click()
    wait_until(lambda: drv.switch_to.alert, 10, "the confirmation").dismiss()
    assert drv.find_elements(By.CSS_SELECTOR, row)
    drv.find_element(By.CSS_SELECTOR, f"{row} form[data-confirm] button").click()
    wait_until(lambda: drv.switch_to.alert, 10, "the confirmation").accept()
    wait_until(lambda: not drv.find_elements(By.CSS_SELECTOR, row), 30, "alex gone")
    assert "alex_lacamoire" not in edge(door.site, "list").stdout
    events = edge(door.site, "events").stdout.splitlines()
    assert any(" disable alex_lacamoire" in e and e.endswith("by console") for e in events)
    assert any(" remove alex_lacamoire" in e and e.endswith("by console") for e in events)


def test_events_page_filters_and_links_the_csv(door, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    drv = browser
    login(drv, door, "/events")
    wait_until(lambda: (drv.refresh() or True) and drv.find_elements(
        By.CSS_SELECTOR, "#events tr.access"), 90, "an access event")
    Select(drv.find_element(By.NAME, "kind")).select_by_visible_text("access")
    drv.find_element(By.CSS_SELECTOR, "#filter button").click()
    wait_until(lambda: "kind=access" in drv.current_url, 30, "the filter applied")
    rows = drv.find_elements(By.CSS_SELECTOR, "#events tbody tr")
    kinds = {r.get_attribute("class") for r in rows}
    assert kinds == {"access"}
    assert "kind=access" in drv.find_element(By.ID, "csv").get_attribute("href")
    shot(drv, "events")


def test_enroll_page_shows_live_quality(door, browser):
    from selenium.webdriver.common.by import By

    drv = browser
    login(drv, door, "/people/enroll")
    wait_until(lambda: "px between the eyes" in drv.find_element(By.ID, "q-size").text, 60,
               "the size of the face")
    assert "sharpness" in drv.find_element(By.ID, "q-blur").text
    assert "yaw" in drv.find_element(By.ID, "q-yaw").text
    shot(drv, "enroll")
