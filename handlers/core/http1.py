"""HTTP/1.1 over one connected socket: the part the Consul transport (consul/lighthttp.py) and the
Docker engine transport (engine/engine_http.py) share. Stdlib only, no import of http.client
(which pulls in the email package: ~30 ms of CPU on the hot path).

    reader = Reader(sock, limit, too_big)       buffered reads with a size bound
    status, headers, body, closed = read_response(reader, method, not_http)

`too_big()` and `not_http()` build the caller's own exception (ConsulError, EngineError): each
transport names its peer. A peer that closes the connection mid-answer raises ConnectionError,
which the transports turn into their one-line failure (and one retry on a stale keep-alive).
"""


class Reader:
    """Reads from `sock` through a buffer; an answer larger than `limit` bytes raises too_big()."""

    def __init__(self, sock, limit, too_big, peer="the peer"):
        self.sock, self.buf, self.limit, self.too_big, self.peer = sock, b"", limit, too_big, peer

    def fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by %s" % self.peer)
        self.buf += chunk
        if len(self.buf) > self.limit:
            raise self.too_big()

    def readline(self):
        while b"\r\n" not in self.buf:
            self.fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def readn(self, n):
        while len(self.buf) < n:
            self.fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def rest(self):
        """Everything until the peer closes (an answer without length or chunks)."""
        try:
            while True:
                self.fill()
        except ConnectionError:
            pass
        data, self.buf = self.buf, b""
        return data


def read_response(reader, method, not_http):
    """One response -> (status, {lower-case header: value}, body bytes, closed). `closed`: the
    connection is done (read to its end, or the peer said `Connection: close`)."""
    parts = reader.readline().decode("latin-1").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise not_http()
    status = int(parts[1])
    headers = {}
    while True:
        line = reader.readline()
        if not line:
            break
        k, _, v = line.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    closed = False
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(reader.readline().split(b";")[0], 16)
            if size == 0:
                while reader.readline():
                    pass
                break
            chunks.append(reader.readn(size))
            reader.readn(2)
        body = b"".join(chunks)
    elif "content-length" in headers:
        body = reader.readn(int(headers["content-length"]))
    elif status in (204, 304) or method == "HEAD":
        body = b""
    else:
        body, closed = reader.rest(), True
    if headers.get("connection", "").lower() == "close":
        closed = True
    return status, headers, body, closed
