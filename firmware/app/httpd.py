# The device's small HTTP/1.0 server (asyncio streams; no framework: the setup page, the status
# page and the JSON API are a handful of routes). One request per connection, bounded in every
# part, so a client on the LAN can neither exhaust the heap nor stall metering:
#   request line <= 256 bytes, <= 24 header lines of <= 256 bytes, body <= max_body (form posts),
#   the whole request within _REQUEST_MS, at most _MAX_CLIENTS connections at once.
# Routes need HTTP Basic authentication with the configured password unless added with
# auth=False (the setup page, reached only on the device's own setup access point).
import asyncio
from binascii import a2b_base64

from firmware import log
from firmware.compat import const

_TAG = "web"
_LINE_MAX = const(256)
_HEADERS_MAX = const(24)
_REQUEST_MS = const(5000)
_MAX_CLIENTS = const(3)
REASONS = {200: "OK", 204: "No Content", 303: "See Other", 400: "Bad Request",
           401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
           413: "Payload Too Large", 415: "Unsupported Media Type",
           500: "Internal Server Error", 503: "Service Unavailable"}


class HttpError(Exception):
    def __init__(self, status, why):
        super().__init__(why)
        self.status = status
        self.why = why


class Request:
    __slots__ = ("method", "path", "query", "body", "authorization", "length", "ctype")

    def __init__(self):
        self.method = ""
        self.path = ""
        self.query = ""
        self.body = b""
        self.authorization = ""
        self.length = 0
        self.ctype = ""  # Content-Type without parameters, lower case

    def arg(self, name, default=None):
        """A query-string argument (no percent-decoding: the API's arguments are plain)."""
        for part in self.query.split("&"):
            k, _, v = part.partition("=")
            if k == name:
                return v
        return default


class Response:
    """Writes the status line and headers once, then the body in chunks (streamed: a long
    answer such as 48 slots per meter is never built whole in RAM)."""

    def __init__(self, writer):
        self.w = writer
        self.status = 0

    async def start(self, status, ctype="text/plain; charset=utf-8", headers=""):
        self.status = status
        head = ("HTTP/1.0 %d %s\r\nContent-Type: %s\r\nCache-Control: no-store\r\n"
                "X-Content-Type-Options: nosniff\r\nConnection: close\r\n%s\r\n"
                % (status, REASONS.get(status, ""), ctype, headers))
        self.w.write(_bytes(head))
        await self.w.drain()

    async def write(self, chunk):
        """chunk: str (UTF-8) or bytes."""
        self.w.write(_bytes(chunk))
        await self.w.drain()

    async def send(self, status, body, ctype="text/plain; charset=utf-8", headers=""):
        await self.start(status, ctype, headers)
        if body:
            await self.write(body)


def password_ok(authorization, password):
    """HTTP Basic: any user name, the configured password; compared in constant time."""
    if not password or not authorization.startswith("Basic "):
        return False
    try:
        cred = a2b_base64(authorization[6:].strip())
    except ValueError:
        return False
    i = cred.find(b":")
    if i < 0:
        return False
    got = cred[i + 1:]
    want = password.encode()
    diff = len(got) ^ len(want)
    for k in range(len(got)):
        diff |= got[k] ^ want[k % len(want)]
    return diff == 0


