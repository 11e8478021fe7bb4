# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one place that knows how to reach Azure.

Auth options and environment variables (drop-in for azure.azcollection and AWX's Azure credential), cloud
endpoints (public, sovereign, or a custom ARM metadata URL as on Azure Stack Hub and the emulator), the CA
bundle, building SDK clients, waiting on long-running operations, and turning SDK errors into one message.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import configparser
import importlib
import json
import os
import shutil
import threading
import time
import traceback

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib
from ansible.module_utils.ansible_release import __version__ as ANSIBLE_VERSION

try:
    from azure.core import PipelineClient
    from azure.core.exceptions import AzureError, HttpResponseError
    from azure.core.pipeline.policies import SansIOHTTPPolicy
    from azure.core.rest import HttpRequest
    from azure.identity import (
        AzureCliCredential,
        CertificateCredential,
        ClientSecretCredential,
        ManagedIdentityCredential,
        WorkloadIdentityCredential,
    )

    HAS_AZURE = True
    AZURE_IMPORT_ERROR = None
except ImportError:
    HAS_AZURE = False
    AZURE_IMPORT_ERROR = traceback.format_exc()

    class AzureError(Exception):  # noqa: D101 - keeps except clauses valid when the SDK is missing
        pass

    HttpResponseError = AzureError
    SansIOHTTPPolicy = object

# Each SDK client: where it lives and the pip package that brings it (for a clear "install this" failure).
SDK_CLIENTS = {
    "compute": ("azure.mgmt.compute", "ComputeManagementClient", "azure-mgmt-compute"),
    "features": ("azure.mgmt.resource.features", "FeatureClient", "azure-mgmt-resource-features"),
    "resources": ("azure.mgmt.resource.resources", "ResourceManagementClient", "azure-mgmt-resource"),
}

COLLECTION_VERSION = "0.1.0"
USER_AGENT = "azure_vm.extensions/%s ansible-core/%s" % (COLLECTION_VERSION, ANSIBLE_VERSION)

# Known clouds: ARM endpoint, Entra ID authority, token audience (the values `az cloud show` prints).
KNOWN_CLOUDS = {
    "AzureCloud": ("https://management.azure.com/", "https://login.microsoftonline.com/",
                   "https://management.core.windows.net/"),
    "AzureChinaCloud": ("https://management.chinacloudapi.cn/", "https://login.chinacloudapi.cn/",
                        "https://management.core.chinacloudapi.cn/"),
    "AzureUSGovernment": ("https://management.usgovcloudapi.net/", "https://login.microsoftonline.us/",
                          "https://management.core.usgovcloudapi.net/"),
}
# azure.azcollection and msrestazure spell the public clouds this way too.
CLOUD_ALIASES = {"AZURE_PUBLIC_CLOUD": "AzureCloud", "AZURE_CHINA_CLOUD": "AzureChinaCloud",
                 "AZURE_US_GOV_CLOUD": "AzureUSGovernment"}

AUTH_SOURCES = ["auto", "credential_file", "env", "options", "msi", "cli", "workload_identity"]
DEFAULT_POLLING_INTERVAL = 15

AZURE_AUTH_ARGSPEC = dict(
    auth_source=dict(type="str", default="auto", choices=AUTH_SOURCES,
                     fallback=(env_fallback, ["ANSIBLE_AZURE_AUTH_SOURCE"])),
    profile=dict(type="str", fallback=(env_fallback, ["AZURE_PROFILE"])),
    subscription_id=dict(type="str", fallback=(env_fallback, ["AZURE_SUBSCRIPTION_ID"])),
    client_id=dict(type="str"),
    secret=dict(type="str", no_log=True),
    tenant=dict(type="str"),
    x509_certificate_path=dict(type="path"),
    cert_password=dict(type="str", no_log=True),
    cloud_environment=dict(type="str", default="AzureCloud",
                           fallback=(env_fallback, ["AZURE_CLOUD_ENVIRONMENT"])),
    ca_bundle=dict(type="path", fallback=(env_fallback, ["AZURE_CA_BUNDLE", "REQUESTS_CA_BUNDLE"])),
    disable_instance_discovery=dict(type="bool", default=False),
    polling_interval=dict(type="float", default=DEFAULT_POLLING_INTERVAL,
                          fallback=(env_fallback, ["AZURE_POLLING_INTERVAL"])),
)
# Read from the environment only when the auth source calls for it, so explicit options never mix with env.
ENV_CREDENTIALS = {"client_id": "AZURE_CLIENT_ID", "secret": "AZURE_SECRET", "tenant": "AZURE_TENANT",
                   "x509_certificate_path": "AZURE_CERT_PATH", "cert_password": "AZURE_CERT_PASSWORD"}


class AzureAuthError(Exception):
    """Credentials or cloud settings that cannot work; the message is safe to show."""


def resolve_cloud(cloud_environment, ca_bundle=None):
    """Return (arm_endpoint, authority, audience, custom) for a cloud name or an ARM endpoint URL."""
    name = CLOUD_ALIASES.get(cloud_environment, cloud_environment)
    if name in KNOWN_CLOUDS:
        arm, authority, audience = KNOWN_CLOUDS[name]
        return arm, authority, audience, False
    if not str(cloud_environment).startswith("https://"):
        raise AzureAuthError("cloud_environment must be one of %s or an https:// URL of an ARM endpoint, got %r"
                             % (", ".join(sorted(KNOWN_CLOUDS)), cloud_environment))
    metadata = fetch_cloud_metadata(cloud_environment, ca_bundle)
    auth = metadata.get("authentication") or {}
    if not auth.get("loginEndpoint") or not auth.get("audiences"):
        raise AzureAuthError("the ARM metadata at %s has no authentication.loginEndpoint/audiences" % cloud_environment)
    arm = metadata.get("resourceManager") or cloud_environment
    return arm.rstrip("/") + "/", auth["loginEndpoint"], auth["audiences"][0], True


def fetch_cloud_metadata(arm_url, ca_bundle=None):
    """Read {arm}/metadata/endpoints the way Azure Stack Hub clients do: newer list form, then the older object."""
    base = arm_url.rstrip("/")
    client = PipelineClient(base_url=base, user_agent=USER_AGENT)
    verify = ca_bundle if ca_bundle else True
    errors = []
    for api_version in ("2022-09-01", "1.0"):
        url = "%s/metadata/endpoints?api-version=%s" % (base, api_version)
        try:
            response = client.send_request(HttpRequest("GET", url), connection_verify=verify)
        except AzureError as exc:
            raise AzureAuthError("cannot read cloud metadata from %s: %s" % (url, exc))
        if response.status_code != 200:
            errors.append("%s -> HTTP %s" % (url, response.status_code))
            continue
        body = response.json()
        if isinstance(body, list):
            # The newer form lists clouds; pick the one whose resourceManager is this endpoint.
            for cloud in body:
                if (cloud.get("resourceManager") or "").rstrip("/") == base:
                    return cloud
            if body:
                return body[0]
            errors.append("%s -> empty list" % url)
            continue
        return body
    raise AzureAuthError("cannot read cloud metadata: %s" % "; ".join(errors))


def read_credential_file(profile):
    """The [profile] section of ~/.azure/credentials (azure.azcollection's credential_file source)."""
    path = os.path.expanduser(os.environ.get("AZURE_CREDENTIAL_FILE", "~/.azure/credentials"))
    parser = configparser.ConfigParser()
    if not parser.read(path):
        return None
    section = profile or "default"
    if not parser.has_section(section):
        raise AzureAuthError("profile %r not found in %s" % (section, path))
    return dict(parser.items(section))


class ArmThrottlePacingPolicy(SansIOHTTPPolicy):
    """Pace every request of one connection against ARM's subscription throttling (shared by all its threads).

    Sits right after azure-core's RetryPolicy (a per-retry policy), so it sees every try. A 429 with Retry-After
    makes *all* requests of this connection hold off until then (RetryPolicy itself sleeps and retries the
    throttled one), so many concurrent callers produce one 429 per budget window instead of hammering ARM.
    It also remembers the x-ms-ratelimit-remaining-subscription-* headers (remaining[kind], lowest seen) and
    counts 429s, for callers that pace their own polling.
    """

    KINDS = ("writes", "reads", "deletes")

    def __init__(self):
        self._lock = threading.Lock()
        self.resume_at = 0.0
        self.remaining = {}
        self.lowest = {}
        self.throttled = 0

    def on_request(self, request):
        delay = self.resume_at - time.time()
        if delay > 0:
            time.sleep(delay)

    def on_response(self, request, response):
        headers = response.http_response.headers
        with self._lock:
            for kind in self.KINDS:
                value = headers.get("x-ms-ratelimit-remaining-subscription-" + kind)
                if value is not None and value.isdigit():
                    self.remaining[kind] = int(value)
                    self.lowest[kind] = min(int(value), self.lowest.get(kind, int(value)))
            if response.http_response.status_code == 429:
                self.throttled += 1
                try:
                    retry_after = float(headers.get("Retry-After") or 0)
                except ValueError:
                    retry_after = 0
                self.resume_at = max(self.resume_at, time.time() + retry_after)


class AzureConnection(object):
    """Credentials, endpoints and SDK clients for one module run."""

    def __init__(self, params):
        self.params = params
        self.polling_interval = params.get("polling_interval") or DEFAULT_POLLING_INTERVAL
        self.ca_bundle = params.get("ca_bundle")
        self.arm_endpoint, self.authority, self.audience, custom = resolve_cloud(
            params.get("cloud_environment") or "AzureCloud", self.ca_bundle)
        # Azure Stack Hub and other custom clouds have no instance discovery endpoint.
        self.disable_instance_discovery = custom or bool(params.get("disable_instance_discovery"))
        self.credential, self.subscription_id, self.auth_source = self._build_credential()
        self._clients = {}
        self.pacing = ArmThrottlePacingPolicy()

    # ---- credentials -------------------------------------------------------------------------------------------
    def _build_credential(self):
        source = self.params.get("auth_source") or "auto"
        options = dict((key, self.params.get(key)) for key in ENV_CREDENTIALS)
        options["subscription_id"] = self.params.get("subscription_id")
        skipped = []
        if source == "auto":
            source = self._detect_source(options, skipped)
            if source == "cli" and (options["client_id"] or os.environ.get("AZURE_CLIENT_ID")):
                # A half-given service principal is a mistake, not a request for the CLI login: say so.
                raise self._no_credential(skipped, "not tried, because a client_id is set for a service principal")
            if source == "cli" and not shutil.which("az"):
                raise self._no_credential(skipped, "the Azure CLI (az) is not on PATH")
        if source == "env":
            options.update((key, os.environ.get(var)) for key, var in ENV_CREDENTIALS.items())
            options["subscription_id"] = options["subscription_id"] or os.environ.get("AZURE_SUBSCRIPTION_ID")
            return self._service_principal(options, "env"), self._subscription(options), "env"
        if source == "credential_file":
            found = read_credential_file(self.params.get("profile"))
            if not found:
                raise AzureAuthError("auth_source=credential_file but no ~/.azure/credentials file was found")
            options.update((key, found.get(key)) for key in ENV_CREDENTIALS)
            options["subscription_id"] = options["subscription_id"] or found.get("subscription_id")
            return self._service_principal(options, "credential_file"), self._subscription(options), source
        if source == "options":
            return self._service_principal(options, "options"), self._subscription(options), source
        if source == "msi":
            client_id = options["client_id"] or os.environ.get("AZURE_CLIENT_ID")
            kwargs = self._transport_kwargs()
            credential = ManagedIdentityCredential(client_id=client_id, **kwargs) if client_id \
                else ManagedIdentityCredential(**kwargs)
            return credential, self._subscription(options), source
        if source == "workload_identity":
            token_file = os.environ.get("AZURE_FEDERATED_TOKEN_FILE")
            tenant = options["tenant"] or os.environ.get("AZURE_TENANT_ID") or os.environ.get("AZURE_TENANT")
            client_id = options["client_id"] or os.environ.get("AZURE_CLIENT_ID")
            if not (token_file and tenant and client_id):
                raise AzureAuthError("auth_source=workload_identity needs AZURE_FEDERATED_TOKEN_FILE, a tenant "
                                     "(tenant or AZURE_TENANT_ID) and a client_id (client_id or AZURE_CLIENT_ID)")
            credential = WorkloadIdentityCredential(tenant_id=tenant, client_id=client_id, token_file_path=token_file,
                                                    **self._identity_kwargs())
            return credential, self._subscription(options), source
        if source == "cli":
            try:
                return AzureCliCredential(), self._subscription(options, allow_cli=True), source
            except AzureAuthError as exc:
                if skipped:
                    raise self._no_credential(skipped, str(exc).replace("auth_source=cli: ", ""))
                raise
        raise AzureAuthError("auth_source must be one of %s, got %r" % (", ".join(AUTH_SOURCES), source))

    @staticmethod
    def _detect_source(options, skipped=None):
        """auto: explicit options, then AWX/CI env vars, then a credential file, workload identity, MSI, the CLI.

        skipped (a list) receives "source: why it did not apply" for every source passed over, for the error text.
        """
        skipped = [] if skipped is None else skipped
        if options["client_id"] and (options["secret"] or options["x509_certificate_path"]):
            return "options"
        skipped.append("options: client_id is set but neither secret nor x509_certificate_path" if options["client_id"]
                       else "options: no client_id given")
        if os.environ.get("AZURE_CLIENT_ID") and (os.environ.get("AZURE_SECRET") or os.environ.get("AZURE_CERT_PATH")):
            return "env"
        skipped.append("env: AZURE_CLIENT_ID is set but neither AZURE_SECRET nor AZURE_CERT_PATH"
                       if os.environ.get("AZURE_CLIENT_ID") else "env: AZURE_CLIENT_ID is not set")
        path = os.path.expanduser(os.environ.get("AZURE_CREDENTIAL_FILE", "~/.azure/credentials"))
        if os.path.exists(path):
            return "credential_file"
        skipped.append("credential_file: %s does not exist" % path)
        if os.environ.get("AZURE_FEDERATED_TOKEN_FILE"):
            return "workload_identity"
        skipped.append("workload_identity: AZURE_FEDERATED_TOKEN_FILE is not set")
        if os.environ.get("IDENTITY_ENDPOINT") or os.environ.get("MSI_ENDPOINT"):
            return "msi"
        skipped.append("msi: neither IDENTITY_ENDPOINT nor MSI_ENDPOINT is set")
        return "cli"

    @staticmethod
    def _no_credential(skipped, cli_reason):
        """The auth_source=auto failure: every source tried, in order, and why it did not apply."""
        return AzureAuthError("no Azure credential found. auth_source=auto tried, in order: %s; cli: %s. Give "
                              "client_id, secret (or x509_certificate_path) and tenant as options or AZURE_* "
                              "variables, or set auth_source explicitly." % ("; ".join(skipped), cli_reason))

    def _service_principal(self, options, origin):
        missing = [key for key in ("client_id", "tenant") if not options.get(key)]
        if missing:
            raise AzureAuthError("auth_source=%s needs %s for a service principal" % (origin, " and ".join(missing)))
        if options.get("secret"):
            return ClientSecretCredential(options["tenant"], options["client_id"], options["secret"],
                                          **self._identity_kwargs())
        if options.get("x509_certificate_path"):
            return CertificateCredential(options["tenant"], options["client_id"],
                                         certificate_path=options["x509_certificate_path"],
                                         password=options.get("cert_password"), **self._identity_kwargs())
        raise AzureAuthError("auth_source=%s needs a secret or an x509_certificate_path for client_id %s"
                             % (origin, options["client_id"]))

    def _subscription(self, options, allow_cli=False):
        subscription = options.get("subscription_id") or os.environ.get("AZURE_SUBSCRIPTION_ID")
        if subscription:
            return subscription
        if allow_cli:
            return self._cli_subscription()
        raise AzureAuthError("subscription_id is required (option subscription_id or AZURE_SUBSCRIPTION_ID)")

    @staticmethod
    def _cli_subscription():
        import subprocess  # only the cli source needs it

        try:
            out = subprocess.check_output(["az", "account", "show", "--output", "json"])
        except (OSError, subprocess.CalledProcessError) as exc:
            raise AzureAuthError("auth_source=cli: no subscription_id given and `az account show` failed: %s" % exc)
        return json.loads(out)["id"]

    def _transport_kwargs(self):
        return {"connection_verify": self.ca_bundle} if self.ca_bundle else {}

    def _identity_kwargs(self):
        kwargs = self._transport_kwargs()
        kwargs["authority"] = self.authority
        if self.disable_instance_discovery:
            kwargs["disable_instance_discovery"] = True
        return kwargs

    # ---- clients -----------------------------------------------------------------------------------------------
    def _client(self, key, factory):
        if key not in self._clients:
            kwargs = self._transport_kwargs()
            self._clients[key] = factory(self.credential, self.subscription_id, base_url=self.arm_endpoint,
                                         credential_scopes=[self.audience.rstrip("/") + "/.default"],
                                         user_agent=USER_AGENT, polling_interval=self.polling_interval,
                                         per_retry_policies=[self.pacing], **kwargs)
        return self._clients[key]

    def client(self, name):
        """The SDK client `name` (a key of SDK_CLIENTS), built once per connection."""
        module_name, class_name, dummy = SDK_CLIENTS[name]
        return self._client(name, getattr(importlib.import_module(module_name), class_name))

    @property
    def compute(self):
        return self.client("compute")

    @property
    def features(self):
        return self.client("features")

    @property
    def resources(self):
        return self.client("resources")


def describe_azure_error(exc, operation, resource_id=None):
    """One line: what we did, on what, ARM's error code and message, and the ids support asks for."""
    parts = [operation]
    if resource_id:
        parts.append(resource_id)
    text = " ".join(parts) + " failed"
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None)
    message = getattr(error, "message", None) or getattr(exc, "message", None) or str(exc)
    status = getattr(exc, "status_code", None)
    text += ": " + ("%s: " % code if code else "") + message.strip()
    if status:
        text += " (HTTP %s" % status
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None) or {}
        for header in ("x-ms-request-id", "x-ms-correlation-request-id"):
            if headers.get(header):
                text += ", %s: %s" % (header, headers[header])
        text += ")"
    return text


