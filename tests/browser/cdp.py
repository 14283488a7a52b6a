# SPDX-License-Identifier: LGPL-2.1-or-later
"""A small Chrome DevTools protocol client: Debian's chromium, headless, driven over a WebSocket
written here with the standard library only (RFC 6455, client side: masked frames, no
extensions), so that the browser test needs nothing from npm or PyPI."""

import base64
import json
import os
import select
import socket
import struct
import subprocess
import time
import urllib.request


class CDPError(Exception):
    pass


class WebSocket:
    def __init__(self, url):
        assert url.startswith("ws://")
        hostport, _, path = url[5:].partition("/")
        host, _, port = hostport.partition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise CDPError("WebSocket handshake: connection closed")
            head += chunk
        head, _, self.buf = head.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise CDPError("WebSocket handshake refused: " + head.decode(errors="replace"))

    def send(self, text):
        data = text.encode()
        header = bytes([0x81])
        n = len(data)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.sock.sendall(header + mask + masked)

    def _read(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            ready, _, _ = select.select([self.sock], [], [], left)
            if not ready:
                raise TimeoutError
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise CDPError("the browser closed the DevTools connection")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self, timeout):
        """One whole text message, or TimeoutError."""
        deadline = time.monotonic() + timeout
        message = b""
        while True:
            b0, b1 = self._read(2, deadline)
            n = b1 & 0x7f
            if n == 126:
                n = struct.unpack("!H", self._read(2, deadline))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read(8, deadline))[0]
            # Once a frame has begun, the rest of it comes: no timeout in its middle.
            payload = self._read(n, time.monotonic() + 60)
            opcode = b0 & 0x0f
            if opcode == 0x8:
                raise CDPError("the browser closed the DevTools connection")
            if opcode in (0x9, 0xa):
                continue
            message += payload
            if b0 & 0x80:
                return message.decode()


class Browser:
    """chromium --headless with its DevTools on a port of its own choosing, one page."""

    def __init__(self, workdir, log, width=1400, height=900):
        self.log = log
        self.profile = os.path.join(workdir, "chromium")
        os.makedirs(self.profile, exist_ok=True)
        # A port file left by an earlier browser would name a port nobody listens on.
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        if os.path.exists(port_file):
            os.unlink(port_file)
        self.stderr = open(os.path.join(workdir, "chromium.log"), "w")
        self.proc = subprocess.Popen(
            ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-dev-shm-usage", "--hide-scrollbars", "--remote-debugging-port=0",
             "--user-data-dir=" + self.profile, f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self.stderr, stderr=self.stderr, start_new_session=True)
        self.next_id = 0
        self.events = []
        self.ws = None
        try:
            self._connect()
        except BaseException:
            self.close()
            raise

    def _connect(self):
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + 120
        while not os.path.exists(port_file) or len(open(port_file).read().splitlines()) < 2:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise CDPError("chromium did not open its DevTools port (see chromium.log)")
            time.sleep(0.1)
        port = open(port_file).read().splitlines()[0]
        # The page target: /json/list, over plain HTTP.
        deadline = time.monotonic() + 60
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as r:
                targets = json.load(r)
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                break
            if time.monotonic() > deadline:
                raise CDPError("chromium has no page")
            time.sleep(0.1)
        self.ws = WebSocket(pages[0]["webSocketDebuggerUrl"])
        self.call("Runtime.enable")
        self.call("Page.enable")
        self.call("Log.enable")
        # A headless page has no window focus; keyboard tests need the focused element to be.
        self.call("Emulation.setFocusEmulationEnabled", enabled=True)

    def _event(self, msg):
        self._log_once = getattr(self, "_log_once", set())
        method = msg.get("method")
        params = msg.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.log(f"console.{params.get('type')}: {text}")
        elif method == "Runtime.exceptionThrown":
            d = params.get("exceptionDetails", {})
            self.log("exception: " + str(d.get("exception", {}).get("description", d.get("text"))))
        elif method == "Log.entryAdded":
            e = params.get("entry", {})
            line = f"log.{e.get('level')}: {e.get('text')} {e.get('url', '')}"
            if e.get("level") != "verbose" and line not in self._log_once:
                self._log_once.add(line)
                self.log(line)
        self.events.append(msg)
        del self.events[:-200]

    def call(self, method, timeout=60, **params):
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            msg = json.loads(self.ws.recv(max(0.01, deadline - time.monotonic())))
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise CDPError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._event(msg)

    def pump(self, seconds):
        """Take the browser's events for a while (console messages go to the log)."""
        deadline = time.monotonic() + seconds
        try:
            while True:
                self._event(json.loads(self.ws.recv(max(0.01, deadline - time.monotonic()))))
        except TimeoutError:
            pass

    def eval(self, expression, timeout=60):
        r = self.call("Runtime.evaluate", timeout=timeout, expression=expression, awaitPromise=True,
                      returnByValue=True)
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            raise CDPError(f"{expression}: " + str(d.get("exception", {}).get("description", d.get("text"))))
        return r.get("result", {}).get("value")

    def wait(self, expression, timeout, what=None):
        """Waits until the expression is truthy in the page (looked at every 100 ms, events taken
        in between), and returns its value; CDPError after timeout seconds."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.eval(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise CDPError(f"timed out after {timeout} s waiting for {what or expression}")
            self.pump(0.1)

    def navigate(self, url):
        self.call("Page.navigate", url=url)

    def set_size(self, width, height):
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=False)

    def key(self, key, code=None, text=None):
        if text is None and key == "Enter":
            text = "\r"
        """A real key press, as a keyboard user makes it (keyboard accessibility)."""
        vk = {"Enter": 13, "Tab": 9, "Escape": 27, " ": 32}.get(key, 0)
        common = {"key": key, "code": code or key, "windowsVirtualKeyCode": vk, "nativeVirtualKeyCode": vk}
        down = dict(common, type="keyDown")
        if text is not None:
            down["text"] = text
        self.call("Input.dispatchKeyEvent", **down)
        self.call("Input.dispatchKeyEvent", **dict(common, type="keyUp"))

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", timeout=120, format="png")["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def close(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 15)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        self.stderr.close()
