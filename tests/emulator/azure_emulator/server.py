"""HTTPS front door: admin API, Entra ID + metadata endpoints, and ARM with auth, throttling, faults and a log.

Order of checks for an ARM request mirrors ARM itself: injected `match` faults first (they stand in for
anything upstream), then authentication, api-version, throttling, and only then the resource provider.
"""
import argparse
import json
import os
import secrets
import signal
import socket
import ssl
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import yaml

from . import auth, compute, features, vmss
from .throttling import SimClock, Throttling
from .arm import Ctx, Router
from .errors import ArmError
from .state import ARM_AUDIENCE, State
from .tls import make_certificates

# Host names of the public cloud that --public-cloud serves (reached through public_cloud_proxy.py, which
# tunnels them to this emulator only). They go into the server certificate's SANs.
PUBLIC_CLOUD_HOSTS = ("management.azure.com", "login.microsoftonline.com", "login.windows.net",
                      "management.core.windows.net")
PUBLIC_CLOUD_AUDIENCES = ["https://management.azure.com/", "https://management.core.windows.net/"]
DEFAULT_SEED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "default-seed.yml")


def mask_protected(value, inside=False):
    """Replace every value under any `protectedSettings` object with "***", keeping the keys."""
    if isinstance(value, dict):
        return {k: mask_protected(v, inside or k == "protectedSettings") for k, v in value.items()}
    if isinstance(value, list):
        return [mask_protected(v, inside) for v in value]
    return "***" if inside else value


def metadata(base_url, api_version):
    """ARM's cloud metadata: the list form for 2022-09-01, the older single object for 1.0/2015-01-01."""
    login = base_url + "/"
    if api_version in ("1.0", "2015-01-01"):
        return {
            "galleryEndpoint": login, "graphEndpoint": login, "portalEndpoint": login,
            "authentication": {"loginEndpoint": login, "audiences": [ARM_AUDIENCE]},
        }
    return [{
        "portal": login, "authentication": {"loginEndpoint": login, "audiences": [ARM_AUDIENCE],
                                            "tenant": "common", "identityProvider": "AAD"},
        "media": login, "graphAudience": login, "graph": login, "name": "AzureEmulator",
        "suffixes": {"azureDataLakeStoreFileSystem": "azuredatalakestore.azure-emulator.local",
                     "acrLoginServer": "azurecr.azure-emulator.local", "sqlServerHostname": "database.azure-emulator.local",
                     "azureDataLakeAnalyticsCatalogAndJob": "azuredatalakeanalytics.azure-emulator.local",
                     "keyVaultDns": "vault.azure-emulator.local", "storage": "core.azure-emulator.local",
                     "azureFrontDoorEndpointSuffix": "azurefd.azure-emulator.local"},
        "batch": login, "resourceManager": login, "vmImageAliasDoc": login, "activeDirectoryDataLake": login,
        "sqlManagement": login, "gallery": login,
    }]


