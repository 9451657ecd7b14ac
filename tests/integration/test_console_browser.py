"""`strom console` in a real browser (Debian's headless Chromium through chromium-driver) against
a real three-node cluster: SASL on every listener, the authorizer on, admin listeners for rates.

One cluster and one console process for the module; the browser signs in as `admin` (a super
user) for most tests and as `alice` (who may see one topic) for the ACL test. Screenshots go to
tests/integration/console_artifacts/ (git-ignored) for a person to look at after a run.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_harness import FAST, eventually, free_base_port

from strom.client import Consumer, Producer
from strom.client.acl import AclBinding, Operation, PatternType, Permission, ResourceType
from strom.client.admin import Admin, NewTopic
from strom.client.errors import AuthorizationFailedError
from strom.node.local_cluster import LocalCluster

pytestmark = pytest.mark.integration

NODE_PW = "n0de-Pw-c0ns0le-1"
ADMIN_PW = "adm1n-Pw-c0ns0le-2"
ALICE_PW = "al1ce-Pw-c0ns0le-3"
ARTIFACTS = Path(__file__).parent / "console_artifacts"
STROM = Path(sys.executable).parent / "strom"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
WAIT_S = 15


def _require_browser() -> None:
    if CHROMIUM and CHROMEDRIVER:
        return
    message = "console browser tests need Debian's chromium and chromium-driver (apt install)"
    if os.environ.get("CI") == "true":
        pytest.fail(message + ": they must be installed in CI (.ci/run)")
    pytest.skip(message)


class Env:
    def __init__(self, local: LocalCluster, url: str) -> None:
        self.local = local
        self.bootstrap = local.bootstrap()
        self.url = url

    def admin(self) -> Admin:
        return Admin(self.bootstrap, sasl_username="admin", sasl_password=ADMIN_PW,
                     request_timeout_ms=5_000)  # fmt: skip

    def producer(self) -> Producer:
        return Producer(self.bootstrap, sasl_username="admin", sasl_password=ADMIN_PW,
                        linger_ms=0, acks="all")  # fmt: skip

    def cli(self, *args: str) -> str:
        env = {**os.environ, "STROM_SASL_USERNAME": "admin", "STROM_SASL_PASSWORD": ADMIN_PW}
        done = subprocess.run(
            [str(STROM), *args, "--bootstrap-server", self.bootstrap],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    _require_browser()
    directory = tmp_path_factory.mktemp("console")
    local = LocalCluster(directory / "cluster")
    overrides = {
        **FAST,
        "listener.security.protocol.map": "PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
        "authorizer.enabled": "true",
        "super.users": "User:admin;User:node",
        "node.sasl.username": "node",
        "node.sasl.password": NODE_PW,
    }
    _, nodes = local.create(3, free_base_port(3), overrides, admin=True)
    local.up()
    console: subprocess.Popen[str] | None = None
    try:
        bootstrap = local.bootstrap()

        def ready() -> bool:
            with Admin(bootstrap, sasl_username="node", sasl_password=NODE_PW,
                       request_timeout_ms=3_000) as admin:  # fmt: skip
                described = admin.describe_cluster()
                return described.controller_id > 0 and not any(b.fenced for b in described.brokers)

        eventually(ready, 40, "three unfenced brokers over SASL")
        with Admin(bootstrap, sasl_username="node", sasl_password=NODE_PW) as admin:
            admin.create_user("admin", ADMIN_PW)
        with Admin(bootstrap, sasl_username="admin", sasl_password=ADMIN_PW) as admin:
            eventually(lambda: admin.describe_users(["admin"]), 10, "admin user everywhere")
            admin.create_user("alice", ALICE_PW)
        config = directory / "console.properties"
        config.write_text("security.protocol=SASL_PLAINTEXT\n")
        port = _free_port()
        log = directory / "console.log"
        with log.open("w") as out:
            console = subprocess.Popen(
                [str(STROM), "console", "--bootstrap-server", bootstrap, "--command-config",
                 str(config), "--port", str(port), "--admin-listener",
                 ",".join(n.admin_address for n in nodes)],
                stdout=out, stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip
        eventually(lambda: "strom console on http://" in log.read_text(), 20, "the console")
        yield Env(local, f"http://127.0.0.1:{port}")
    finally:
        if console is not None:
            console.terminate()
            console.wait(timeout=15)
            output = (directory / "console.log").read_text()
            assert "Traceback" not in output, output
        try:
            local.down(timeout_s=10)
        finally:
            for node in local.load()[1]:
                local.stop(node.node_id, kill=True)


@pytest.fixture(scope="module")
def browser(env: Env) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    assert CHROMIUM is not None and CHROMEDRIVER is not None
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,1000"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        sign_in(driver, env, "admin", ADMIN_PW)
        yield driver
    finally:
        driver.quit()


def sign_in(driver: Any, env: Env, user: str, password: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(env.url + "/login")
    driver.find_element(By.NAME, "username").send_keys(user)
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "#login button").click()


def wait(driver: Any, check: Any, what: str) -> Any:
    """Until `check(driver)` is truthy; on timeout, the page and its console log are kept."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, WAIT_S).until(lambda d: check(d), message=what)
    except TimeoutException:
        name = "".join(c if c.isalnum() else "-" for c in what)[:60]
        shot(driver, f"timeout-{name}")
        (ARTIFACTS / f"timeout-{name}.html").write_text(driver.page_source)
        (ARTIFACTS / f"timeout-{name}.log").write_text(
            "\n".join(str(e) for e in driver.get_log("browser"))
        )
        raise


