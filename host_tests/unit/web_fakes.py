# A request and a response for calling the web handlers (firmware/app/web.py, setup.py) directly,
# without a socket (no tests here): the request is its body and Content-Type (JSON, as the setup
# page sends it); the response keeps the status and the body sent, whole (send) or in chunks
# (start, write).


class Req:
    def __init__(self, body=b"", ctype="application/json"):
        self.body = body
        self.ctype = ctype


class Resp:
    def __init__(self):
        self.status = 0
        self.body = b""

    async def send(self, status, body, ctype="", headers=""):
        self.status = status
        self.body = body.encode() if isinstance(body, str) else body

    async def start(self, status, ctype="", headers=""):
        self.status = status

    async def write(self, chunk):
        self.body += chunk.encode() if isinstance(chunk, str) else bytes(chunk)
