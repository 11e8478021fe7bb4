# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""AzureConnection: one credential and the SDK clients built on it, for one task (or one plugin run).

Every request goes through the SDK client's own azure-core pipeline (authentication, retries that honour
Retry-After, the user agent). Where many requests share Azure's budgets (the fleet, the inventory, the event
source, scale-set rollouts) the connection is made with pacing=True, which adds the throttling scheduler
(module_utils/scheduler.py) to that pipeline.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import importlib
import importlib.util
import json
import threading

try:
    from urllib.parse import urlencode, urlparse
except ImportError:  # Python 2 (ansible-test sanity compiles every file for it)
    from urllib import urlencode  # type: ignore
    from urlparse import urlparse  # type: ignore

from ansible_collections.azure_vm.extensions.plugins.module_utils.arm import as_rest
from ansible_collections.azure_vm.extensions.plugins.module_utils.auth import (
    DEFAULT_POLLING_INTERVAL,
    USER_AGENT,
    CredentialBuilder,
    prefetch_token,
    resolve_cloud,
)
from ansible_collections.azure_vm.extensions.plugins.module_utils.errors import HttpResponseError
from ansible_collections.azure_vm.extensions.plugins.module_utils.scheduler import Scheduler

try:
    import requests
    from azure.core.pipeline.policies import SansIOHTTPPolicy
    from azure.core.pipeline.transport import RequestsTransport
    from azure.core.rest import HttpRequest
except ImportError:  # the module wrapper reports the missing SDK
    requests = None
    SansIOHTTPPolicy = object
    RequestsTransport = None
    HttpRequest = None

# Each SDK client: where it lives and the pip package that brings it (for a clear "install this" failure).
SDK_CLIENTS = {
    "compute": ("azure.mgmt.compute", "ComputeManagementClient", "azure-mgmt-compute"),
    "features": ("azure.mgmt.resource.features", "FeatureClient", "azure-mgmt-resource-features"),
    "resources": ("azure.mgmt.resource.resources", "ResourceManagementClient", "azure-mgmt-resource"),
}


_STREAMS_JSON = {}


def _streams_json(name):
    """True when the SDK of client `name` is TypeSpec-generated (its models are mappings of the wire JSON, built by
    _utils/model_base.py): its operations return the body unparsed with stream=True."""
    if name not in _STREAMS_JSON:
        package = SDK_CLIENTS[name][0]
        found = False
        for helper in ("._utils.model_base", "._model_base"):
            try:
                found = found or importlib.util.find_spec(package + helper) is not None
            except (ImportError, ValueError):
                pass
        _STREAMS_JSON[name] = found
    return _STREAMS_JSON[name]


class SteadyEnvironmentSession(requests.Session if requests else object):
    """A requests.Session that reads the environment (proxies, no_proxy, REQUESTS_CA_BUNDLE) once per scheme, host and
    request settings, where requests reads it at every request: it walks the whole environment twice per request,
    0.2 ms of CPU with 35 variables and 0.5 ms with 100, a fifth of a fleet request's. The answer depends on the
    environment and the URL's scheme and host only, and a module's environment does not change while it runs."""

    def __init__(self):
        super(SteadyEnvironmentSession, self).__init__()
        self._merged = {}

    def merge_environment_settings(self, url, proxies, stream, verify, cert):
        parts = urlparse(url)
        key = (parts.scheme, parts.netloc, tuple(sorted((proxies or {}).items())), stream, verify, cert)
        merged = self._merged.get(key)
        if merged is None:
            merged = super(SteadyEnvironmentSession, self).merge_environment_settings(
                url, None if proxies is None else dict(proxies), stream, verify, cert)
            self._merged[key] = merged
        proxies = merged["proxies"]
        return dict(merged, proxies=None if proxies is None else dict(proxies))  # a copy: requests may change it


