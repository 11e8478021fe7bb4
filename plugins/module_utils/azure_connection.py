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

try:
    from urllib.parse import urlencode, urlparse
except ImportError:  # Python 2 (ansible-test sanity compiles every file for it)
    from urllib import urlencode  # type: ignore
    from urlparse import urlparse  # type: ignore

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib
from ansible.module_utils.ansible_release import __version__ as ANSIBLE_VERSION
from ansible_collections.azure_vm.extensions.plugins.module_utils.scheduler import Scheduler

try:
    from azure.core import PipelineClient
    from azure.core.exceptions import AzureError, HttpResponseError
    from azure.core.pipeline.policies import SansIOHTTPPolicy
    from azure.core.rest import HttpRequest

    # azure.identity (and the SDK clients) are imported when first needed: a task pays for what it uses, and a
    # missing package is found with importlib.util.find_spec, without importing it (see AzureModule).
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


class AzureOperationError(Exception):
    """The one exception module_utils raise: what went wrong, in words a user can act on.

    msg: the message (safe to show; never holds a secret). result: extra fields for the task result (what was
    done so far, the extension, instance views...). error_code, status_code: ARM's error code and HTTP status when
    Azure answered. request_id, correlation_id: x-ms-request-id and x-ms-correlation-request-id, which Azure
    support asks for. Only the module wrapper (AzureModule.run) turns it into fail_json; the fleet catches it per VM.
    """

    def __init__(self, msg, error_code=None, status_code=None, request_id=None, correlation_id=None, **result):
        super(AzureOperationError, self).__init__(msg)
        self.msg = msg
        self.error_code = error_code
        self.status_code = status_code
        self.request_id = request_id
        self.correlation_id = correlation_id
        self.result = result

    def fields(self):
        """The result fields of a failed task: result plus the ARM ids that are known."""
        fields = dict(self.result)
        for key in ("error_code", "status_code", "request_id", "correlation_id"):
            if getattr(self, key) is not None:
                fields[key] = getattr(self, key)
        return fields


class AzureAuthError(AzureOperationError):
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
                body = http.text()
            except Exception:  # pylint: disable=broad-except  # a body we cannot read names no bucket
                body = None
        self.scheduler.complete(buckets, keys, http.status_code, http.headers, body)

    def on_exception(self, request):
        found = request.context.pop(self.CONTEXT_KEY, None)
        if found:
            self.scheduler.complete(found[1], found[0], 0, {})

    @property
    def throttled(self):
        return self.scheduler.throttled

    @property
    def lowest(self):
        return self.scheduler.snapshot()["lowest_remaining"]