class Emulator:
    """Owns the state, the router and the admin-facing bits; the request handler class delegates here."""

    def __init__(self, seed, state_dir):
        self.state = State(seed)
        self.state_dir = state_dir
        self.msi_header = secrets.token_hex(16)
        self.base_url = ""
        self.public_cloud = False
        self.clock = SimClock(self.state.settings["time_scale"])
        self.throttling = Throttling(self.state, self.clock)
        self.router = Router()
        for module in (compute, vmss, features):
            module.register(self.router)
        features.register_resource_groups(self.router)
        features.register_subscriptions(self.router)

    # --- ARM -----------------------------------------------------------------------------------------------
    def arm(self, method, path, query, headers, body):
        """(status, body, headers) for an ARM request.

        Both throttling layers run on the simulated clock (throttling.py): ARM's buckets once the caller is known,
        Compute's once ARM has routed the request to a resource provider operation.
        """
        state = self.state
        # The base of the URLs ARM writes (nextLink, Azure-AsyncOperation, Location): the public host the client
        # asked for when it came through the public-cloud proxy, as Azure's own answers name management.azure.com.
        host = (headers.get("Host") or "").split(":")[0].lower()
        base_url = f"https://{host}" if self.public_cloud and host in PUBLIC_CLOUD_HOSTS else self.base_url
        extra = {"x-ms-request-id": str(uuid.uuid4()),
                 "x-ms-correlation-request-id": headers.get("x-ms-correlation-request-id") or str(uuid.uuid4())}
        try:
            claims = auth.verify_bearer(headers.get("Authorization"))
            if not query.get("api-version"):
                raise ArmError(400, "MissingApiVersionParameter",
                               "The api-version query parameter (?api-version=) is required for all requests.")
            with state.lock:
                now = self.clock.now()
                sub = None
                parts = path.split("/")
                if len(parts) > 2 and parts[1].lower() == "subscriptions":
                    sub = state.subscriptions.get(parts[2].lower())
                    if sub is None:
                        raise ArmError(404, "SubscriptionNotFound", f"The subscription '{parts[2]}' could not be found.")
                extra.update(self.throttling.arm(claims, sub.id if sub else None, claims.get("tid"), method, now))
                func, groups = self.router.resolve(method, path)
                if body is not None and not isinstance(body, dict):
                    raise ArmError(400, "InvalidRequestContent", "The request content must be a JSON object.")
                ctx = Ctx(state, now, method, path, query, body if body is not None else {}, base_url, sub)
                ctx.claims = claims  # who asks: GET /subscriptions lists the caller's own subscriptions
                if sub is not None:
                    # After ARM's own checks (route, api-version): Compute throttles what reaches it.
                    ctx.admitted = lambda: extra.update(self.throttling.compute(sub.id, method, path, now, extra))
                result = func(ctx, **groups)
                if len(result) > 2:
                    self.throttling.note_operation(method, path, result[2])
        except ArmError as exc:
            extra.update(exc.headers)
            return exc.status, exc.body(), extra, getattr(exc, "policy", None)
        status, payload = result[0], result[1]
        if len(result) > 2:
            extra.update(result[2])
        return status, payload, extra, None

    # --- admin ---------------------------------------------------------------------------------------------
    def admin(self, method, action, body):
        state = self.state
        if method == "POST" and action == "reset":
            with state.lock:
                state.reset()
                self.clock.reset(state.settings["time_scale"])
            return 200, {"status": "reset"}
        if method == "GET" and action == "requests":
            with state.lock:
                return 200, sorted(state.requests, key=lambda entry: entry["time"])
        if method == "POST" and action == "faults":
            if not isinstance(body, list):
                return 400, {"error": "POST faults takes a JSON list of rules"}
            state.add_faults(body)
            return 200, {"faults": len(state.faults)}
        if method == "POST" and action == "settings":
            if not isinstance(body, dict):
                return 400, {"error": "POST settings takes a JSON object"}
            with state.lock:
                state.merge_settings(body)
                self.clock.set_scale(state.settings["time_scale"])
            return 200, state.settings
        if action == "clock" and method in ("GET", "POST"):
            with state.lock:
                if method == "POST":
                    advance = (body or {}).get("advance_s") if isinstance(body, dict) else None
                    if not isinstance(advance, (int, float)) or isinstance(advance, bool) or advance < 0:
                        return 400, {"error": "POST clock takes {\"advance_s\": seconds >= 0}"}
                    self.clock.advance(advance)
                return 200, {"now": self.clock.now(), "time_scale": self.clock.scale, "real_time": time.time()}
        if method == "GET" and action == "state":
            return 200, self.dump_state()
        if method == "POST" and action == "vm":
            return self.set_vm(body)
        if method == "GET" and action == "handler-runs":
            with state.lock:
                return 200, list(state.handler_runs)
        if method == "POST" and action == "fingerprint":
            # The digest handler-runs shows for these protected settings (keyed per process): a test compares
            # without the emulator ever storing or returning a value.
            if not isinstance(body, dict) or set(body) != {"protectedSettings"}:
                return 400, {"error": "POST fingerprint takes {\"protectedSettings\": <value or null>}"}
            return 200, {"fingerprint": state.protected_digest(body["protectedSettings"])}
        return 404, {"error": f"unknown admin call {method} /_emulator/{action}"}

    VM_POWER_STATES = ("running", "stopped", "deallocated")
    AGENT_STATES = ("Ready", "NotReady")

    def set_vm(self, body):
        """POST vm {"resource_group", "name", "subscription"?, "power_state"?, "agent_status"?}: what happens to a
        VM outside this API (its guest agent stops or comes back, someone deallocates or starts it), so that
        watchers of the instance view (the extension_state event source) can be shown a transition. The instance
        view then reports it as a seeded VM in that state would (PowerState/..., the vmAgent status)."""
        if not isinstance(body, dict) or not body.get("resource_group") or not body.get("name"):
            return 400, {"error": "POST vm takes {\"resource_group\", \"name\", \"subscription\"?, "
                                  "\"power_state\"?, \"agent_status\"?}"}
        power, agent = body.get("power_state"), body.get("agent_status")
        if power is not None and power not in self.VM_POWER_STATES:
            return 400, {"error": f"power_state must be one of {', '.join(self.VM_POWER_STATES)}, not {power!r}"}
        if agent is not None and agent not in self.AGENT_STATES:
            return 400, {"error": f"agent_status must be one of {', '.join(self.AGENT_STATES)}, not {agent!r}"}
        state = self.state
        with state.lock:
            subs = list(state.subscriptions.values())
            if body.get("subscription"):
                subs = [sub for sub in subs if sub.id.lower() == str(body["subscription"]).lower()]
            for sub in subs:
                vm = sub.vms.get((body["resource_group"].lower(), body["name"].lower()))
                if vm is not None:
                    if power is not None:
                        vm.power_state = power
                    if agent is not None:
                        vm.agent_status = agent
                    return 200, {"name": vm.name, "resource_group": vm.rg, "power_state": vm.power_state,
                                 "agent_status": vm.agent_status}
        return 404, {"error": f"no VM {body['name']!r} in resource group {body['resource_group']!r}"}

    def dump_state(self):
        """A readable snapshot for debugging (protected settings are never stored, so never shown)."""
        state = self.state
        with state.lock:
            now = self.clock.now()
            ctx_base = {"settings": state.settings, "faults": state.faults, "subscriptions": []}
            for sub in state.subscriptions.values():
                ctx = Ctx(state, now, "GET", "", {}, {}, self.base_url, sub)
                ctx_base["subscriptions"].append({
                    "id": sub.id, "tenant": sub.tenant,
                    "resource_groups": list(sub.resource_groups.values()),
                    "vms": [compute.vm_body(ctx, vm, True) | {"extensions": [
                        compute.extension_body(ctx, vm, ext) for ext in vm.extensions.values()]}
                        for vm in sub.vms.values()],
                    "scale_sets": [vmss.scale_set_body(ctx, ss) for ss in sub.scale_sets.values()],
                    "features": {f"{f.namespace}/{f.name}": f.current(now) for f in sub.features.values()},
                    "providers": {p.namespace: p.current(now) for p in sub.providers.values()},
                })
            return ctx_base

    def log(self, entry):
        with self.state.lock:
            self.state.requests.append(entry)


