#!/usr/bin/env python3
"""Drives raftvisor's web dashboard (/ui) in headless Chromium against a
live cluster: the page's security headers, sign-in (a wrong token refused,
then an admin token), every view (cluster, services, one service, nodes,
KV with a key put through the form, events), scaling a service through
the page until its instances run, sign-out, and a read-only token whose
scale the server refuses (403) while the replica count stays as it was.

Every wait has an explicit deadline; nothing sleeps a fixed time. One line
is printed per step; any failure prints what was expected, saves
failure.png next to the screenshots and exits non-zero.

Usage: dashboard.py --url https://127.0.0.1:PORT --admin-token T
       --read-token T --screenshots DIR --service NS/NAME --node NAME
"""

import argparse
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
UI_TIMEOUT = 30
ROLLOUT_TIMEOUT = 120


class StepFailed(Exception):
    pass


def api_context():
    # The cluster's CA is private to the test run; the page itself is
    # checked by the browser (which is told to accept the certificate),
    # so the script's own reads skip verification too.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class Dashboard:
    def __init__(self, args):
        self.args = args
        self.url = args.url.rstrip("/")
        self.namespace, self.name = args.service.split("/", 1)
        self.shots = args.screenshots
        os.makedirs(self.shots, exist_ok=True)
        self.step_name = "start"
        self.driver = self.start_browser()

    # ---- browser ----

    def start_browser(self):
        options = Options()
        options.binary_location = CHROMIUM
        options.add_argument("--headless=new")
        # Test containers often run as root, where Chromium's sandbox
        # cannot start.
        options.add_argument("--no-sandbox")
        options.add_argument("--disable-dev-shm-usage")
        # The replicas' certificates are signed by a CA created for this
        # test run only, which the browser cannot know.
        options.add_argument("--ignore-certificate-errors")
        options.add_argument("--window-size=1400,900")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
        driver.set_page_load_timeout(60)
        driver.set_script_timeout(30)
        return driver

    def quit(self):
        try:
            self.driver.quit()
        except WebDriverException:
            pass

    # ---- helpers ----

    def step(self, name):
        self.step_name = name
        self.step_started = time.monotonic()

    def done(self, detail=""):
        took = time.monotonic() - self.step_started
        suffix = f": {detail}" if detail else ""
        print(f"ok   {self.step_name} ({took:.1f} s){suffix}", flush=True)

    def diagnostics(self):
        parts = []
        for element_id in ("sign-in-error", "view-error", "action-error", "action-result"):
            text = self.text(element_id)
            if text:
                parts.append(f"#{element_id}: {text}")
        try:
            parts.append(f"location: {self.driver.current_url}")
        except WebDriverException:
            pass
        return "; ".join(parts)

    def load(self, url, attempts=3):
        """Opens url; loads again when Chromium showed its own error page
        instead (ERR_NETWORK_CHANGED: other tests add and remove Docker
        networks on this machine while the page loads)."""
        for _ in range(attempts):
            self.driver.get(url)
            error_page = self.driver.current_url.startswith("chrome-error://") or bool(
                self.driver.find_elements(By.CSS_SELECTOR, "body.neterror")
            )
            if not error_page:
                return
        raise StepFailed(f"{url} did not load: Chromium showed its error page {attempts} times")

    def wait(self, what, condition, timeout=UI_TIMEOUT):
        """Waits until `condition(driver)` is truthy and answers it."""
        try:
            return WebDriverWait(
                self.driver,
                timeout,
                poll_frequency=0.2,
                ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
            ).until(condition)
        except TimeoutException:
            raise StepFailed(f"{what}: not true after {timeout} s ({self.diagnostics()})") from None

    def find(self, css):
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css):
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text(self, element_id):
        """The visible text of #element_id, "" when absent or hidden."""
        try:
            element = self.driver.find_element(By.ID, element_id)
            return element.text.strip() if element.is_displayed() else ""
        except (NoSuchElementException, StaleElementReferenceException, WebDriverException):
            return ""

    def click(self, element_id):
        self.wait(f"#{element_id} can be clicked", lambda d: self.clickable(element_id))
        self.driver.find_element(By.ID, element_id).click()

    def clickable(self, element_id):
        element = self.driver.find_element(By.ID, element_id)
        return element.is_displayed() and element.is_enabled()

    def type(self, element_id, value):
        self.wait(f"#{element_id} is shown", lambda d: d.find_element(By.ID, element_id).is_displayed())
        element = self.driver.find_element(By.ID, element_id)
        element.clear()
        element.send_keys(value)

    def loaded(self, view_id, timeout=UI_TIMEOUT):
        self.wait(
            f"#{view_id} rendered its data",
            lambda d: d.find_element(By.CSS_SELECTOR, f'#{view_id}[data-loaded="true"]'),
            timeout,
        )

    def shot(self, name):
        path = os.path.join(self.shots, name)
        if not self.driver.save_screenshot(path):
            raise StepFailed(f"could not save the screenshot {path}")

    def rows(self, css):
        return len(self.find_all(css))

    def number(self, element_id):
        text = self.text(element_id)
        try:
            return int(text)
        except ValueError:
            return None

    def api(self, path, token=None):
        request = urllib.request.Request(
            self.url + path,
            headers={"Authorization": f"Bearer {token or self.args.admin_token}"},
        )
        with urllib.request.urlopen(request, context=api_context(), timeout=15) as response:
            return response.status, dict(response.headers), response.read()

    def open_service(self):
        self.click("nav-services")
        self.loaded("view-services")
        selector = f'a[data-service="{self.args.service}"]'
        self.wait(f"the services table lists {self.args.service}", lambda d: d.find_element(By.CSS_SELECTOR, selector))
        self.find(selector).click()
        self.loaded("view-service")
        self.wait(
            f"{self.args.service} shows its replica count",
            lambda d: self.number("svc-replicas") is not None,
        )

    def sign_in(self, token, role):
        self.type("token", token)
        self.click("sign-in")
        self.wait(f"the header names the {role} role", lambda d: self.text("who-role") == role)

    # ---- the run ----

    def run(self):
        args = self.args

        self.step("the dashboard is served with its security headers")
        status, headers, body = self.api("/ui/")
        headers = {k.lower(): v for k, v in headers.items()}
        expect(status == 200, f"GET /ui/ answered {status}")
        expect(headers.get("content-type", "").startswith("text/html"), f"content type {headers.get('content-type')}")
        csp = headers.get("content-security-policy", "")
        expect("script-src 'self'" in csp and "frame-ancestors 'none'" in csp, f"Content-Security-Policy {csp!r}")
        expect(headers.get("x-content-type-options") == "nosniff", "X-Content-Type-Options")
        expect(headers.get("cache-control") == "no-cache", "Cache-Control")
        expect(b'id="sign-in"' in body, "the page holds the sign-in form")
        _, script_headers, _ = self.api("/ui/app.js")
        script_type = {k.lower(): v for k, v in script_headers.items()}.get("content-type", "")
        expect("javascript" in script_type, f"app.js is served as {script_type}")
        try:
            self.api("/ui/no-such-file.js")
            raise StepFailed("GET /ui/no-such-file.js did not answer 404")
        except urllib.error.HTTPError as error:
            expect(error.code == 404, f"GET /ui/no-such-file.js answered {error.code}")
        self.done(csp)

        self.step("a wrong token is refused at sign-in")
        self.load(self.url + "/ui/")
        self.wait("the sign-in form is shown", lambda d: d.find_element(By.ID, "token").is_displayed())
        self.type("token", "rvt_wrong.0000000000000000000000000000000000000000000000000000000000000000")
        self.click("sign-in")
        self.wait("the sign-in error says 401", lambda d: "401" in self.text("sign-in-error"))
        expect(not self.find("#shell").is_displayed(), "the dashboard stays hidden after a refused token")
        self.done(self.text("sign-in-error"))

        self.step("sign in with the admin token, its first request lost to a network change")
        # The page's next request fails as Chromium fails one when the
        # machine's networks change under it (a TypeError, no answer): a
        # read is asked once more, so sign-in still succeeds.
        self.driver.execute_script(
            "const real = window.fetch; let failed = false;"
            "window.fetch = (...args) => {"
            "  if (!failed) { failed = true; return Promise.reject(new TypeError('Failed to fetch')); }"
            "  return real(...args);"
            "};"
        )
        self.sign_in(args.admin_token, "admin")
        expect(self.driver.execute_script("return window.fetch !== undefined"), "fetch is in place")
        admin_name = self.text("who-name")
        expect(admin_name, "the header names the token")
        self.done(f"signed in as {admin_name}")

        self.step("cluster view")
        self.loaded("view-cluster")
        self.wait("the managers are listed", lambda d: self.rows("#members tr[data-member]") >= 1)
        self.wait("a leader is named", lambda d: self.text("cluster-leader").startswith("#"))
        managers = self.rows("#members tr[data-member]")
        self.shot("cluster.png")
        self.done(f"{managers} managers, leader {self.text('cluster-leader')}, supervision {self.text('cluster-supervision')}")

        self.step("services view")
        self.click("nav-services")
        self.loaded("view-services")
        self.wait(
            f"{args.service} is listed",
            lambda d: d.find_element(By.CSS_SELECTOR, f'a[data-service="{args.service}"]'),
        )
        self.shot("services.png")
        self.done(f"{self.rows('#services tr[data-row]')} services")

        self.step("service view")
        self.open_service()
        replicas = self.number("svc-replicas")
        self.wait(
            f"{replicas} instances are listed",
            lambda d: self.rows("#instances tr[data-instance]") == replicas,
        )
        self.shot("service.png")
        self.done(f"{args.service}: {replicas} replicas, {self.text('svc-running')} running")

        self.step("nodes view")
        self.click("nav-nodes")
        self.loaded("view-nodes")
        node_row = f'#nodes tr[data-node="{args.node}"]'
        self.wait(f"node {args.node} is listed", lambda d: d.find_element(By.CSS_SELECTOR, node_row))
        self.shot("nodes.png")
        self.done(self.find(node_row).text.replace("\n", " "))

        self.step("KV view: put ui-test/hello through the form")
        self.click("nav-kv")
        self.loaded("view-kv")
        self.type("kv-key", "ui-test/hello")
        self.type("kv-value", "world")
        self.click("kv-put")
        self.wait("the page says the key is stored", lambda d: "stored ui-test/hello" in self.text("action-result"))
        self.wait(
            "ui-test/hello is listed",
            lambda d: d.find_element(By.CSS_SELECTOR, '#kv-keys a[data-key="ui-test/hello"]'),
        )
        self.wait("its value reads world", lambda d: self.text("kv-value-view") == "world")
        status, _, raw = self.api("/v1/kv/ui-test/hello?raw")
        expect(status == 200 and raw == b"world", f"the API reads back {raw!r}")
        self.shot("kv.png")
        self.done("listed and read back through the API")

        self.step("scale the service through the page")
        self.open_service()
        before = self.number("svc-replicas")
        target = before + 1
        self.type("scale-replicas", str(target))
        self.click("scale-apply")
        self.wait(
            "the page confirms the scale",
            lambda d: f"scaled to {target}" in self.text("action-result"),
        )
        self.wait(
            f"the report and instances show {target} running replicas",
            lambda d: self.number("svc-replicas") == target
            and self.number("svc-desired") == target
            and self.number("svc-running") == target
            and self.rows("#instances tr[data-instance]") == target
            and self.rows('#instances tr[data-state="running"]') == target,
            ROLLOUT_TIMEOUT,
        )
        self.shot("scaled.png")
        self.done(f"{before} -> {target}")

        self.step("events view names who scaled")
        self.click("nav-events")
        self.loaded("view-events")
        needle = f"replicas {before} -> {target}"

        def scaled_row(driver):
            for row in driver.find_elements(By.CSS_SELECTOR, '#events tr[data-kind="service.scaled"]'):
                text = row.text
                if needle in text and admin_name in text:
                    return text
            return None

        row = self.wait(f"a service.scaled event by {admin_name}", scaled_row)
        self.shot("events.png")
        self.done(row.replace("\n", " "))

        self.step("sign out")
        self.click("sign-out")
        self.wait("the sign-in form is back", lambda d: d.find_element(By.ID, "token").is_displayed())
        expect(not self.find("#shell").is_displayed(), "the dashboard is hidden after sign-out")
        stored = self.driver.execute_script("return sessionStorage.getItem('raftvisor.token');")
        expect(stored is None, "the token is gone from session storage")
        self.done()

        self.step("a read-only token's scale is refused by the server")
        self.sign_in(args.read_token, "read")
        self.open_service()
        expect(self.number("svc-replicas") == target, f"the read token sees {target} replicas")
        self.wait("the read-role note is shown", lambda d: self.text("role-note"))
        self.type("scale-replicas", str(target + 1))
        self.click("scale-apply")
        self.wait(
            "the page shows the server's 403",
            lambda d: "403" in self.text("action-error") and "forbidden" in self.text("action-error"),
        )
        refusal = self.text("action-error")
        expect("may not" in refusal, f"the refusal is worded for the token: {refusal}")
        _, _, service = self.api(f"/v1/services/{self.namespace}/{self.name}")
        kept = json.loads(service)["spec"]["replicas"]
        expect(kept == target, f"the API says {kept} replicas after the refused scale, not {target}")
        self.wait("the page still shows the replica count", lambda d: self.number("svc-replicas") == target)
        self.shot("refused.png")
        self.done(refusal)

        self.step("the browser saw no policy violations or script errors")
        problems = []
        for entry in self.driver.get_log("browser"):
            message = entry.get("message", "")
            if "Content Security Policy" in message or "Uncaught" in message:
                problems.append(message)
        expect(not problems, "browser console:\n" + "\n".join(problems))
        self.done()