def error_code(exc):
    return getattr(getattr(exc, "error", None), "code", None)


def as_rest(model):
    """An SDK model as ARM's REST JSON (camelCase, nested ``properties``), whichever generator built the SDK.

    TypeSpec-generated SDKs (azure-mgmt-compute >= 38, azure-mgmt-resource >= 25) are mappings of the wire JSON;
    older AutoRest/msrest SDKs (the lower end of requirements.txt, and what azure.azcollection pins) flatten
    ``properties`` into snake_case attributes, so they are serialized back to the wire form.
    """
    if model is None or isinstance(model, dict):
        return model
    if hasattr(model, "keys"):
        return model.as_dict()
    return model.serialize(keep_readonly=True)


class AzureModule(object):
    """An AnsibleModule with the auth options, a lazily built AzureConnection and Azure-aware failures."""

    def __init__(self, argument_spec, clients=("compute",), **kwargs):
        """clients: the SDK clients (keys of SDK_CLIENTS) the module uses; a missing one fails before any work."""
        spec = dict(AZURE_AUTH_ARGSPEC)
        spec.update(argument_spec)
        self.module = AnsibleModule(argument_spec=spec, **kwargs)
        self.params = self.module.params
        self.check_mode = self.module.check_mode
        if not HAS_AZURE:
            self.module.fail_json(msg=missing_required_lib("azure-identity and azure-core"),
                                  exception=AZURE_IMPORT_ERROR)
        for name in clients:
            try:
                importlib.import_module(SDK_CLIENTS[name][0])
            except ImportError:
                self.module.fail_json(msg=missing_required_lib(SDK_CLIENTS[name][2]),
                                      exception=traceback.format_exc())
        self._connection = None

    @property
    def connection(self):
        if self._connection is None:
            try:
                self._connection = AzureConnection(self.params)
            except AzureAuthError as exc:
                self.fail("%s" % exc)
        return self._connection

    def fail(self, msg, **result):
        self.module.fail_json(msg=msg, **result)

    def fail_azure(self, exc, operation, resource_id=None, **result):
        self.module.fail_json(msg=describe_azure_error(exc, operation, resource_id), error_code=error_code(exc),
                              **result)

    def warn(self, msg):
        self.module.warn(msg)

    def exit(self, **result):
        self.module.exit_json(**result)