def text(driver: Any, css: str) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def rows(driver: Any, css: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, css))


def shot(driver: Any, name: str) -> None:
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def no_stack_trace(driver: Any) -> None:
    source = driver.page_source
    assert "Traceback" not in source and 'File "' not in source


# ---- the tests -------------------------------------------------------------------------------


def test_overview_lists_three_brokers_and_live_rates(env: Env, browser: Any) -> None:
    with env.admin() as admin:
        admin.create_topics([NewTopic("warmup", 1, 3)])
    with env.producer() as producer:
        producer.send("warmup", b"x")  # some traffic for the rates
        producer.flush()
    browser.get(env.url + "/")
    brokers = rows(browser, "#brokers tbody tr")
    assert [b.get_attribute("data-broker") for b in brokers] == ["1", "2", "3"]
    assert all("running" in b.text for b in brokers)
    assert sum("active controller" in b.text for b in brokers) == 1
    assert all(" B" in b.text or "iB" in b.text for b in brokers)  # disk used, from DescribeLogDirs
    assert text(browser, "#quorum-leader") in {"1", "2", "3"}
    assert text(browser, "#user") == "admin"
    assert ADMIN_PW not in browser.page_source
    # Rates come from the admin listeners: a number replaces the placeholder once sampled.
    wait(browser, lambda d: text(d, "[data-rate=messages_in_per_s]") not in ("…", "—"),
         "a messages-in rate from the admin listeners")  # fmt: skip
    shot(browser, "overview")


def test_a_topic_created_with_the_cli_appears(env: Env, browser: Any) -> None:
    env.cli("topics", "create", "cli-orders", "--partitions", "2", "--replication-factor", "3")
    browser.get(env.url + "/topics")
    row = rows(browser, '#topics tr[data-topic="cli-orders"]')
    assert row and row[0].text.split()[:3] == ["cli-orders", "2", "3"]
    browser.get(env.url + "/topics/cli-orders")
    partitions = rows(browser, "#partitions tbody tr")
    assert len(partitions) == 2
    for p in partitions:
        cells = [c.text for c in p.find_elements("css selector", "td")]
        assert cells[1] in {"1", "2", "3"} and len(cells[2].split(",")) == 3
        assert cells[4] == "0" and cells[5] == "0"  # log start and high watermark
    shot(browser, "topic")


def test_sdk_json_records_are_pretty_printed(env: Env, browser: Any) -> None:
    with env.admin() as admin:
        admin.create_topics([NewTopic("json-orders", 1, 3)])
    documents = [{"order": i, "items": ["book", "pen"], "paid": i % 2 == 0} for i in range(3)]
    with env.producer() as producer:
        for doc in documents:
            producer.send("json-orders", json.dumps(doc, separators=(",", ":")).encode(),
                          key=f"customer-{doc['order']}".encode(), headers=[("source", b"sdk")])  # fmt: skip
        producer.send("json-orders", bytes(range(256)), key=b"binary")
        producer.flush()
    browser.get(env.url + "/topics/json-orders/messages")
    shown = [e.text for e in rows(browser, "#records pre.kind-json.value")]
    assert sorted(shown) == sorted(json.dumps(d, indent=2) for d in documents)
    # The binary value is a hexdump; keys and headers are text.
    hexdump = text(browser, '#records tr[data-offset="3"] pre.value')
    assert hexdump.startswith("00000000  00 01 02 03") and "kind-hex" in rows(
        browser, '#records tr[data-offset="3"] pre.value'
    )[0].get_attribute("class")
    assert "source: sdk" in text(browser, '#records tr[data-offset="0"]').replace("\n", " ")
    shot(browser, "messages")


