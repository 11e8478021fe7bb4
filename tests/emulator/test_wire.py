"""Each response leaves in one write on a TCP_NODELAY socket.

Issue 13: headers and body used to be two writes, and on a kept-alive connection the body then waited for the
client's delayed ACK (~40 ms on Linux): about 22 requests per second per connection for every client.
`benchmarks/emulator_rps.py` measures the rate; this test checks the cause without timing anything, by running
the real server in-process with a handler that counts the writes on its connection.
"""
import http.client
import json
import socket
import ssl
import threading

import pytest
import yaml

from azure_emulator import server as emulator_server


class CountingWriter:
    def __init__(self, inner, writes):
        self._inner = inner
        self._writes = writes

    def write(self, data):
        self._writes.append(bytes(data))
        return self._inner.write(data)

    def __getattr__(self, name):
        return getattr(self._inner, name)


@pytest.fixture
def in_process_emulator(tmp_path):
    with open(emulator_server.DEFAULT_SEED, encoding="utf-8") as handle:
        emulator = emulator_server.Emulator(yaml.safe_load(handle), str(tmp_path))
    writes, nodelay = [], []

    class CountingHandler(emulator_server.Handler):
        def setup(self):
            super().setup()
            nodelay.append(self.connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            self.wfile = CountingWriter(self.wfile, writes)

    httpd, ca_path = emulator_server.make_server(emulator, CountingHandler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd.server_address[1], ca_path, writes, nodelay
    httpd.shutdown()
    httpd.server_close()


def test_each_response_is_one_write_on_a_nodelay_socket(in_process_emulator):
    port, ca_path, writes, nodelay = in_process_emulator
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=ssl.create_default_context(cafile=ca_path))
    responses = []
    # Three requests on one kept-alive connection: a success with a body, an ARM error (no token), an admin call.
    for path in ("/metadata/endpoints?api-version=2022-09-01",
                 "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups?api-version=2021-04-01",
                 "/_emulator/requests"):
        connection.request("GET", path)
        response = connection.getresponse()
        responses.append((response.status, response.read()))
    connection.close()

    assert [response[0] for response in responses] == [200, 401, 200]
    assert nodelay == [1]  # one connection, Nagle off
    assert len(writes) == len(responses)
    for write, (dummy, body) in zip(writes, responses):
        head, dummy, sent_body = write.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 ") and b"Content-Length: %d" % len(body) in head
        assert sent_body == body and json.loads(body)
