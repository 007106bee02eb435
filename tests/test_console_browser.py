"""The console in a real browser: Debian's headless Chromium, a real uvicorn, a real Redis.

An operator signs in, kills a flag with a reason, and another process built on
the same Redis serves the flag killed; the audit page shows the record. A
forged CSRF token and an action without a session are refused and change
nothing. Each page is captured under the test's tmp dir (and into
``docs/_static/`` with ``TIPKIT_UPDATE_SCREENS=1``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.browser_support import headless_chromium
from tests.console_support import TOKEN, SearchRollout, console_server, csrf_of
from tests.ops_support import DOC, App, unique_prefix

from tipkit import audit, registry
from tipkit.console import create_app
from tipkit.ops import Operator
from tipkit.ratelimit import TokenBucket
from tipkit.testing import FakeClock

pytestmark = pytest.mark.redis

STATIC = Path(__file__).resolve().parent.parent / "docs" / "_static"

OTHER_PROCESS = """
import json, sys
from tipkit.flags import Flags
from tipkit.stores import RedisStore
url, prefix, doc = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
store = RedisStore(url, prefix=prefix, timeout=5.0)
flags = Flags.from_dict(doc, store=store, refresh_interval=0)
detail = flags.evaluate("checkout", {"targeting_key": "u1"})
print(json.dumps({"variant": detail.variant, "killed": sorted(flags.killed())}))
store.close()
"""


class Site:
    """The application on Redis, its console, a browser and where screenshots go."""

    def __init__(
        self,
        url: str,
        redis_url: str,
        prefix: str,
        store: Any,
        driver: Any,
        shots: Path,
    ) -> None:
        self.url = url
        self.redis_url = redis_url
        self.prefix = prefix
        self.store = store
        self.driver = driver
        self.shots = shots

    def open(self, path: str) -> Any:
        self.driver.get(self.url + path)
        return self.driver

    def shot(self, page: str) -> Path:
        path = self.shots / f"console-{page}.png"
        self.driver.save_screenshot(str(path))
        if os.environ.get("TIPKIT_UPDATE_SCREENS") == "1":
            shutil.copyfile(path, STATIC / path.name)
        return path

    def sign_in(self, actor: str = "alice") -> None:
        from selenium.webdriver.common.by import By

        d = self.open("/login")
        d.find_element(By.NAME, "actor").send_keys(actor)
        d.find_element(By.NAME, "token").send_keys(TOKEN)
        self.submit(d.find_element(By.ID, "sign-in"))
        assert d.find_elements(By.ID, "actor"), d.page_source[-1500:]
        assert actor == d.find_element(By.ID, "actor").text

    def act(self, form_id: str, reason: str) -> Any:
        from selenium.webdriver.common.by import By

        assert self.driver.find_elements(By.ID, form_id), self.driver.page_source[
            -2500:
        ]
        form = self.driver.find_element(By.ID, form_id)
        form.find_element(By.NAME, "reason").send_keys(reason)
        self.submit(form.find_element(By.TAG_NAME, "button"))
        return self.driver

    def submit(self, button: Any) -> None:
        """Click *button* and wait until the page the POST answers with is loaded.

        The click only starts the request: a lookup made at once may find (and
        then lose) an element of the old page.
        """
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.wait import WebDriverWait

        old = self.driver.find_element(By.TAG_NAME, "html")
        button.click()
        wait = WebDriverWait(self.driver, 60)
        wait.until(expected_conditions.staleness_of(old))
        wait.until(
            lambda d: d.execute_script("return document.readyState") == "complete"
        )

    def h1(self) -> str:
        from selenium.webdriver.common.by import By

        return str(self.driver.find_element(By.TAG_NAME, "h1").text)


def _browser() -> Any:
    driver = headless_chromium()
    driver.set_window_size(1280, 1000)
    return driver


@pytest.fixture(scope="module")
def site(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    from tipkit.stores import RedisStore

    clock = FakeClock()
    prefix = unique_prefix()
    app_store = RedisStore(redis_url, prefix=prefix, timeout=5.0)
    console_store = RedisStore(redis_url, prefix=prefix, timeout=5.0)
    app = App(app_store, clock)
    search = SearchRollout(app_store, clock)
    search.play()
    bucket = TokenBucket("api", rate=50, capacity=100, store=app_store, clock=clock)
    regs = [
        registry.register_limit(bucket, app_store, rate=50, capacity=100, keyed=False)
    ]
    driver = _browser()
    try:
        with console_server(create_app(console_store, token=TOKEN, clock=clock)) as url:
            shots = tmp_path_factory.mktemp("console-screenshots")
            yield Site(url, redis_url, prefix, app_store, driver, shots)
    finally:
        driver.quit()
        del regs, search, app
        keys = list(app_store.client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            app_store.client.delete(*keys)
        console_store.close()
        app_store.close()


def _other_process(site: Site) -> dict[str, Any]:
    done = subprocess.run(  # noqa: S603  # our own interpreter and script
        [sys.executable, "-c", OTHER_PROCESS, site.redis_url, site.prefix,
         json.dumps(DOC)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_kill_clicked_in_the_browser_is_served_killed_by_another_process_and_audited(
    site: Site,
) -> None:
    """Sign in, kill checkout with a reason: another process serves it off; the log shows it."""
    from selenium.webdriver.common.by import By

    assert [] == _other_process(site)["killed"]
    site.sign_in("alice")
    site.open("/flags")
    d = site.act("kill-checkout", "5xx from checkout")
    assert "killed" == d.find_element(By.CSS_SELECTOR, "#state-checkout .tag").text
    assert d.find_element(By.ID, "done").text.startswith("done: audit record ")
    assert d.find_elements(By.ID, "revive-checkout")
    site.shot("flags")
    assert {"variant": "off", "killed": ["checkout"]} == _other_process(site)
    d = site.open("/audit?target=checkout")
    row = d.find_element(By.CSS_SELECTOR, "tbody tr").text
    assert "alice" in row
    assert "flag.kill" in row
    assert "5xx from checkout" in row
    site.open("/audit")
    site.shot("audit")
    (rec,) = audit.read(site.store, target="flag:checkout", actor="alice")
    assert ({"killed": False}, {"killed": True}) == (rec.before, rec.after)


def test_every_page_shows_its_area_and_is_captured(site: Site) -> None:
    """Rollouts chart the judge's points, breakers open from a button, limits list."""
    from selenium.webdriver.common.by import By

    d = site.open("/rollouts")
    card = d.find_element(By.ID, "rollout-search")
    assert 3 == len(card.find_elements(By.CSS_SELECTOR, "svg.chart circle.canary"))
    assert "rolled_back" == card.find_element(By.CLASS_NAME, "status").text
    timeline = [li.text for li in card.find_elements(By.CSS_SELECTOR, ".timeline li")]
    assert ["10%", "25%", "50%", "100%"] == timeline
    d.execute_script("arguments[0].scrollIntoView()", card)
    site.shot("rollouts")
    site.sign_in("bob")
    site.open("/breakers")
    d = site.act("open-payments", "provider incident")
    state = d.find_element(By.CSS_SELECTOR, "#breaker-payments .tag").text
    assert "forced_open" == state
    assert "provider incident" in d.find_element(By.ID, "breaker-payments").text
    site.shot("breakers")
    d = site.open("/limits")
    assert "api" in d.find_element(By.CSS_SELECTOR, "tbody").text
    site.shot("limits")