class TokenPrefetch(object):
    """A credential whose ARM token is requested in a background thread as soon as the connection exists, so the
    token's round trips overlap the import of the SDK client (the larger part of a task's cost). The token stays in
    this process's memory only (azure-identity's in-memory cache); nothing is written anywhere. Every other call
    goes to the wrapped credential."""

    def __init__(self, credential, scope):
        self.credential = credential
        self.scope = scope
        self._result = {}
        self._thread = threading.Thread(target=self._fetch, name="token-prefetch")
        self._thread.daemon = True
        self._thread.start()

    def _fetch(self):
        try:
            self._result["token"] = self.credential.get_token(self.scope)
        except Exception as exc:  # pylint: disable=broad-except  # the caller's own get_token raises it again
            self._result["error"] = exc

    def get_token(self, *scopes, **kwargs):
        if scopes == (self.scope,) and not kwargs:
            self._thread.join()
            token = self._result.get("token")
            if token is not None and token.expires_on > time.time() + 300:
                return token
        return self.credential.get_token(*scopes, **kwargs)

    def close(self):
        close = getattr(self.credential, "close", None)
        if close:
            close()

    def __getattr__(self, name):
        if name == "get_token_info":
            # azure-core prefers get_token_info when a credential has it; get_token is where the prefetch is.
            raise AttributeError(name)
        return getattr(self.credential, name)


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
        credential, subscription, source = self._credential_for_source()
        return TokenPrefetch(credential, self.audience.rstrip("/") + "/.default"), subscription, source

    def _credential_for_source(self):
        from azure.identity import (  # pylint: disable=import-outside-toplevel  # lazy: ~0.3 s per task
            AzureCliCredential,
            ManagedIdentityCredential,
            WorkloadIdentityCredential,
        )

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
        from azure.identity import CertificateCredential, ClientSecretCredential  # pylint: disable=import-outside-toplevel

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
        """The Azure CLI's default subscription, read from its profile as `az account show` reads it.

        No subprocess (ansible-core 2.21's sanity forbids subprocess.check_output in module_utils). The CLI keeps its
        accounts in $AZURE_CONFIG_DIR (default ~/.azure)/azureProfile.json, written as UTF-8 with a BOM; the
        subscription `az account set` chose has "isDefault": true (azure-cli: azure/cli/core/_session.py, _profile.py).
        """
        config_dir = os.environ.get("AZURE_CONFIG_DIR") or os.path.expanduser(os.path.join("~", ".azure"))
        path = os.path.join(config_dir, "azureProfile.json")
        hint = "run `az login`, or give subscription_id (option or AZURE_SUBSCRIPTION_ID)"
        try:
            with open(path, encoding="utf-8-sig") as handle:
                profile = json.load(handle)
        except FileNotFoundError:
            raise AzureAuthError("auth_source=cli: no subscription_id given and the Azure CLI profile %s does not "
                                 "exist: %s" % (path, hint))
        except (OSError, ValueError) as exc:
            raise AzureAuthError("auth_source=cli: no subscription_id given and the Azure CLI profile %s cannot be "
                                 "read (%s): %s" % (path, exc, hint))
        subscriptions = profile.get("subscriptions") if isinstance(profile, dict) else None
        default = [sub for sub in subscriptions or [] if isinstance(sub, dict) and sub.get("isDefault") is True]
        if not default or not default[0].get("id"):
            raise AzureAuthError("auth_source=cli: no subscription_id given and the Azure CLI profile %s has no "
                                 "default subscription (isDefault): run `az account set --subscription ID`, or give "
                                 "subscription_id (option or AZURE_SUBSCRIPTION_ID)" % path)
        return default[0]["id"]

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

    def list_pages(self, name, path, query):
        """Each page (a list of REST JSON dicts) of the ARM list at path, nextLink after nextLink, sent through the
        SDK client `name`'s own pipeline (credential, retries with Retry-After, throttle pacing, user agent) but
        without building SDK models: a status sweep over thousands of VMs then costs a JSON parse per page, where
        the SDK's models took about 70 ms of CPU per page of 50 VMs. query carries the api-version."""
        client = self.client(name)
        # send_request is public in TypeSpec-generated SDKs; the older generators name it _send_request.
        send = getattr(client, "send_request", None) or getattr(client, "_send_request")
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


def _response_headers(exc):
    response = getattr(exc, "response", None)
    return getattr(response, "headers", None) or {}


def error_code(exc):
    """ARM's error code of an SDK error (or of an AzureOperationError), or None."""
    if isinstance(exc, AzureOperationError):
        return exc.error_code
    return getattr(getattr(exc, "error", None), "code", None)


def error_message(exc):
    """ARM's error message of an SDK error, without the SDK's decoration."""
    error = getattr(exc, "error", None)
    return (getattr(error, "message", None) or getattr(exc, "message", None) or str(exc)).strip()


def describe_azure_error(exc, operation, resource_id=None):
    """One line: what we did, on what, ARM's error code and message, and the ids support asks for."""
    parts = [operation]
    if resource_id:
        parts.append(resource_id)
    text = " ".join(parts) + " failed"
    code = error_code(exc)
    status = getattr(exc, "status_code", None)
    text += ": " + ("%s: " % code if code else "") + error_message(exc)
    if status:
        text += " (HTTP %s" % status
        headers = _response_headers(exc)
        for header in ("x-ms-request-id", "x-ms-correlation-request-id"):
            if headers.get(header):
                text += ", %s: %s" % (header, headers[header])
        text += ")"
    return text


