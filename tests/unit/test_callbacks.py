"""Callback (`subscriber`) URLs: only globally routable addresses, the checked address
pinned for the connection (DNS rebinding), redirects not followed.

A real HTTP server on 127.0.0.1 plays the internal service an attacker would aim at;
DNS — outside the machine — is played by a patched `socket.getaddrinfo`."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from server.jobs import callbacks


@pytest.fixture()
def internal():
    """An HTTP service on loopback; records (method, path, Host header, body)."""
    seen: list[tuple] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            seen.append(("POST", self.path, self.headers["Host"], json.loads(body)))
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", "/elsewhere")
            else:
                self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self):
            seen.append(("GET", self.path, self.headers["Host"], None))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *a):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_address[1], seen
    httpd.shutdown()


class Resolver:
    """DNS for one name: answers `answers[0]` to the first lookup, `answers[1]` to the next
    ones (a rebinding attacker's server); other names (and IP literals) resolve as usual."""

    def __init__(self, monkeypatch, name: str, answers: list[str]):
        self.name, self.answers, self.lookups = name, answers, 0
        self.real = socket.getaddrinfo
        monkeypatch.setattr(socket, "getaddrinfo", self)

    def __call__(self, host, port, *args, **kwargs):
        if host != self.name:
            return self.real(host, port, *args, **kwargs)
        address = self.answers[min(self.lookups, len(self.answers) - 1)]
        self.lookups += 1
        return self.real(address, port, *args, **kwargs)


@pytest.mark.parametrize("url", ["http://100.64.0.1/cb", "http://100.127.255.254/cb", "http://127.0.0.1/cb",
                                 "http://10.0.0.1/cb", "http://169.254.169.254/latest", "http://[::1]/cb",
                                 "http://[::ffff:127.0.0.1]/cb", "http://192.0.2.1/cb", "http://0.0.0.0/cb",
                                 "http://224.0.0.1/cb", "http://[fc00::1]/cb", "http://198.18.0.1/cb",
                                 # IPv6 forms that carry an inside IPv4 address (issue 30)
                                 "http://[::127.0.0.1]/cb", "http://[::10.0.0.1]/cb", "http://[::ffff:10.0.0.1]/cb",
                                 "http://[64:ff9b::7f00:1]/cb", "http://[64:ff9b::a9fe:a9fe]/cb",
                                 "http://[64:ff9b:1::808:808]/cb", "http://[2002:7f00:1::]/cb",
                                 "http://[2002:c0a8:101::1]/cb", "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/cb"])
def test_addresses_that_are_not_globally_routable_are_refused(url):
    with pytest.raises(ValueError, match="inside the network"):
        callbacks.validate({"successUri": url})


def test_public_addresses_and_schemes():
    assert callbacks.resolve("https://8.8.8.8/hook?x=1").address == "8.8.8.8"
    for host in ("[2001:4860:4860::8888]", "[64:ff9b::808:808]", "[2002:808:808::1]", "[::ffff:8.8.8.8]"):
        callbacks.resolve(f"https://{host}/hook")           # public IPv6, and forms carrying a public IPv4
    assert callbacks.resolve("https://8.8.8.8/hook?x=1").path == "/hook?x=1"
    for url in ("file:///etc/passwd", "ftp://8.8.8.8/x", "http:///nohost", "http://8.8.8.8:99999/x"):
        with pytest.raises(ValueError):
            callbacks.resolve(url)


def test_a_name_that_resolves_inside_on_the_second_lookup_is_never_reached(monkeypatch, internal):
    port, seen = internal
    dns = Resolver(monkeypatch, "rebind.example", ["8.8.8.8", "127.0.0.1"])
    url = f"http://rebind.example:{port}/steal"
    assert callbacks.validate({"successUri": url}) == {"successUri": url}     # first answer: public
    # at notification time the name answers loopback: refused, nothing sent
    assert callbacks.notify({"successUri": url}, "successUri", {"a": 1}) is None
    assert dns.lookups == 2 and seen == []


def test_the_checked_address_is_the_one_connected_to(monkeypatch, internal):
    """One lookup per callback, and the connection goes to its answer, whatever a second
    lookup would say; the request still names the host."""
    port, seen = internal
    dns = Resolver(monkeypatch, "hooks.example", ["127.0.0.1", "10.255.255.1"])
    status = callbacks.notify({"successUri": f"http://hooks.example:{port}/done"}, "successUri", {"jobID": "j"},
                              allow_private=True, timeout=2)
    assert status == 204 and dns.lookups == 1
    assert seen == [("POST", "/done", f"hooks.example:{port}", {"jobID": "j"})]


def test_a_public_check_is_not_undone_by_a_rebinding_connection(monkeypatch, internal):
    """The address checked (public) is the address connected to: a resolver that would
    answer loopback to the connection's own lookup never gets asked."""
    port, seen = internal
    dns = Resolver(monkeypatch, "flip.example", ["192.88.99.1", "127.0.0.1"])
    callbacks.notify({"successUri": f"http://flip.example:{port}/x"}, "successUri", {}, timeout=0.5)
    assert dns.lookups == 1 and seen == []


def test_redirects_are_not_followed(internal):
    port, seen = internal
    status = callbacks.notify({"successUri": f"http://127.0.0.1:{port}/redirect"}, "successUri", {"x": 1},
                              allow_private=True, timeout=2)
    assert status == 302
    assert [s[:2] for s in seen] == [("POST", "/redirect")]