class HttpServer:
    def __init__(self, host, port, password="", max_body=1024, realm="IoT-route terminal"):
        self.host = host
        self.port = port
        self.password = password
        self.max_body = max_body
        self.realm = realm
        self.routes = []  # (method, path, handler, auth)
        self.clients = 0
        self.stats = {"requests": 0, "rejected": 0, "auth_failed": 0, "errors": 0}

    def route(self, method, path, handler, auth=True):
        """handler: async def handler(req, resp)."""
        self.routes.append((method, path, handler, auth))

    async def run(self):
        server = await asyncio.start_server(self._client, self.host, self.port)
        log.info(_TAG, "HTTP server on %s port %d" % (self.host, self.port))
        try:
            while True:
                await asyncio.sleep(3600)
        finally:
            server.close()

    async def _client(self, reader, writer):
        resp = Response(writer)
        if self.clients >= _MAX_CLIENTS:
            self.stats["rejected"] += 1
            await _close(writer)
            return
        self.clients += 1
        try:
            req = await asyncio.wait_for(self._read(reader), _REQUEST_MS / 1000)
            self.stats["requests"] += 1
            await self._dispatch(req, resp)
        except HttpError as e:
            self.stats["errors"] += 1
            log.warn(_TAG, "bad request: %s" % e.why)
            if not resp.status:
                try:
                    await resp.send(e.status, e.why + "\n")
                except OSError:
                    pass  # the client went away first
        except asyncio.TimeoutError:
            self.stats["errors"] += 1
            log.warn(_TAG, "request not complete within %d ms: closed" % _REQUEST_MS)
        except OSError as e:
            self.stats["errors"] += 1
            log.warn(_TAG, "connection error: %s" % e)
        except EOFError:  # the body ended before Content-Length
            self.stats["errors"] += 1
            log.warn(_TAG, "request body cut short: closed")
        except Exception as e:  # noqa: BLE001 - one client never ends the server
            self.stats["errors"] += 1
            log.exc(_TAG, "request failed", e)
        finally:
            self.clients -= 1
            await _close(writer)

    async def _dispatch(self, req, resp):
        allowed = False
        for method, path, handler, auth in self.routes:
            if path != req.path:
                continue
            if method != req.method:
                allowed = True
                continue
            if auth and not password_ok(req.authorization, self.password):
                self.stats["auth_failed"] += 1
                await resp.send(401, "authentication required\n",
                                headers='WWW-Authenticate: Basic realm="%s"\r\n' % self.realm)
                return
            try:
                await handler(req, resp)
            except HttpError:
                raise
            except OSError:
                raise
            except Exception as e:  # a handler bug answers 500; the server goes on
                log.exc(_TAG, "handler %s %s failed" % (req.method, req.path), e)
                if not resp.status:
                    await resp.send(500, "internal error\n")
            return
        raise HttpError(405 if allowed else 404,
                        "method not allowed" if allowed else "no such page")

    async def _read(self, reader):
        req = Request()
        line = await _readline(reader)
        if len(line) > _LINE_MAX or not line.endswith(b"\n"):
            raise HttpError(400, "request line missing or longer than %d bytes" % _LINE_MAX)
        parts = line.split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            raise HttpError(400, "malformed request line")
        try:
            req.method = parts[0].decode()
            target = parts[1].decode()
        except UnicodeError:
            raise HttpError(400, "request line is not text")
        req.path, _, req.query = target.partition("?")
        for _ in range(_HEADERS_MAX + 1):
            line = await _readline(reader)
            if len(line) > _LINE_MAX or not line.endswith(b"\n"):
                raise HttpError(400, "header line missing or longer than %d bytes" % _LINE_MAX)
            if line in (b"\r\n", b"\n"):
                break
            name, sep, value = line.partition(b":")
            if not sep:
                raise HttpError(400, "malformed header line")
            name = name.strip().lower()
            if name == b"content-length":
                try:
                    req.length = int(value.strip())
                except ValueError:
                    raise HttpError(400, "bad Content-Length")
            elif name == b"content-type":
                try:
                    req.ctype = value.split(b";")[0].strip().lower().decode()
                except UnicodeError:
                    raise HttpError(400, "Content-Type is not text")
            elif name == b"authorization":
                try:
                    req.authorization = value.strip().decode()
                except UnicodeError:
                    raise HttpError(400, "Authorization is not text")
        else:
            raise HttpError(400, "more than %d header lines" % _HEADERS_MAX)
        if req.length < 0 or req.length > self.max_body:
            raise HttpError(413, "body over %d bytes" % self.max_body)
        if req.length:
            req.body = await reader.readexactly(req.length)
        return req


async def _readline(reader):
    """One line, read a byte at a time and never more than _LINE_MAX + 1 bytes: the streams'
    readline() has no limit on MicroPython (a client sending megabytes without a newline would
    exhaust the heap within the request time) and raises ValueError past 64 KiB on CPython."""
    line = bytearray()
    while len(line) <= _LINE_MAX:
        b = await reader.read(1)
        if not b:
            break
        line += b
        if b == b"\n":
            break
    return bytes(line)


def _bytes(x):
    # MicroPython's StreamWriter takes str too; CPython's transport wants bytes
    return x.encode() if isinstance(x, str) else x


async def _close(writer):
    try:
        writer.close()
        await writer.wait_closed()
    except OSError:
        pass


def json_text(s):
    """A JSON string literal of s (quotes and control characters escaped)."""
    out = ['"']
    for c in s:
        if c == '"' or c == "\\":
            out.append("\\" + c)
        elif c < " ":
            out.append("\\u%04x" % ord(c))
        else:
            out.append(c)
    out.append('"')
    return "".join(out)