def azure_error(exc, operation, resource_id=None, msg=None, **result):
    """The one conversion of an SDK HttpResponseError into AzureOperationError (message, code, status, ids).

    msg replaces the generated message (for callers that know better words, such as not_found_error)."""
    headers = _response_headers(exc)
    return AzureOperationError(msg or describe_azure_error(exc, operation, resource_id), error_code=error_code(exc),
                               status_code=getattr(exc, "status_code", None),
                               request_id=headers.get("x-ms-request-id"),
                               correlation_id=headers.get("x-ms-correlation-request-id"), **result)


class arm_errors(object):  # pylint: disable=invalid-name
    """Context manager: an HttpResponseError inside becomes AzureOperationError via azure_error().

        with arm_errors("reading", vm_id):
            vm = compute.virtual_machines.get(...)
    """

    def __init__(self, operation, resource_id=None, **result):
        self.operation = operation
        self.resource_id = resource_id
        self.result = result

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is not None and isinstance(exc, HttpResponseError) and not isinstance(exc, AzureOperationError):
            raise azure_error(exc, self.operation, self.resource_id, **self.result)
        return False


# ---- not found ---------------------------------------------------------------------------------------------------
# ARM's 404 codes say which level is missing: the subscription, the resource group, the parent of a child resource
# (a VM or scale set, when its extension was asked for), or the resource itself.
KIND_NAMES = {"vm": "virtual machine", "vmss": "virtual machine scale set", "extension": "extension",
              "instance": "scale-set instance", "feature": "preview feature", "provider": "resource provider"}


def not_found_error(exc, subscription_id, resource_group=None, resource=None, parent=None, **result):
    """An AzureOperationError naming exactly what is missing, with ARM's error code.

    resource: (kind, name) of what was asked for, kind a key of KIND_NAMES; parent: (kind, name) of the resource
    it lives in (the VM of an extension). ARM's code decides which one is reported missing:
    SubscriptionNotFound -> the subscription, ResourceGroupNotFound -> the resource group,
    ParentResourceNotFound -> the parent, anything else (ResourceNotFound, NotFound) -> the resource itself.
    """
    code = error_code(exc) or "NotFound"
    lowered = code.lower()
    if lowered == "subscriptionnotfound":
        what = "subscription %s not found (check subscription_id and the credentials' access)" % subscription_id
    elif lowered == "resourcegroupnotfound":
        what = "resource group %r not found in subscription %s" % (resource_group, subscription_id)
    elif lowered == "parentresourcenotfound" and parent:
        what = "%s %r not found in resource group %r" % (KIND_NAMES.get(parent[0], parent[0]), parent[1],
                                                         resource_group)
    elif resource:
        what = "%s %r not found" % (KIND_NAMES.get(resource[0], resource[0]), resource[1])
        if parent:
            what += " on %s %r" % (KIND_NAMES.get(parent[0], parent[0]), parent[1])
        if resource_group:
            what += " in resource group %r" % resource_group
    else:
        what = "not found"
    msg = "%s (%s: %s)" % (what, code, error_message(exc))
    return azure_error(exc, "reading", msg=msg, **result)


def is_not_found(exc):
    return getattr(exc, "status_code", None) == 404


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


