"""berth's web UI in a real headless Chromium (Debian's chromium and chromium-driver, driven by
Selenium), against a running `berth serve` that tests/it/ui_browser.rs started and filled.

Environment (set by the Rust test):
  BERTH_URL        http://127.0.0.1:PORT
  BERTH_DATA       the server's data directory (to measure the blob store)
  ADMIN_PASSWORD   the administrator's password
  INDEX_DIGEST     the digest skopeo reported for team/app:multi (a two-platform index)
  PLATFORM_SIZES   "linux/amd64=1234,linux/arm64=5678": config plus layers of each platform
  DOCKER_IMAGE     an image in the Docker daemon, named for this registry (HOST/team/docker:1)
  OUT              where screenshots go

Every step asserts; the first failure ends the run with a message and exit status 1.
"""

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

URL = os.environ["BERTH_URL"]
HOST = URL.split("://", 1)[1]
DATA = os.environ["BERTH_DATA"]
ADMIN_PASSWORD = os.environ["ADMIN_PASSWORD"]
INDEX_DIGEST = os.environ["INDEX_DIGEST"]
PLATFORM_SIZES = dict(p.split("=") for p in os.environ["PLATFORM_SIZES"].split(","))
DOCKER_IMAGE = os.environ["DOCKER_IMAGE"]
OUT = os.environ["OUT"]

STEPS = []


def step(name):
    STEPS.append(name)
    print(f"-- {name}", flush=True)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def human_bytes(n):
    """The UI's byte formatting (core::gc::human_bytes)."""
    if n < 1024:
        return f"{n} B"
    v, units = n / 1024.0, ["KiB", "MiB", "GiB", "TiB"]
    i = 0
    while v >= 1024.0 and i + 1 < len(units):
        v /= 1024.0
        i += 1
    return f"{v:.1f} {units[i]}"


def blob_bytes():
    total = 0
    for root, _, files in os.walk(os.path.join(DATA, "blobs")):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


def start_driver(profile):
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        f"--user-data-dir={profile}",
    ]:
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


class Session:
    def __init__(self, driver):
        self.d = driver
        self.pages_seen = set()

    def go(self, path):
        self.d.get(URL + path)
        self.no_console_errors(path)

    def no_console_errors(self, where):
        # A refusal's own status (401 for a wrong password, 403 for a cross-site post) is
        # logged by Chromium as a failed load of the page itself: expected, not an error of
        # the page. Anything else (a script error, a CSP violation, a missing stylesheet,
        # script or icon) fails.
        page = self.d.current_url.split("#")[0]
        errors = [
            e
            for e in self.d.get_log("browser")
            if e["level"] == "SEVERE"
            and not (e["source"] == "network" and e["message"].split(" ")[0] == page)
        ]
        check(not errors, f"console errors (CSP violations among them) on {where}: {errors}")

    def text(self):
        return self.d.find_element(By.TAG_NAME, "body").text

    def source(self):
        return self.d.page_source

    def click(self, el):
        """Click something that loads a page, and wait until the new page is there."""
        old = self.d.find_element(By.TAG_NAME, "html")
        el.click()

        def old_page_gone(_driver):
            # Selenium's staleness_of waits for StaleElementReferenceException alone; while
            # the document is replaced, Chromium may instead answer "Node with given id does
            # not belong to the document". Either way the old page is gone.
            try:
                old.is_enabled()
                return False
            except WebDriverException:
                return True

        WebDriverWait(self.d, 30).until(old_page_gone)
        # While the new document replaces the old one a script may find neither: ask again.
        WebDriverWait(self.d, 30, ignored_exceptions=(WebDriverException,)).until(
            lambda d: d.execute_script("return document.readyState") == "complete"
        )
        self.no_console_errors(self.d.current_url)

    def fill(self, css, value):
        el = self.d.find_element(By.CSS_SELECTOR, css)
        el.clear()
        el.send_keys(value)

    def sign_in(self, name, password):
        self.go("/signin")
        self.fill("#name", name)
        self.fill("#password", password)
        self.click(self.d.find_element(By.CSS_SELECTOR, "form button[type=submit]"))

    def shoot(self, name):
        """A screenshot at desktop width and at 375 px; at 375 nothing may overflow sideways."""
        self.d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        self.d.save_screenshot(os.path.join(OUT, f"{name}-desktop.png"))
        self.d.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": 375, "height": 812, "deviceScaleFactor": 1, "mobile": True},
        )
        wide = self.d.execute_script(
            "return Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
        )
        self.d.save_screenshot(os.path.join(OUT, f"{name}-375.png"))
        self.d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        check(wide <= 375, f"{name}: the page is {wide} px wide at a 375 px screen")
        self.no_console_errors(name)