def test_a_forged_csrf_token_or_no_session_is_refused_and_nothing_changes(
    site: Site,
) -> None:
    """In the browser and over HTTP: forged CSRF is 403, no session is 401; no write, no record."""
    from selenium.webdriver.common.by import By

    op = Operator(site.store, actor="test")
    count = len(audit.read(site.store))
    site.sign_in("mallory")
    d = site.open("/flags")
    field = d.find_element(By.CSS_SELECTOR, "#kill-search input[name=csrf]")
    nonce = field.get_attribute("value").split(".")[0]
    d.execute_script("arguments[0].value = arguments[1]", field, f"{nonce}.{'0' * 64}")
    site.act("kill-search", "forged")
    assert "Refused" == site.h1()
    assert "CSRF" in d.find_element(By.ID, "error").text
    session = d.get_cookie("tipkit_console_session")["value"]
    d.delete_cookie("tipkit_console_session")
    d = site.open("/flags")
    assert not d.find_elements(By.ID, "kill-search")  # no session, no button
    with httpx.Client(base_url=site.url, timeout=30) as client:
        csrf = csrf_of(client.get("/login").text)
        form = {"csrf": csrf, "kind": "flag", "verb": "kill", "target": "search",
                "reason": "no session"}  # fmt: skip
        assert 401 == client.post("/act", data=form).status_code
        client.cookies.set("tipkit_console_session", session)
        forged = {**form, "csrf": f"{csrf.split('.')[0]}.{'0' * 64}"}
        assert 403 == client.post("/act", data=forged).status_code
    assert not op.flag("search")["killed"]
    assert count == len(audit.read(site.store))