def test_group_lag_matches_strom_groups_describe(env: Env, browser: Any) -> None:
    with env.admin() as admin:
        admin.create_topics([NewTopic("lagging", 3, 3)])
    with env.producer() as producer:
        for i in range(30):
            producer.send("lagging", f"m{i}".encode(), partition=i % 3)
        producer.flush()
    with Consumer(env.bootstrap, group_id="lag-group", auto_offset_reset="earliest",
                  sasl_username="admin", sasl_password=ADMIN_PW,
                  enable_auto_commit=False) as consumer:  # fmt: skip
        consumer.subscribe(["lagging"])
        got = 0
        deadline = time.monotonic() + 20
        while got < 7 and time.monotonic() < deadline:
            got += len(consumer.poll(500, max_records=7 - got))
        consumer.commit()
    assert got == 7
    described = json.loads(env.cli("groups", "describe", "lag-group", "--output", "json"))
    lags = {f"{o['topic']}:{o['partition']}": o["lag"] for o in described["offsets"]}
    expected = {tp: "—" if lag == "-" else str(lag) for tp, lag in lags.items()}
    assert len(expected) == 3
    browser.get(env.url + "/groups/lag-group")
    shown = {r.get_attribute("data-tp"): text(browser, f'tr[data-tp="{r.get_attribute("data-tp")}"] .lag')
             for r in rows(browser, "#offsets tbody tr")}  # fmt: skip
    assert shown == expected
    assert text(browser, "#total-lag") == str(sum(v for v in lags.values() if v != "-"))
    shot(browser, "group")