def attacker_server(target_port):
    """A page on another loopback port that auto-submits a token-creation form to berth."""
    script = "document.forms[0].submit();"

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/go.js":
                body, kind = script.encode(), "text/javascript"
            else:
                body = (
                    f'<!doctype html><form method="post" action="http://127.0.0.1:{target_port}/tokens">'
                    '<input name="name" value="stolen"><input name="repositories" value="**">'
                    '<input name="action" value="pull"><input name="action" value="push">'
                    '<input name="expires" value="never"></form><script src="/go.js"></script>'
                ).encode()
                kind = "text/html"
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def run(s):
    d = s.d
    port = int(HOST.rsplit(":", 1)[1])

    step("anonymous visitors land on the sign-in page")
    s.go("/")
    check("/signin" in d.current_url, f"not sent to sign-in: {d.current_url}")
    s.shoot("signin")

    step("a wrong password is refused, the right one signs in")
    s.sign_in("admin", "not-the-password")
    check("Wrong name or password." in s.text(), s.text())
    check(not d.get_cookies(), f"a cookie after a failed sign-in: {d.get_cookies()}")
    s.sign_in("admin", ADMIN_PASSWORD)
    check(d.current_url.rstrip("/") == URL, d.current_url)
    check("Dashboard" in s.text(), s.text())
    cookie = next(c for c in d.get_cookies() if c["name"] == "berth_session")
    check(cookie["httpOnly"] and cookie["sameSite"] == "Strict", f"cookie attributes: {cookie}")
    s.no_console_errors("dashboard")
    s.shoot("dashboard")

    step("sign out, and the old cookie no longer works")
    s.click(d.find_element(By.CSS_SELECTOR, "form.signout button"))
    check("/signin" in d.current_url, d.current_url)
    d.add_cookie({"name": "berth_session", "value": cookie["value"], "path": "/"})
    s.go("/repositories")
    check("/signin" in d.current_url, f"the ended session still works: {d.current_url}")
    s.sign_in("admin", ADMIN_PASSWORD)

    step("a page on another port cannot create a token (403, nothing created)")
    evil = attacker_server(port)
    try:
        d.get(f"http://127.0.0.1:{evil.server_port}/")
        deadline = time.time() + 10
        while str(port) not in d.current_url and time.time() < deadline:
            time.sleep(0.1)
        check(str(port) in d.current_url, f"the attack form did not submit: {d.current_url}")
        check("came from another site" in s.text(), f"not refused: {s.text()[:500]}")
    finally:
        evil.shutdown()
    s.go("/tokens")
    check("stolen" not in s.source(), "the cross-site form created a token")

    step("create a robot token; its secret is shown once; the docker login snippet works")
    s.fill("#token-name", "ci")
    s.fill("#token-repos", "team/*")
    d.find_element(By.CSS_SELECTOR, "input[name=action][value=push]").click()
    s.click(d.find_element(By.ID, "create-token"))
    secret = d.find_element(By.ID, "secret").text
    check(secret.startswith("berth_rt_"), f"no secret shown: {s.text()[:500]}")
    s.no_console_errors("token created")
    s.shoot("token-created")
    # What the copy button puts on the clipboard.
    d.execute_cdp_cmd(
        "Browser.grantPermissions",
        {"origin": URL, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]},
    )
    button = d.find_element(By.CSS_SELECTOR, "#snippet-docker-login + button.copy")
    check(button.is_displayed(), "the copy button is hidden")
    button.click()
    snippet = d.execute_async_script(
        "const done = arguments[0]; navigator.clipboard.readText().then(done, e => done('ERR ' + e));"
    )
    check(
        snippet == f"printf '%s' '{secret}' | docker login {HOST} -u ci --password-stdin",
        f"copied snippet: {snippet!r}",
    )
    with tempfile.TemporaryDirectory() as config:
        env = dict(os.environ, DOCKER_CONFIG=config)
        login = subprocess.run(["sh", "-c", snippet], env=env, capture_output=True, text=True)
        check(login.returncode == 0, f"docker login with the snippet failed: {login.stderr}")
        push = subprocess.run(
            ["docker", "push", DOCKER_IMAGE], env=env, capture_output=True, text=True
        )
        check(push.returncode == 0, f"docker push with the token failed: {push.stderr}")
    s.go("/tokens")
    check(secret not in s.source(), "the secret is still in the page after a reload")
    check("team/*: pull,push" in s.text(), s.text())
    d.refresh()
    check(secret not in s.source(), "the secret came back on refresh")
    s.shoot("tokens")

    step("the tag page shows the index's digest, both platforms, their sizes and the pusher")
    s.go("/repositories")
    s.shoot("repositories")
    s.go("/repositories/team/app?sort=name")
    src = s.source()
    check(f'title="{INDEX_DIGEST}"' in src, f"index digest {INDEX_DIGEST} not on the tag page")
    rows = d.find_elements(By.CSS_SELECTOR, "table.tags tbody tr")
    multi = next(r for r in rows if r.find_element(By.CSS_SELECTOR, ".tag-name").text == "multi")
    platforms = [li.text for li in multi.find_elements(By.CSS_SELECTOR, "ul.platforms li")]
    for name, size in PLATFORM_SIZES.items():
        want = f"{name} {human_bytes(int(size))}"
        check(want in platforms, f"platform {want!r} not in {platforms}")
    check("admin" in multi.find_element(By.CSS_SELECTOR, ".pushed-by").text, "pusher not shown")
    s.shoot("tags")
    s.click(multi.find_element(By.CSS_SELECTOR, "td[data-label=Digest] a"))
    check(INDEX_DIGEST in s.text(), "the manifest page does not name its digest")
    check("index (multi-platform)" in s.text(), s.text()[:400])
    s.no_console_errors("manifest page")
    s.shoot("manifest")

    step("delete several tags with the typed confirmation; the audit log shows them")
    s.go("/repositories/team/app?sort=name")
    for t in ["del-1", "del-2", "del-3"]:
        d.find_element(By.CSS_SELECTOR, f"input[name=tag][value='{t}']").click()
    button = d.find_element(By.ID, "delete-tags")
    check(not button.is_enabled(), "deleting three tags is possible before typing the name")
    s.fill("#confirm", "team/app")
    check(button.is_enabled(), "typing the name did not enable the delete")
    s.click(button)
    remaining = [e.text for e in d.find_elements(By.CSS_SELECTOR, ".tag-name")]
    check(
        not {"del-1", "del-2", "del-3"} & set(remaining) and "multi" in remaining,
        f"tags after the delete: {remaining}",
    )
    s.go("/audit?action=tag.delete")
    audit = s.text()
    for t in ["del-1", "del-2", "del-3"]:
        check(f"team/app:{t}" in audit, f"{t} not in the audit log: {audit[:800]}")
    s.shoot("audit")

    step("a retention draft preview shows reasons and deletes nothing; the run deletes it")
    s.go("/retention")
    policy = (
        'name = "ret"\nrepositories = ["ret/*"]\nmax_delete_share = 1.0\n'
        'min_keep = 1\n\n[keep]\ntag = "keep-.*"\n'
    )
    box = d.find_element(By.ID, "policy")
    box.clear()
    box.send_keys(policy)
    s.click(d.find_element(By.ID, "retention-preview"))
    preview = {
        r.find_element(By.CSS_SELECTOR, ".tag-name").text: (
            "delete" in r.get_attribute("class"),
            r.find_element(By.CSS_SELECTOR, ".reason").text,
        )
        for r in d.find_elements(By.CSS_SELECTOR, "table.decisions tbody tr")
    }
    check(preview.get("old-1", (False,))[0] and preview.get("old-2", (False,))[0], f"{preview}")
    check(not preview.get("keep-1", (True,))[0], f"keep-1 would go: {preview}")
    check(all(reason for _, reason in preview.values()), f"a decision without a reason: {preview}")
    check("tag" in preview["keep-1"][1], f"the keep reason does not name the rule: {preview}")
    s.shoot("retention-preview")
    s.go("/repositories/ret/app?sort=name")
    tags = [e.text for e in d.find_elements(By.CSS_SELECTOR, ".tag-name")]
    check({"old-1", "old-2", "keep-1"} <= set(tags), f"the preview deleted something: {tags}")
    s.go("/retention")
    box = d.find_element(By.ID, "policy")
    box.clear()
    box.send_keys(policy)
    s.click(d.find_element(By.ID, "retention-save"))
    s.click(d.find_element(By.ID, "retention-run"))
    ran = {
        r.find_element(By.CSS_SELECTOR, ".tag-name").text
        for r in d.find_elements(By.CSS_SELECTOR, "table.decisions tbody tr.delete-row")
    }
    previewed = {t for t, (gone, _) in preview.items() if gone}
    check(ran == previewed, f"the run deleted {ran}, the preview showed {previewed}")
    s.go("/repositories/ret/app?sort=name")
    tags = [e.text for e in d.find_elements(By.CSS_SELECTOR, ".tag-name")]
    check(set(tags) == {"keep-1"}, f"tags after the run: {tags}")
    s.shoot("retention")

    step("garbage collection: a dry run and a run add history rows; freed bytes match the disk")
    s.go("/gc")
    s.click(d.find_element(By.ID, "gc-dry-run"))
    check("(dry run)" in s.text(), s.text()[:400])
    before = blob_bytes()
    s.go("/gc")
    s.click(d.find_element(By.ID, "gc-run"))
    freed_shown = d.find_element(By.CSS_SELECTOR, "dd.freed").text
    freed_disk = before - blob_bytes()
    check(freed_disk > 0, "the run freed nothing on the disk")
    check(
        freed_shown == human_bytes(freed_disk),
        f"the report says {freed_shown}, the disk lost {human_bytes(freed_disk)}",
    )
    s.go("/gc")
    rows = d.find_elements(By.CSS_SELECTOR, "tr.gc-run")
    check(len(rows) >= 2, f"{len(rows)} history rows")
    s.shoot("gc")

    step("the other pages render without console errors at both widths")
    for path, name in [("/users", "users"), ("/", "dashboard-after")]:
        s.go(path)
        s.shoot(name)


def main():
    os.makedirs(OUT, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        driver = start_driver(profile)
        try:
            run(Session(driver))
        except Exception as e:  # noqa: BLE001 - report whatever failed, with the step
            shot = os.path.join(OUT, "failure.png")
            try:
                driver.save_screenshot(shot)
            except Exception:  # noqa: BLE001
                pass
            print(f"FAILED at step {STEPS[-1] if STEPS else '(start)'}: {e!r}", file=sys.stderr)
            traceback.print_exc()
            print(f"url: {driver.current_url}; screenshot: {shot}", file=sys.stderr)
            sys.exit(1)
        finally:
            driver.quit()
    print(json.dumps({"steps": STEPS}))


if __name__ == "__main__":
    main()