def _number(value):
    """A Retry-After header as a number of seconds (int or float), or the text when it is an HTTP date."""
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return value
    return int(number) if number.is_integer() else number


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "AzureEmulator/1.0"
    timeout = 120
    emulator = None  # set by serve()

    def log_message(self, fmt, *args):  # the request log is the admin API, not stderr
        pass

    def _read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status, payload, headers=None):
        """Status line, headers and body in ONE write.

        BaseHTTPRequestHandler writes the headers on end_headers() and the body in a second write; on a kept-alive
        connection the second small segment then waits for the client's delayed ACK (~40 ms on Linux), which
        capped every client at about 22 requests per second per connection. One buffer, one write (plus
        TCP_NODELAY on the socket, see Server.get_request) and a response leaves at once.
        """
        data = b"" if payload is None else json.dumps(payload).encode()
        lines = [f"{self.protocol_version} {status} {self.responses.get(status, ('',))[0]}".rstrip(),
                 f"Server: {self.version_string()}", f"Date: {self.date_time_string()}"]
        if payload is not None:
            lines.append("Content-Type: application/json; charset=utf-8")
        lines += [f"Content-Length: {len(data)}", "Cache-Control: no-cache", "Pragma: no-cache", "Expires: -1"]
        lines += [f"{key}: {value}" for key, value in (headers or {}).items()]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "strict")
        self.wfile.write(head if self.command == "HEAD" else head + data)

    def do_GET(self):
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

    def _dispatch(self):
        started = time.time()
        emulator = self.emulator
        split = urlsplit(self.path)
        path = split.path
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        raw = self._read_body()
        method = self.command
        if path.startswith("/_emulator/"):
            try:
                body = json.loads(raw) if raw else None
                status, payload = emulator.admin(method, path[len("/_emulator/"):].strip("/"), body)
            except ValueError as exc:
                status, payload = 400, {"error": str(exc)}
            self._send(status, payload)
            return
        secret_body = path.endswith("/token")  # token endpoints: form bodies are never logged
        logged_body = None
        body = None
        content_type = self.headers.get("Content-Type", "")
        if raw and not secret_body and "json" in content_type:
            try:
                body = json.loads(raw)
                logged_body = mask_protected(body)
            except ValueError:
                body = ValueError
        status, payload, headers, policy = self._route(method, path, query, raw, body)
        self._send(status, payload, headers)
        entry = {
            "method": method, "path": path, "query": query, "status": status, "time": started,
            "duration_ms": round((time.time() - started) * 1000, 3),
            "client_request_id": self.headers.get("x-ms-client-request-id"),
            "user_agent": self.headers.get("User-Agent"), "body": logged_body,
            # The client's end of the TCP connection (host:port): requests on one kept-alive connection share it,
            # so tests can count the connections (TLS handshakes) a client opened.
            "connection": "%s:%s" % tuple(self.client_address[:2]),
        }
        if status == 429:
            # What refused it: a throttling bucket ("ARM/subscription-reads", "Microsoft.Compute/UpdateVMResource",
            # "window/writes") or an injected fault; and the Retry-After sent, in the caller's seconds.
            entry["throttled_by"] = policy or "fault"
            entry["retry_after"] = _number(next((v for k, v in (headers or {}).items() if k.lower() == "retry-after"),
                                                None))
        emulator.log(entry)

    def _route(self, method, path, query, raw, body):
        """(status, body, headers, throttling policy or None)."""
        status, payload, headers, *policy = self._answer(method, path, query, raw, body)
        return status, payload, headers, (policy or [None])[0]

    def _answer(self, method, path, query, raw, body):
        emulator = self.emulator
        with emulator.state.lock:
            fault = emulator.state.take_match_fault(method, path)
        if fault is not None:
            return fault.get("status", 500), fault.get("body"), fault.get("headers") or {}
        parts = path.strip("/").split("/")
        lowered = path.lower()
        if lowered == "/metadata/endpoints":
            return 200, metadata(emulator.base_url, query.get("api-version", "")), {}
        if lowered == "/msi/token" and method == "GET":
            status, payload = auth.msi_response(emulator.state, emulator.base_url, query,
                                                self.headers.get("X-IDENTITY-HEADER"), emulator.msi_header)
            return status, payload, {}
        host = (self.headers.get("Host") or "").split(":")[0].lower()
        login_base = f"https://{host}" if host in PUBLIC_CLOUD_HOSTS and emulator.public_cloud else emulator.base_url
        if lowered == "/common/discovery/instance" and method == "GET" and emulator.public_cloud:
            return 200, auth.instance_discovery(host or "127.0.0.1"), {}
        if len(parts) >= 3 and lowered.endswith("/.well-known/openid-configuration") and method == "GET":
            tenant = parts[0]
            if not emulator.state.tenant_known(tenant):
                return 400, {"error": "invalid_tenant",
                             "error_description": f"AADSTS90002: Tenant '{tenant}' not found."}, {}
            return 200, auth.openid_configuration(login_base, tenant), {}
        if len(parts) == 4 and lowered.endswith("/oauth2/v2.0/token") and method == "POST":
            form = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
            status, payload = auth.token_response(emulator.state, login_base, parts[0], form)
            return status, payload, {}
        if lowered.startswith(("/subscriptions", "/providers")):
            if body is ValueError:
                return 400, {"error": {"code": "InvalidRequestContent",
                                       "message": "The request content was invalid and could not be deserialized."}}, {}
            return emulator.arm(method, path, query, self.headers, body)
        return 404, {"error": {"code": "NotFound", "message": f"No endpoint at {path}."}}, {}


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512

    def __init__(self, address, handler, context):
        super().__init__(address, handler)
        self.context = context

    def get_request(self):
        sock, addr = super().get_request()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle wait for a response's last segment
        # The TLS handshake runs in the worker thread, so one slow client cannot stall accept().
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr


def make_server(emulator, handler_class, port=0):
    """(Server on 127.0.0.1:port serving emulator through handler_class, CA path); sets emulator.base_url."""
    ca_path, cert_path, key_path = make_certificates(emulator.state_dir,
                                                     PUBLIC_CLOUD_HOSTS if emulator.public_cloud else ())
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    handler_class.emulator = emulator
    server = Server(("127.0.0.1", port), handler_class, context)
    emulator.base_url = f"https://127.0.0.1:{server.server_address[1]}"
    return server, ca_path


def write_endpoint(state_dir, emulator, ca_path):
    sub = next(iter(emulator.state.subscriptions.values()))
    client_id, principal = next(iter(sub.service_principals.items()))
    base = emulator.base_url
    info = {
        "base_url": base,
        "ca_bundle": ca_path,
        "env": {
            "AZURE_CLOUD_ENVIRONMENT": base,
            "AZURE_SUBSCRIPTION_ID": sub.id,
            "AZURE_CLIENT_ID": client_id,
            "AZURE_SECRET": principal["secret"] or "",
            "AZURE_TENANT": sub.tenant,
            "REQUESTS_CA_BUNDLE": ca_path,
        },
        "msi_endpoint": f"{base}/msi/token",
        "msi_header": emulator.msi_header,
        "audience": ARM_AUDIENCE,
        "public_cloud": emulator.public_cloud,
        "pid": os.getpid(),
    }
    path = os.path.join(state_dir, "endpoint.json")
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(info, handle, indent=2)
    os.replace(path + ".tmp", path)