def test_live_tail_shows_a_record_produced_after_the_page_opened(env: Env, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    with env.admin() as admin:
        admin.create_topics([NewTopic("tailed", 2, 3)])
    browser.get(env.url + "/topics/tailed/messages")
    browser.find_element(By.ID, "tail-start").click()
    wait(browser, lambda d: d.find_element(By.ID, "tail-status").get_attribute("data-state")
         == "following", "the tail to follow")  # fmt: skip
    with env.producer() as producer:
        producer.send("tailed", b'{"event":"after-open"}', key=b"late")
        producer.flush()
    wait(browser, lambda d: '"event": "after-open"' in text(d, "#tail-records tbody"),
         "the new record in the tail")  # fmt: skip
    shot(browser, "tail")
    browser.find_element(By.ID, "tail-stop").click()


def test_reset_offsets_dry_run_changes_nothing(env: Env, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    with env.admin() as admin:
        before = admin.list_group_offsets("lag-group")
    assert before and any(o > 0 for o in before.values())
    browser.get(env.url + "/groups/lag-group")
    Select(browser.find_element(By.NAME, "strategy")).select_by_value("to-earliest")
    browser.find_element(By.CSS_SELECTOR, "#reset button").click()
    wait(browser, lambda d: rows(d, "#dry-run"), "the dry-run page")
    plan = {r.get_attribute("data-tp"): r.find_element(By.CSS_SELECTOR, ".new").text
            for r in rows(browser, "#plan tbody tr")}  # fmt: skip
    assert plan == {f"lagging:{p}": "0" for p in range(3)}
    shot(browser, "reset-dry-run")
    with env.admin() as admin:
        assert admin.list_group_offsets("lag-group") == before  # nothing changed
    browser.find_element(By.CSS_SELECTOR, "#execute button").click()
    wait(browser, lambda d: "Reset 3 committed offset(s)" in d.page_source, "the result")
    with env.admin() as admin:
        assert admin.list_group_offsets("lag-group") == {("lagging", p): 0 for p in range(3)}


def test_bad_input_gets_a_clear_message_never_a_stack_trace(env: Env, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    base = env.url + "/topics/json-orders/messages"
    browser.get(base + "?mode=offset&offset=abc")
    assert "offset must be a whole number, got 'abc'" in text(browser, "#error")
    no_stack_trace(browser)
    browser.get(base + "?mode=timestamp&timestamp=2999-01-01T00:00:00")
    assert "is in the future" in browser.page_source
    browser.get(base + "?mode=offset&offset=99999")
    assert "nothing at offset 99999 yet" in browser.page_source
    shot(browser, "bad-input")
    for size, expected in [(1_500_000, "the console produces at most"),
                           (3_000_000, "larger than the console accepts")]:  # fmt: skip
        browser.get(base)
        browser.execute_script(
            "document.querySelector('#produce textarea[name=value]').value = 'x'.repeat(arguments[0]);",
            size,
        )
        browser.find_element(By.CSS_SELECTOR, "#produce button").click()
        wait(browser, lambda d, e=expected: e in d.page_source, expected)
        no_stack_trace(browser)
    browser.get(env.url + "/topics/no-such-topic")
    assert "does not exist" in text(browser, "#error")


def test_an_unauthorized_user_does_not_see_a_topic(env: Env, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    with env.admin() as admin:
        admin.create_topics([NewTopic("secret-ledger", 1, 3), NewTopic("alice-orders", 1, 3)])
        admin.create_acls([AclBinding(ResourceType.TOPIC, "alice-orders", PatternType.LITERAL,
                                      "User:alice", "*", Operation.READ, Permission.ALLOW)])  # fmt: skip
    browser.find_element(By.CSS_SELECTOR, "header form button").click()  # sign out
    # The sign-out POST must be answered before the next page loads: a GET /login racing it
    # renders the old session's CSRF token, which the logout then ends (the form is then stale).
    wait(browser, lambda d: "/login" in d.current_url and not rows(d, "#user"), "signed out")
    sign_in(browser, env, "alice", "wr0ng-password")
    assert "refused that user name and password" in text(browser, "#error")
    assert "wr0ng-password" not in browser.page_source
    sign_in(browser, env, "alice", ALICE_PW)
    wait(browser, lambda d: rows(d, "#user"), "alice signed in")

    def alice_sees_her_topic(d: Any) -> bool:
        d.get(env.url + "/topics")
        return bool(rows(d, '#topics tr[data-topic="alice-orders"]'))

    wait(browser, alice_sees_her_topic, "alice's topic (ACLs reach every broker)")
    assert not rows(browser, '#topics tr[data-topic="secret-ledger"]')
    assert not rows(browser, '#topics tr[data-topic="cli-orders"]')
    assert ALICE_PW not in browser.page_source
    shot(browser, "alice-topics")
    browser.get(env.url + "/topics/secret-ledger")
    assert not rows(browser, "#partitions")
    assert "Not allowed" in browser.page_source
    browser.get(env.url + "/")
    assert "quorum is hidden" in browser.page_source


def test_describe_log_dirs_reports_each_brokers_logs(env: Env, browser: Any) -> None:
    """The SDK verb behind "disk used" and "log end": every broker, every replica, and a
    refusal for a user without DESCRIBE on the cluster."""
    with env.admin() as admin:
        admin.create_topics([NewTopic("sized", 2, 3)])
    with env.producer() as producer:
        for i in range(20):
            producer.send("sized", b"v" * 100, partition=i % 2)
        producer.flush()
    with env.admin() as admin:
        dirs = admin.describe_log_dirs(["sized"])
    assert sorted(d.broker_id for d in dirs) == [1, 2, 3] and all(d.error == "NONE" for d in dirs)
    assert all(d.total_bytes > 0 and 0 <= d.usable_bytes <= d.total_bytes for d in dirs)
    replicas = [p for d in dirs for p in d.partitions]
    assert (
        sorted((p.topic, p.partition) for p in replicas) == [("sized", 0)] * 3 + [("sized", 1)] * 3
    )
    leaders = [p for p in replicas if p.leader]
    assert sorted(p.partition for p in leaders) == [0, 1]
    for p in leaders:  # acks=all: the leader's log end is its high watermark, 10 records each
        assert p.log_end_offset == p.high_watermark == 10 and p.size_bytes > 1000
        assert p.offset_lag == 0 and p.log_start_offset == 0
    with (
        Admin(env.bootstrap, sasl_username="alice", sasl_password=ALICE_PW) as alice,
        pytest.raises(AuthorizationFailedError),
    ):
        alice.describe_log_dirs()