def expect(condition, message):
    if not condition:
        raise StepFailed(message)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="https://HOST:PORT of one replica")
    parser.add_argument("--admin-token", required=True)
    parser.add_argument("--read-token", required=True)
    parser.add_argument("--screenshots", required=True, help="directory for the PNG screenshots")
    parser.add_argument("--service", required=True, help="NS/NAME of a running service to scale")
    parser.add_argument("--node", required=True, help="name of a registered node")
    args = parser.parse_args()
    if "/" not in args.service:
        parser.error("--service must be NS/NAME")
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not os.path.exists(binary):
            print(f"FAIL {binary} is missing (apt-get install chromium chromium-driver)", file=sys.stderr)
            return 2

    dashboard = None
    try:
        dashboard = Dashboard(args)
        dashboard.run()
    except (StepFailed, WebDriverException, urllib.error.URLError, OSError, ValueError) as error:
        step = dashboard.step_name if dashboard else "starting the browser"
        print(f"FAIL {step}: {error}", file=sys.stderr, flush=True)
        if dashboard:
            try:
                dashboard.driver.save_screenshot(os.path.join(args.screenshots, "failure.png"))
                for entry in dashboard.driver.get_log("browser")[-20:]:
                    print(f"  console: {entry.get('message', '')}", file=sys.stderr)
            except WebDriverException:
                pass
        return 1
    finally:
        if dashboard:
            dashboard.quit()
    print("all dashboard checks passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
