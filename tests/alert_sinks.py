"""Real servers on loopback that alerts are sent to in tests: an SMTP sink (a minimal SMTP
server speaking the protocol's commands) and an HTTP sink (POST bodies)."""

from __future__ import annotations

import http.server
import socketserver
import threading
from email import message_from_bytes, policy


class SmtpSink:
    """`with SmtpSink() as sink:` an SMTP server on 127.0.0.1:sink.port; `sink.messages` are
    the e-mails it received (email.message.Message), with `sink.envelopes` (from, to)."""

    def __init__(self) -> None:
        self.messages, self.envelopes = [], []
        sink = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                self.wfile.write(b"220 sink ready\r\n")
                sender, rcpts = None, []
                while line := self.rfile.readline():
                    cmd = line.decode("ascii", "replace").strip()
                    verb = cmd.split(" ")[0].upper()
                    if verb in ("HELO", "EHLO"):
                        self.wfile.write(b"250 sink\r\n")
                    elif verb == "MAIL":
                        sender, rcpts = cmd.split(":", 1)[1].strip(" <>"), []
                        self.wfile.write(b"250 ok\r\n")
                    elif verb == "RCPT":
                        rcpts.append(cmd.split(":", 1)[1].strip(" <>"))
                        self.wfile.write(b"250 ok\r\n")
                    elif verb == "DATA":
                        self.wfile.write(b"354 end with .\r\n")
                        data = b""
                        while (chunk := self.rfile.readline()) not in (b".\r\n", b".\n", b""):
                            data += chunk[1:] if chunk.startswith(b"..") else chunk
                        sink.messages.append(message_from_bytes(data, policy=policy.default))
                        sink.envelopes.append((sender, rcpts))
                        self.wfile.write(b"250 queued\r\n")
                    elif verb == "QUIT":
                        self.wfile.write(b"221 bye\r\n")
                        return
                    else:
                        self.wfile.write(b"250 ok\r\n")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]

    def __enter__(self) -> SmtpSink:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class HttpSink:
    """`with HttpSink() as sink:` an HTTP server on 127.0.0.1:sink.port recording POSTs."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, bytes]] = []
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                sink.posts.append((self.path, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]

    def __enter__(self) -> HttpSink:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
