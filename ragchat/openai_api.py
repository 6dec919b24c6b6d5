"""A small client for OpenAI-compatible inference servers (llama.cpp's llama-server,
llama-cpp-python's server, vLLM, Ollama's /v1, LM Studio): JSON requests and server-sent
event streams with connect/read timeouts, retries with backoff on 429 and 5xx, and every
failure turned into a one-line RagchatError that says what to do.

Shared by the openai generator (generation/openai.py) and the /v1/embeddings embedder
(retrieval/remote.py). httpx2 (already installed: huggingface_hub depends on it) is
imported only when a client is made. The API key is sent as a bearer header and never
appears in a message, a repr or a log line.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ragchat.errors import GenerationError, ModelUnavailableError, UsageError

if TYPE_CHECKING:
    from ragchat.config import Settings


# Statuses worth another try: rate limited, or the server failing for now.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


# Backoff before retry n (seconds): 0.5, 1, 2, ...; a Retry-After header is honoured up to
# MAX_RETRY_AFTER_S.
BACKOFF_S = 0.5


MAX_RETRY_AFTER_S = 10.0


# How often a waiting stream looks at its cancel Event (seconds).
CANCEL_POLL_S = 0.05


_DONE = object()


class ServerUnavailableError(ModelUnavailableError):
    """The server cannot be reached, or stopped answering."""


@dataclass(frozen=True)
class Endpoint:
    """Where a server is and how to talk to it. `api_key` is kept out of repr."""

    base_url: str  # ends with the API prefix, e.g. http://127.0.0.1:8080/v1
    api_key: str = ""
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    retries: int = 3

    def __repr__(self) -> str:
        return f"Endpoint({self.base_url!r})"

    @property
    def root(self) -> str:
        """The server root without the /v1 prefix (llama.cpp's /tokenize lives there)."""
        base = self.base_url.rstrip("/")
        return base[: -len("/v1")] if base.endswith("/v1") else base


def endpoint_for(settings: Settings, base_url: str, what: str) -> Endpoint:
    """The Endpoint for `base_url` with the timeouts and key of `settings`; a UsageError
    naming the settings to use when no URL is configured."""
    if not base_url:
        raise UsageError(
            f"{what} needs the server's URL: --base-url http://HOST:PORT/v1 (or "
            "RAGCHAT_OPENAI_BASE_URL, or openai_base_url in config.toml)."
        )
    if not base_url.startswith(("http://", "https://")):
        raise UsageError(f"base URL {base_url!r} must start with http:// or https://")
    return Endpoint(
        base_url=base_url.rstrip("/"),
        api_key=settings.openai_api_key,
        connect_timeout_s=settings.openai_connect_timeout_s,
        read_timeout_s=settings.openai_read_timeout_s,
        retries=max(0, settings.openai_retries),
    )


class OpenAIClient:
    """JSON and SSE requests to one server; safe to share between threads."""

    def __init__(self, endpoint: Endpoint) -> None:
        import httpx2

        self.endpoint = endpoint
        self._httpx = httpx2
        headers = {"Accept": "application/json"}
        if endpoint.api_key:
            headers["Authorization"] = f"Bearer {endpoint.api_key}"
        self._client = httpx2.Client(
            headers=headers,
            timeout=httpx2.Timeout(
                endpoint.read_timeout_s,
                connect=endpoint.connect_timeout_s,
                read=endpoint.read_timeout_s,
            ),
        )

    def close(self) -> None:
        self._client.close()

    def url(self, path: str) -> str:
        """`path` under the base URL ("/models"), or under the root when it starts with
        "//" ("//tokenize" → http://host:port/tokenize)."""
        if path.startswith("//"):
            return self.endpoint.root + path[1:]
        return self.endpoint.base_url + path

    # -- plain JSON ----------------------------------------------------------------------

    def get_json(self, path: str) -> Any:
        return self._request("GET", path, None)

    def post_json(self, path: str, body: dict[str, Any]) -> Any:
        return self._request("POST", path, body)

    def try_post_json(self, path: str, body: dict[str, Any]) -> Any | None:
        """The JSON answer, or None when the server doesn't offer `path` (any 4xx/5xx, a
        body that isn't JSON). For optional extensions such as /tokenize."""
        try:
            response = self._client.post(self.url(path), json=body)
        except self._httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        if response.status_code >= 400:
            return None
        try:
            return response.json()
        except ValueError:
            return None

    def _request(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        for attempt in range(self.endpoint.retries + 1):
            try:
                response = self._client.request(method, self.url(path), json=body)
            except self._httpx.HTTPError as exc:
                raise self._transport_error(exc) from exc
            if response.status_code in RETRY_STATUSES and attempt < self.endpoint.retries:
                time.sleep(_backoff(attempt, response.headers.get("retry-after")))
                continue
            if response.status_code >= 400:
                raise self.status_error(response.status_code, response.text, path)
            try:
                return response.json()
            except ValueError as exc:
                raise GenerationError(
                    f"the server at {self.endpoint.base_url} answered {path} with something "
                    "that is not JSON; is --base-url an OpenAI-compatible API (…/v1)?"
                ) from exc
        raise AssertionError("unreachable")

    # -- streams -------------------------------------------------------------------------

    def stream_events(
        self, path: str, body: dict[str, Any], cancel: threading.Event | None = None
    ) -> Iterator[dict[str, Any]]:
        """The JSON objects of a server-sent event stream (`data: {...}` lines) until
        `data: [DONE]` or the end of the response. 429/5xx before the stream starts are
        retried. The response is read on a helper thread so that `cancel` is seen within
        CANCEL_POLL_S even while the server is still reading the prompt; when it is set,
        or the iterator is closed, the request is closed and the iterator ends."""
        events: queue.Queue[Any] = queue.Queue()
        stop = threading.Event()
        reader = threading.Thread(
            target=self._read_stream, args=(path, body, events, stop), daemon=True
        )
        reader.start()
        try:
            while True:
                try:
                    item = events.get(timeout=CANCEL_POLL_S)
                except queue.Empty:
                    if cancel is not None and cancel.is_set():
                        return
                    continue
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
                if cancel is not None and cancel.is_set():
                    return
        finally:
            stop.set()  # the reader closes the response at its next line

    def _read_stream(
        self, path: str, body: dict[str, Any], events: queue.Queue[Any], stop: threading.Event
    ) -> None:
        try:
            for attempt in range(self.endpoint.retries + 1):
                with self._client.stream(
                    "POST", self.url(path), json=body, headers={"Accept": "text/event-stream"}
                ) as response:
                    status = response.status_code
                    if status in RETRY_STATUSES and attempt < self.endpoint.retries:
                        response.read()
                        time.sleep(_backoff(attempt, response.headers.get("retry-after")))
                        continue
                    if status >= 400:
                        response.read()
                        raise self.status_error(status, response.text, path)
                    for line in response.iter_lines():
                        if stop.is_set():
                            return
                        if not line.startswith("data:"):
                            continue  # comments (": ping"), event names, blank separators
                        data = line[len("data:") :].strip()
                        if data == "[DONE]":
                            return
                        try:
                            event = json.loads(data)
                        except ValueError as exc:
                            raise GenerationError(
                                f"the server at {self.endpoint.base_url} sent a stream event "
                                f"that is not JSON: {data[:80]!r}"
                            ) from exc
                        if isinstance(event, dict) and "error" in event:
                            raise GenerationError(
                                f"the server at {self.endpoint.base_url} failed while "
                                f"answering: {_error_detail(json.dumps(event))}"
                            )
                        events.put(event)
                    return
        except self._httpx.HTTPError as exc:
            if not stop.is_set():
                events.put(self._transport_error(exc))
        except BaseException as exc:  # handed to the consuming thread, raised there
            events.put(exc)
        finally:
            events.put(_DONE)

    # -- errors --------------------------------------------------------------------------

    def _transport_error(self, exc: Exception) -> ModelUnavailableError | GenerationError:
        url = self.endpoint.base_url
        httpx2 = self._httpx
        if isinstance(exc, httpx2.ConnectTimeout):
            return ServerUnavailableError(
                f"cannot reach the server at {url}: no connection within "
                f"{self.endpoint.connect_timeout_s:g} s; check the host and port (--base-url) "
                "and that the server is running."
            )
        if isinstance(exc, httpx2.ConnectError):
            return ServerUnavailableError(
                f"cannot reach the server at {url} (connection refused or host unknown); "
                "start it (e.g. python -m llama_cpp.server --model M.gguf) or fix --base-url."
            )
        if isinstance(exc, httpx2.ReadTimeout):
            return ServerUnavailableError(
                f"the server at {url} stopped answering: nothing for "
                f"{self.endpoint.read_timeout_s:g} s (read timeout); check that it is not "
                "stuck or overloaded, or raise openai_read_timeout_s."
            )
        if isinstance(exc, httpx2.TimeoutException):
            return ServerUnavailableError(f"the request to {url} timed out ({exc!r}).")
        return ServerUnavailableError(
            f"the connection to the server at {url} failed: {type(exc).__name__}: {exc}"
        )

    def status_error(self, status: int, text: str, path: str) -> UsageError | GenerationError:
        url = self.endpoint.base_url
        detail = _error_detail(text)
        if status in (401, 403):
            return UsageError(
                f"the server at {url} refused the request (HTTP {status}: {detail}); set the "
                "API key in RAGCHAT_OPENAI_API_KEY (or OPENAI_API_KEY, or openai_api_key in "
                "config.toml)."
            )
        if status == 404:
            return UsageError(
                f"the server at {url} has no {path} (HTTP 404: {detail}); --base-url should "
                "be the server's OpenAI API root, usually ending in /v1."
            )
        return GenerationError(f"the server at {url} answered {path} with HTTP {status}: {detail}")

    # -- models --------------------------------------------------------------------------

    def models(self) -> list[dict[str, Any]]:
        """The entries of GET /models (each has at least "id")."""
        data = self.get_json("/models")
        entries = data.get("data") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            raise GenerationError(
                f"the server at {self.endpoint.base_url} answered /models without a model "
                "list; is --base-url an OpenAI-compatible API (…/v1)?"
            )
        return [e for e in entries if isinstance(e, dict) and "id" in e]

    def find_model(self, name: str, what: str) -> dict[str, Any]:
        """The /models entry called `name` (Ollama's "NAME:latest" matches "NAME"); a
        UsageError listing what the server offers when there is none."""
        entries = self.models()
        for entry in entries:
            ident = str(entry["id"])
            if name in (ident, ident.removesuffix(":latest")):
                return entry
        offered = ", ".join(str(e["id"]) for e in entries) or "nothing"
        raise UsageError(
            f"the server at {self.endpoint.base_url} has no model {name!r}; it offers: "
            f"{offered}. Pass one of them as {what}."
        )


def _backoff(attempt: int, retry_after: str | None) -> float:
    if retry_after:
        try:
            return min(float(retry_after), MAX_RETRY_AFTER_S)
        except ValueError:
            pass
    return BACKOFF_S * 2**attempt


def _error_detail(text: str) -> str:
    """The message of an OpenAI-style error body ({"error": {"message": ...}}), or the
    body's first line, shortened."""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    message: Any = None
    if isinstance(body, dict):
        error = body.get("error", body.get("detail"))
        message = error.get("message") if isinstance(error, dict) else error
    if not message:
        message = text.strip().splitlines()[0] if text.strip() else "no details"
    message = " ".join(str(message).split())
    return message if len(message) <= 200 else message[:197] + "..."
