#!/usr/bin/env python3
"""A real OTLP/HTTP logs receiver for portwatch's integration tests.

    receiver.py --out FILE [--port PORT] [--status CODE --fail-first N] [--count-only]

Listens on 127.0.0.1:PORT (0: any free port) and says `listening PORT` on stdout
once bound. Accepts POST /v1/logs with `Content-Type: application/x-protobuf`
(gzip `Content-Encoding` too), decodes it as an `ExportLogsServiceRequest` with
OpenTelemetry's own protobuf classes (PyPI's `opentelemetry-proto`) and appends
one JSON line per log record to FILE, flushed before the reply:

    {"resource": {...}, "scope": NAME, "time_unix_nano": N,
     "observed_time_unix_nano": N, "severity_number": N, "severity_text": S,
     "event_name": S, "body": VALUE, "attributes": {...}, "headers": {...}}

`headers` holds the request's headers (names lowercased) other than the standard
HTTP ones. Replies 200 with an empty `ExportLogsServiceResponse`. With
`--fail-first N`, the first N requests to /v1/logs get `--status` (503 unless
given) with an empty body, and are not written. A body that does not decode gets
400 (and a line on stderr), another content type 415, another path 404.
Exits 0 on SIGTERM or SIGINT. With `--count-only` (the benchmark's receiver,
which must keep up), records are decoded and counted but not written; FILE gets
the count, one number, at exit.
"""
import argparse
import gzip
import json
import math
import signal
import sys
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

PATH = "/v1/logs"
PROTOBUF = "application/x-protobuf"
# Headers every HTTP client sends: not written to FILE.
STANDARD_HEADERS = {
    "content-type",
    "content-length",
    "content-encoding",
    "host",
    "accept",
    "accept-encoding",
    "user-agent",
    "connection",
    "transfer-encoding",
}


def any_value(v):
    """An OTLP AnyValue as JSON: scalars as scalars, arrays as lists, key-value
    lists as objects, bytes as hex; None when unset."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return key_values(v.kvlist_value.values)
    if kind == "bytes_value":
        return v.bytes_value.hex()
    if kind == "double_value":
        d = v.double_value
        # JSON has no NaN or infinities.
        return d if math.isfinite(d) else str(d)
    return getattr(v, kind)


def key_values(kvs):
    return {kv.key: any_value(kv.value) for kv in kvs}


def records(request, headers):
    """One JSON object per log record of an ExportLogsServiceRequest."""
    for resource_logs in request.resource_logs:
        resource = key_values(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            for r in scope_logs.log_records:
                yield {
                    "resource": resource,
                    "scope": scope_logs.scope.name,
                    "time_unix_nano": r.time_unix_nano,
                    "observed_time_unix_nano": r.observed_time_unix_nano,
                    "severity_number": r.severity_number,
                    "severity_text": r.severity_text,
                    "event_name": r.event_name,
                    "body": any_value(r.body) if r.HasField("body") else None,
                    "attributes": key_values(r.attributes),
                    "headers": headers,
                }


class Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port, out, status, fail_first, count_only=False):
        super().__init__(("127.0.0.1", port), Handler)
        self.count_only = count_only
        self.counted = 0
        self.out = out
        self.status = status
        self.fail_first = fail_first
        self.requests = 0
        self.lock = threading.Lock()
        # Held from writing a request's records to answering it, and by main
        # before exiting: a request written is always answered (the sender would
        # otherwise send it again, and it would be written twice).
        self.answering = threading.Lock()

    def failing(self):
        """Whether this request is one of the first --fail-first."""
        with self.lock:
            self.requests += 1
            return self.requests <= self.fail_first

    def write(self, lines):
        with self.lock, open(self.out, "a", encoding="utf-8") as f:
            for line in lines:
                f.write(line + "\n")
            f.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "otlp-receiver"

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass

    def reply(self, status, body=b"", content_type=None):
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def complain(self, status, why):
        print(f"otlp-receiver: {self.command} {self.path}: {why}", file=sys.stderr, flush=True)
        self.reply(status, why.encode() + b"\n", "text/plain")

    def read_body(self):
        """The request's body, by Content-Length or chunked; None if unreadable."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    # Trailers, up to the empty line.
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            return None
        return self.rfile.read(length) if length > 0 else b""

    def do_POST(self):
        try:
            body = self.read_body()
        except ValueError:
            body = None
        if body is None:
            self.close_connection = True
            self.complain(400, "unreadable body")
            return
        if self.path.split("?")[0] != PATH:
            self.complain(404, f"no such path (only POST {PATH})")
            return
        if self.server.failing():
            self.reply(self.server.status)
            return
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != PROTOBUF:
            self.complain(415, f"Content-Type {content_type!r}, expected {PROTOBUF}")
            return
        encoding = self.headers.get("Content-Encoding", "identity").strip().lower()
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding not in ("", "identity"):
                self.complain(415, f"Content-Encoding {encoding!r} is not supported")
                return
            request = logs_service_pb2.ExportLogsServiceRequest()
            request.ParseFromString(body)
        except (DecodeError, OSError, EOFError, zlib.error) as e:
            self.complain(400, f"not an ExportLogsServiceRequest ({encoding}): {e}")
            return
        headers = {}
        for name, value in self.headers.items():
            name = name.lower()
            if name not in STANDARD_HEADERS:
                headers[name] = f"{headers[name]}, {value}" if name in headers else value
        response = logs_service_pb2.ExportLogsServiceResponse().SerializeToString()
        if self.server.count_only:
            n = sum(len(s.log_records) for r in request.resource_logs for s in r.scope_logs)
            with self.server.answering:
                self.server.counted += n
                self.reply(200, response, PROTOBUF)
            return
        lines = [json.dumps(r) for r in records(request, headers)]
        with self.server.answering:
            self.server.write(lines)
            self.reply(200, response, PROTOBUF)
            self.wfile.flush()

    def do_GET(self):
        self.complain(404 if self.path.split("?")[0] != PATH else 405, f"only POST {PATH}")

    do_PUT = do_DELETE = do_PATCH = do_GET


def main():
    parser = argparse.ArgumentParser(description="OTLP/HTTP logs receiver for tests")
    parser.add_argument("--out", required=True, help="file to append JSON lines to")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any)")
    parser.add_argument("--status", type=int, default=503, help="status of the failed requests")
    parser.add_argument("--fail-first", type=int, default=0, metavar="N", help="fail the first N requests")
    parser.add_argument("--count-only", action="store_true", help="count records, write the count at exit")
    args = parser.parse_args()

    server = Receiver(args.port, args.out, args.status, args.fail_first, args.count_only)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    serving.start()
    print(f"listening {server.server_address[1]}", flush=True)
    while not stop.wait(1):
        pass
    server.shutdown()
    serving.join()
    # No request is between its write and its answer from here on; those still
    # being read are never written (their sender sends them again).
    server.answering.acquire()
    server.server_close()
    if args.count_only:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(f"{server.counted}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