class ArmThrottlePacingPolicy(SansIOHTTPPolicy):
    """Every request of one connection goes through the throttling scheduler (module_utils/scheduler.py).

    Sits right after azure-core's RetryPolicy (a per-retry policy), so it sees every try: before a request it
    waits for a slot in each bucket that applies (ARM's per subscription and kind, Compute's per policy and per
    VM), after the response it corrects those buckets from the x-ms-ratelimit-remaining-* headers, and a 429
    holds the bucket it names until Retry-After (RetryPolicy itself sleeps Retry-After and retries).
    """

    CONTEXT_KEY = "azure_vm_extensions_throttle"

    def __init__(self, scheduler=None):
        self.scheduler = scheduler or Scheduler()

    def on_request(self, request):
        http = request.http_request
        keys = self.scheduler.keys_for(http.method, urlparse(http.url).path)
        request.context[self.CONTEXT_KEY] = (keys, self.scheduler.acquire(keys))

    def on_response(self, request, response):
        found = request.context.pop(self.CONTEXT_KEY, None)
        if not found:
            return
        keys, buckets = found
        http = response.http_response
        body = None
        if http.status_code == 429:
            try:
                if hasattr(http, "read"):
                    http.read()  # a response asked for with stream=True (call_json) has not loaded its body yet
                body = http.text()
            except Exception:  # pylint: disable=broad-except  # a body we cannot read names no bucket
                body = None
        self.scheduler.complete(buckets, keys, http.status_code, http.headers, body)

    def on_exception(self, request):
        found = request.context.pop(self.CONTEXT_KEY, None)
        if found:
            self.scheduler.complete(found[1], found[0], 0, {})


