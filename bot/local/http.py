"""Serves the Slack-facing function over HTTP on loopback, as API Gateway would invoke it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bot.local.lambda_context import LambdaContext
from bot.local.slack_requests import http_api_event

logger = logging.getLogger(__name__)
LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]
AnswerObserver = Callable[[dict[str, Any], dict[str, Any]], None]


class LoopbackServer(ThreadingHTTPServer):
    """A threading HTTP server whose failed requests (a client gone mid-answer, a crash) are
    logged rather than printed to stderr as tracebacks (socketserver's default)."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.warning("a request from %s:%s failed", *client_address[:2], exc_info=True)


class IngressServer:
    """POST /slack/events → an HttpApi v2.0 event → the handler → its response, on 127.0.0.1."""

    def __init__(
        self, handler: LambdaHandler | None = None, port: int = 0, function_name: str = "IngressFunction"
    ) -> None:
        # Bound at once; the handler may come later (the pipeline binds before its functions exist).
        self.handler = handler
        self.function_name = function_name
        # Sees each (event, response) the function answered: the console's line per command.
        self.on_answer: AnswerObserver | None = None
        self._server = LoopbackServer(("127.0.0.1", port), self._request_class())
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = str(self._server.server_address[0])
        return f"http://{host}:{self.port}/slack/events"

    def start(self) -> IngressServer:
        if self.handler is None:
            raise RuntimeError(f"{self.function_name}: no handler to serve {self.url}")
        self._thread = threading.Thread(target=self._server.serve_forever, name="ingress-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:  # shutdown() waits for a serve_forever that never began
            self._server.shutdown()
        self._server.server_close()

    def invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        assert self.handler is not None, "start() refuses to serve without a handler"
        response = self.handler(event, LambdaContext(self.function_name, timeout_seconds=10))
        if self.on_answer is not None:
            try:
                self.on_answer(event, response)
            except Exception:
                logger.exception("the ingress answer observer failed")
        return response

    def _request_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Request(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length).decode("utf-8", errors="replace")
                headers = {k.lower(): v for k, v in self.headers.items()}
                event = http_api_event(body, headers, path=self.path.split("?")[0])
                try:
                    response = server.invoke(event)
                except Exception:  # the function crashed: API Gateway answers 500, Lambda logs it
                    logger.exception("%s failed", server.function_name)
                    response = {"statusCode": 500, "body": '{"message":"Internal Server Error"}'}
                payload = str(response.get("body") or "").encode()
                self.send_response(int(response.get("statusCode", 500)))
                for name, value in (response.get("headers") or {}).items():
                    if name.lower() != "content-length":
                        self.send_header(name, str(value))
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                self.send_response(405)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                logger.debug("ingress %s", format % args)

        return Request