def wait_for_poller(poller, timeout):
    """Follow an LRO until done or until timeout seconds; return True when it finished in time."""
    if timeout > 0:
        poller.wait(timeout)
    return poller.done()


# ARM answers these while another operation holds the resource (Azure serializes operations on one VM).
IN_PROGRESS_CODES = ("conflict", "operationnotallowed", "retryableerror", "anotheroperationinprogress")


def is_operation_in_progress(exc):
    return getattr(exc, "status_code", None) == 409 and (error_code(exc) or "conflict").lower() in IN_PROGRESS_CODES


def submit_with_retry(begin, deadline, first_delay):
    """Start an LRO, retrying a 409 'another operation in progress' with exponential backoff until deadline."""
    delay = max(first_delay, 0.1)
    while True:
        try:
            return begin()
        except HttpResponseError as exc:
            if not is_operation_in_progress(exc) or time.time() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 60)


def poll_until(fetch, is_done, timeout, interval):
    """Call fetch() every interval seconds until is_done(value) or timeout; return (value, finished_in_time)."""
    deadline = time.time() + timeout
    while True:
        value = fetch()
        if is_done(value):
            return value, True
        if time.time() + interval > deadline:
            return value, False
        time.sleep(interval)


def resource_id(subscription_id, resource_group, *path):
    """The ARM id of a Microsoft.Compute resource, for messages: resource_id(sub, rg, 'virtualMachines', vm)."""
    return "/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Compute/%s" % (
        subscription_id, resource_group, "/".join(path))