class AzureConnection(object):
    """Credentials, endpoints and SDK clients for one task. Raises AzureAuthError when the options cannot work.

    params: the auth options (validated: AzureModule's params, or auth.validate_auth_options()). pacing: put the
    throttling scheduler in every client's pipeline (see the module docstring)."""

    def __init__(self, params, pacing=False):
        self.polling_interval = params.get("polling_interval") or DEFAULT_POLLING_INTERVAL
        self.ca_bundle = params.get("ca_bundle")
        cloud = resolve_cloud(params.get("cloud_environment") or "AzureCloud", self.ca_bundle)
        self.arm_endpoint = cloud.arm_endpoint
        self.audience = cloud.audience
        self.scope = cloud.scope
        builder = CredentialBuilder(params, cloud)
        self.credential, self.subscription_id, self.auth_source = builder.build()
        self._transport = builder.transport_kwargs()
        self._prefetch = prefetch_token(self.credential, self.scope, self.auth_source)
        self.pacing = ArmThrottlePacingPolicy() if pacing else None
        self.threads = None  # threads that send at once through each SDK client (use_threads); None: azure-core's
        self._clients = {}
        self._lock = threading.Lock()  # the fleet's and the inventory's threads ask for clients at once
        # subscription (lower case) -> this connection for it (for_subscription), shared by all of them
        self._siblings = {(self.subscription_id or "").lower(): self}

    def get_token(self):
        """The ARM token, once: a prefetch in flight is waited for (its token is in the credential's cache), so that
        callers that fetch it up front (the fleet, the inventory, before their threads start) do not ask twice."""
        with self._lock:
            self._join_prefetch()
        return self.credential.get_token(self.scope)

    def _join_prefetch(self):
        if self._prefetch is not None:
            self._prefetch.join()  # the token is in the credential's cache now: no second token request
            self._prefetch = None

    @property
    def scheduler(self):
        """The throttling scheduler of a paced connection, else None."""
        return self.pacing.scheduler if self.pacing else None

    def for_subscription(self, subscription_id):
        """This connection for another subscription: the same credential (one token), endpoints and pacing. One
        per subscription, kept (its SDK clients and their HTTP connections are reused, call after call)."""
        if (subscription_id or "").lower() == (self.subscription_id or "").lower():
            return self
        with self._lock:
            other = self._siblings.get(subscription_id.lower())
            if other is None:
                other = copy.copy(self)  # shares the credential, the lock, the pacing and this dict
                other.subscription_id = subscription_id
                other._clients = {}
                self._siblings[subscription_id.lower()] = other
        return other

    def use_threads(self, count):
        """The SDK clients built from now on (of this connection and of those for_subscription makes later) serve
        `count` threads at once: each keeps `count` HTTPS connections open, one per thread (requests keeps 10, so with
        more threads every connection beyond the tenth was closed when its response was read and the next request
        paid a new TLS handshake: one request in ten for the fleet's 32 threads), and reads the environment once
        (SteadyEnvironmentSession)."""
        self.threads = count

    def client(self, name):
        """The SDK client `name` (a key of SDK_CLIENTS), built once per connection."""
        with self._lock:
            return self._client(name)

    def _client(self, name):
        if name not in self._clients:
            module_name, class_name, dummy = SDK_CLIENTS[name]
            factory = getattr(importlib.import_module(module_name), class_name)
            self._join_prefetch()
            kwargs = dict(self._transport)
            if self.pacing is not None:
                kwargs["per_retry_policies"] = [self.pacing]
            if self.threads:
                kwargs["transport"] = self._threads_transport()
            self._clients[name] = factory(self.credential, self.subscription_id, base_url=self.arm_endpoint,
                                          credential_scopes=[self.scope], user_agent=USER_AGENT,
                                          polling_interval=self.polling_interval, **kwargs)
        return self._clients[name]

    def _threads_transport(self):
        """azure-core's RequestsTransport on a SteadyEnvironmentSession that carries the adapters azure-core mounts on
        a session of its own (urllib3's retries off), their pools sized to keep `threads` connections."""
        template = RequestsTransport()
        template.open()  # azure-core's session and adapters, as it builds them for a client by itself
        session = SteadyEnvironmentSession()
        for prefix, adapter in template.session.adapters.items():
            adapter.init_poolmanager(self.threads, self.threads)
            session.mount(prefix, adapter)
        return RequestsTransport(session=session, **self._transport)

    def call_json(self, name, group, operation, *args, **kwargs):
        """client(name).<group>.<operation>(*args, **kwargs), an operation that answers one resource, as its REST
        JSON. TypeSpec-generated SDKs hand over the raw body with stream=True and build no model (the model and
        as_rest() back to JSON cost more CPU than the request itself for a VM read with its instance view); the
        request, its errors (raised by the SDK as without stream) and the pipeline (credential, retries, pacing) are
        the SDK's. Older generators take no stream keyword: their model is turned into JSON by as_rest()."""
        method = getattr(getattr(self.client(name), group), operation)
        if not _streams_json(name):
            return as_rest(method(*args, **kwargs))
        return json.loads(b"".join(method(*args, stream=True, **kwargs)))

    def list_pages(self, name, path, query):
        """Each page (a list of REST JSON dicts) of the ARM list at path, nextLink after nextLink, sent through the
        SDK client `name`'s own pipeline (credential, retries with Retry-After, pacing, user agent) but without
        building SDK models: a status sweep over thousands of VMs then costs a JSON parse per page, where the SDK's
        models took about 70 ms of CPU per page of 50 VMs. query carries the api-version."""
        client = self.client(name)
        # send_request is public in TypeSpec-generated SDKs; the older generators name it _send_request, and the
        # multi-API clients (azure-mgmt-compute 27, the lowest supported) have neither: their ARMPipelineClient
        # (_client) does what send_request does, given the URL made absolute.
        send = getattr(client, "send_request", None) or getattr(client, "_send_request", None)
        if send is None:
            pipeline = client._client  # pylint: disable=protected-access

            def send(request):
                return pipeline.send_request(HttpRequest(request.method, pipeline.format_url(request.url)))
        url = "%s?%s" % (path, urlencode(query))
        while url:
            response = send(HttpRequest("GET", url))
            if response.status_code != 200:
                raise HttpResponseError(response=response)
            body = response.json()
            yield body.get("value") or []
            url = body.get("nextLink")

    @property
    def compute(self):
        return self.client("compute")

    @property
    def features(self):
        return self.client("features")

    @property
    def resources(self):
        return self.client("resources")