def main(argv=None):
    parser = argparse.ArgumentParser(description="HTTPS emulator of the Azure endpoints used by azure_vm.extensions")
    parser.add_argument("--state-dir", required=True, help="directory for the CA, certificates and endpoint.json")
    parser.add_argument("--seed", default=DEFAULT_SEED, help="YAML seed (see seed.example.yml)")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = pick a free one)")
    parser.add_argument("--public-cloud", action="store_true",
                        help="also answer as AzureCloud (management.azure.com, login.microsoftonline.com) for "
                             "unmodified clients reaching it through public_cloud_proxy.py")
    args = parser.parse_args(argv)

    os.makedirs(args.state_dir, exist_ok=True)
    with open(args.seed, encoding="utf-8") as handle:
        seed = yaml.safe_load(handle) or {}
    emulator = Emulator(seed, os.path.abspath(args.state_dir))
    if not emulator.state.subscriptions:
        parser.error("the seed defines no subscription")
    emulator.public_cloud = args.public_cloud
    if args.public_cloud:
        auth.EXTRA_AUDIENCES.extend(PUBLIC_CLOUD_AUDIENCES)
    server, ca_path = make_server(emulator, Handler, args.port)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    write_endpoint(emulator.state_dir, emulator, ca_path)
    print(f"azure-emulator listening on {emulator.base_url}", file=sys.stderr, flush=True)
    while not stop.wait(0.5):
        pass
    server.shutdown()
    server.server_close()
    return 0
