"""An HTTPS CONNECT proxy that sends every allowed tunnel to the local emulator, and nothing anywhere else.

Lets an unmodified Azure client that only knows the public cloud (management.azure.com,
login.microsoftonline.com) talk to an emulator started with --public-cloud, the way such clients are pointed
at a corporate proxy:

    HTTPS_PROXY=http://127.0.0.1:PROXY_PORT  REQUESTS_CA_BUNDLE=STATE_DIR/ca.pem  SSL_CERT_FILE=STATE_DIR/ca.pem

    .venv/bin/python tests/emulator/public_cloud_proxy.py --emulator-port PORT [--port 0] [--ready-file F]
                                                          [--log-file F]

Only CONNECT to the public-cloud names the emulator serves (azure_emulator.server.PUBLIC_CLOUD_HOSTS) or to
the emulator's own 127.0.0.1:PORT is tunnelled, always to 127.0.0.1:PORT; anything else (other hosts, plain
HTTP requests) is refused with 403 and counted, so no request can leave the machine. TLS stays end to end: the
emulator's certificate carries those names, signed by its own CA.

The client never resolves those names: a client that honours HTTPS_PROXY sends "CONNECT management.azure.com:443"
to this proxy, which opens the tunnel to 127.0.0.1 itself. --log-file appends one JSON line per request line
received ({"request", "tunnelled"}), so a run can show which names were asked for and that nothing was refused.
"""
import argparse
import json
import os
import select
import socket
import sys
import threading
from socketserver import StreamRequestHandler, ThreadingTCPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from azure_emulator.server import PUBLIC_CLOUD_HOSTS  # noqa: E402


class Proxy(ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address, emulator_port, log_file=None):
        super().__init__(address, ProxyHandler)
        self.emulator_port = emulator_port
        self.log_file = log_file
        self.allowed = {(host, 443) for host in PUBLIC_CLOUD_HOSTS}
        self.allowed |= {("127.0.0.1", emulator_port), ("localhost", emulator_port)}
        self.lock = threading.Lock()
        self.tunnels = 0
        self.refused = []

    def record(self, line, tunnelled):
        if self.log_file:
            with self.lock, open(self.log_file, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"request": line, "tunnelled": tunnelled}) + "\n")


class ProxyHandler(StreamRequestHandler):
    def handle(self):
        line = self.rfile.readline(65537).decode("latin-1").strip()
        while True:  # headers; none matter
            header = self.rfile.readline(65537)
            if header in (b"\r\n", b"\n", b""):
                break
        parts = line.split()
        target = None
        if len(parts) == 3 and parts[0].upper() == "CONNECT":
            host, dummy, port = parts[1].rpartition(":")
            if port.isdigit() and (host.lower(), int(port)) in self.server.allowed:
                target = ("127.0.0.1", self.server.emulator_port)
        self.server.record(line, target is not None)
        if target is None:
            with self.server.lock:
                self.server.refused.append(line)
            self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        try:
            upstream = socket.create_connection(target, timeout=10)
        except OSError:
            self.wfile.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        with self.server.lock:
            self.server.tunnels += 1
        self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self.wfile.flush()
        client = self.connection
        upstream.settimeout(None)
        client.settimeout(None)
        sockets = [client, upstream]
        try:
            while True:
                readable, dummy, broken = select.select(sockets, [], sockets, 300)
                if broken or not readable:
                    return
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (upstream if sock is client else client).sendall(data)
        except OSError:
            return
        finally:
            upstream.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emulator-port", type=int, required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready-file", help="write {port, pid} here once listening")
    parser.add_argument("--log-file", help="append {request, tunnelled} as a JSON line per request received")
    args = parser.parse_args(argv)
    server = Proxy(("127.0.0.1", args.port), args.emulator_port, args.log_file)
    port = server.server_address[1]
    if args.ready_file:
        with open(args.ready_file + ".tmp", "w", encoding="utf-8") as handle:
            json.dump({"port": port, "pid": os.getpid()}, handle)
        os.replace(args.ready_file + ".tmp", args.ready_file)
    print(f"public_cloud_proxy on 127.0.0.1:{port} -> 127.0.0.1:{args.emulator_port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