def _importable(module_name):
    """True when module_name can be imported, found without importing it (the SDKs take a second to import)."""
    import importlib.util  # pylint: disable=import-outside-toplevel

    try:
        return importlib.util.find_spec(module_name) is not None
    except (ImportError, ValueError):
        return False


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
        for name in ("azure.identity",) + tuple(SDK_CLIENTS[client][0] for client in clients):
            if not _importable(name):
                package = "azure-identity" if name == "azure.identity" else \
                    [pkg for mod, dummy, pkg in SDK_CLIENTS.values() if mod == name][0]
                self.module.fail_json(msg=missing_required_lib(package))
        self._connection = None
        self._running = False
        self.progress_log = []

    @property
    def connection(self):
        """The AzureConnection, built on first use; raises AzureAuthError when the credentials cannot work."""
        if self._connection is None:
            try:
                self._connection = AzureConnection(self.params)
            except AzureAuthError as exc:
                if self._running:
                    raise
                self.fail(exc.msg)  # a module not yet wrapped in run()
        return self._connection

    @property
    def verbosity(self):
        return getattr(self.module, "_verbosity", 0) or 0

    def progress(self, msg):
        """The waiter's progress hook: collected, and returned as `progress` at -v (and later verbosities)."""
        self.progress_log.append(msg)
        self.module.debug(msg)

    def fail(self, msg, **result):
        """For the module itself (argument checks); module_utils raise AzureOperationError instead."""
        self.module.fail_json(msg=msg, **result)

    def warn(self, msg):
        self.module.warn(msg)

    def exit(self, **result):
        if self.progress_log and self.verbosity >= 1:
            result.setdefault("progress", list(self.progress_log))
        self.module.exit_json(**result)

    def run(self, work):
        """The module wrapper: result = work(self), then exit_json; an AzureOperationError (or an SDK error that
        escaped) becomes fail_json with its message, result fields, ARM code and ids, and the traceback (-vvv)."""
        self._running = True
        try:
            result = work(self)
        except AzureOperationError as exc:
            self._fail_exception(exc, exc.msg, exc.fields())
        except HttpResponseError as exc:
            converted = azure_error(exc, "calling Azure")
            self._fail_exception(exc, converted.msg, converted.fields())
        else:
            self.exit(**result)

    def _fail_exception(self, exc, msg, fields):
        """fail_json with the traceback: ansible-core 2.19+ takes the exception itself (shown with
        ANSIBLE_DISPLAY_TRACEBACK=error), older versions a string (shown at -vvv). At -vvv the formatted traceback
        is also returned as `traceback`, whatever the version and configuration."""
        if self.progress_log and self.verbosity >= 1:
            fields.setdefault("progress", list(self.progress_log))
        formatted = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        if self.verbosity >= 3:
            fields["traceback"] = formatted
        modern = tuple(int(part) for part in ANSIBLE_VERSION.split(".")[:2] if part.isdigit()) >= (2, 19)
        self.module.fail_json(msg=msg, exception=exc if modern else formatted, **fields)


def resource_id(subscription_id, resource_group, *path):
    """The ARM id of a Microsoft.Compute resource, for messages: resource_id(sub, rg, 'virtualMachines', vm)."""
    return "/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Compute/%s" % (
        subscription_id, resource_group, "/".join(path))


def connection_from_options(options):
    """An AzureConnection for callers without an AnsibleModule (the inventory plugin), from a dict of the auth options.

    Each option that is not given (None) is taken as AnsibleModule would take it from AZURE_AUTH_ARGSPEC: its
    environment fallback, then its default; types and choices are checked the same way. Raises AzureAuthError.
    """
    params = {}
    for key, spec in AZURE_AUTH_ARGSPEC.items():
        value = options.get(key)
        if value is None and "fallback" in spec:
            value = next((os.environ[var] for var in spec["fallback"][1] if os.environ.get(var)), None)
        if value is None:
            value = spec.get("default")
        if value is not None and spec["type"] == "float":
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise AzureAuthError("%s must be a number, got %r" % (key, value))
        elif value is not None and spec["type"] == "path":
            value = os.path.expanduser(os.path.expandvars(value))
        if value is not None and spec.get("choices") and value not in spec["choices"]:
            raise AzureAuthError("%s must be one of %s, got %r" % (key, ", ".join(spec["choices"]), value))
        params[key] = value
    return AzureConnection(params)
