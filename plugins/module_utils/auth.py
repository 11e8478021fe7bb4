# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Who we are and which cloud we talk to: the auth options (a drop-in for azure.azcollection's and AWX's Azure
credential), their environment variables, cloud endpoints (public, sovereign, or a custom ARM metadata URL as on
Azure Stack Hub and the emulator), and the credential sources in azure.azcollection's order."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import configparser
import json
import os
import shutil
import threading

from ansible.module_utils.ansible_release import __version__ as ANSIBLE_VERSION
from ansible.module_utils.basic import env_fallback
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.azure_vm.extensions.plugins.module_utils.errors import AzureAuthError, AzureError

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


def validate_auth_options(options, where="auth options"):
    """The auth options as AnsibleModule would take them, for callers without a module (the inventory plugin, the
    event source): ansible-core's own argument-spec validation, with the environment fallbacks and defaults.
    options: the options given (unknown keys are ignored). Raises AzureAuthError naming the option."""
    given = dict((key, value) for key, value in options.items() if key in AZURE_AUTH_ARGSPEC and value is not None)
    result = ArgumentSpecValidator(AZURE_AUTH_ARGSPEC).validate(given)
    if result.error_messages:
        raise AzureAuthError("%s: %s" % (where, "; ".join(result.error_messages)))
    return result.validated_parameters


class Cloud(object):
    """The endpoints of one cloud: ARM, the Entra ID authority, the token audience; custom for Azure Stack Hub-like
    clouds read from their ARM metadata."""

    def __init__(self, arm_endpoint, authority, audience, custom):
        self.arm_endpoint = arm_endpoint
        self.authority = authority
        self.audience = audience
        self.custom = custom

    @property
    def scope(self):
        return self.audience.rstrip("/") + "/.default"


def resolve_cloud(cloud_environment, ca_bundle=None):
    """The Cloud of a cloud name or of an ARM endpoint URL."""
    name = CLOUD_ALIASES.get(cloud_environment, cloud_environment)
    if name in KNOWN_CLOUDS:
        return Cloud(*(KNOWN_CLOUDS[name] + (False,)))
    if not str(cloud_environment).startswith("https://"):
        raise AzureAuthError("cloud_environment must be one of %s or an https:// URL of an ARM endpoint, got %r"
                             % (", ".join(sorted(KNOWN_CLOUDS)), cloud_environment))
    metadata = fetch_cloud_metadata(cloud_environment, ca_bundle)
    auth = metadata.get("authentication") or {}
    if not auth.get("loginEndpoint") or not auth.get("audiences"):
        raise AzureAuthError("the ARM metadata at %s has no authentication.loginEndpoint/audiences" % cloud_environment)
    arm = metadata.get("resourceManager") or cloud_environment
    return Cloud(arm.rstrip("/") + "/", auth["loginEndpoint"], auth["audiences"][0], True)


def fetch_cloud_metadata(arm_url, ca_bundle=None):
    """Read {arm}/metadata/endpoints the way Azure Stack Hub clients do: newer list form, then the older object."""
    from azure.core import PipelineClient  # pylint: disable=import-outside-toplevel  # only custom clouds need it
    from azure.core.rest import HttpRequest  # pylint: disable=import-outside-toplevel

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


def cli_default_subscription():
    """The Azure CLI's default subscription, read from its profile as `az account show` reads it.

    No subprocess (ansible-core 2.21's sanity forbids subprocess.check_output in module_utils). The CLI keeps its
    accounts in $AZURE_CONFIG_DIR (default ~/.azure)/azureProfile.json, written as UTF-8 with a BOM; the
    subscription `az account set` chose has "isDefault": true (azure-cli: azure/cli/core/_session.py, _profile.py).
    """
    config_dir = os.environ.get("AZURE_CONFIG_DIR") or os.path.expanduser(os.path.join("~", ".azure"))
    path = os.path.join(config_dir, "azureProfile.json")
    hint = "run `az login`, or give subscription_id (option or AZURE_SUBSCRIPTION_ID)"
    try:
        with open(path, "rb") as handle:
            profile = json.loads(handle.read().decode("utf-8-sig"))
    except (IOError, OSError) as exc:
        if not os.path.exists(path):
            raise AzureAuthError("auth_source=cli: no subscription_id given and the Azure CLI profile %s does not "
                                 "exist: %s" % (path, hint))
        raise AzureAuthError("auth_source=cli: no subscription_id given and the Azure CLI profile %s cannot be "
                             "read (%s): %s" % (path, exc, hint))
    except ValueError as exc:
        raise AzureAuthError("auth_source=cli: no subscription_id given and the Azure CLI profile %s cannot be "
                             "read (%s): %s" % (path, exc, hint))
    subscriptions = profile.get("subscriptions") if isinstance(profile, dict) else None
    default = [sub for sub in (subscriptions if isinstance(subscriptions, list) else [])
               if isinstance(sub, dict) and sub.get("isDefault") is True]
    if not default or not default[0].get("id"):
        raise AzureAuthError("auth_source=cli: no subscription_id given and the Azure CLI profile %s has no "
                             "default subscription (isDefault): run `az account set --subscription ID`, or give "
                             "subscription_id (option or AZURE_SUBSCRIPTION_ID)" % path)
    return default[0]["id"]


def detect_source(options, skipped=None):
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


def _no_credential(skipped, cli_reason):
    """The auth_source=auto failure: every source tried, in order, and why it did not apply."""
    return AzureAuthError("no Azure credential found. auth_source=auto tried, in order: %s; cli: %s. Give "
                          "client_id, secret (or x509_certificate_path) and tenant as options or AZURE_* "
                          "variables, or set auth_source explicitly." % ("; ".join(skipped), cli_reason))


class CredentialBuilder(object):
    """The credential and subscription of one set of auth options, from the source they select."""

    def __init__(self, params, cloud):
        self.params = params
        self.cloud = cloud
        self.ca_bundle = params.get("ca_bundle")
        # Azure Stack Hub and other custom clouds have no instance discovery endpoint.
        self.disable_instance_discovery = cloud.custom or bool(params.get("disable_instance_discovery"))

    def transport_kwargs(self):
        return {"connection_verify": self.ca_bundle} if self.ca_bundle else {}

    def _identity_kwargs(self):
        kwargs = self.transport_kwargs()
        kwargs["authority"] = self.cloud.authority
        if self.disable_instance_discovery:
            kwargs["disable_instance_discovery"] = True
        return kwargs

    def build(self):
        """(credential, subscription_id, source); raises AzureAuthError when the options cannot work."""
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
            source = detect_source(options, skipped)
            if source == "cli" and (options["client_id"] or os.environ.get("AZURE_CLIENT_ID")):
                # A half-given service principal is a mistake, not a request for the CLI login: say so.
                raise _no_credential(skipped, "not tried, because a client_id is set for a service principal")
            if source == "cli" and not shutil.which("az"):
                raise _no_credential(skipped, "the Azure CLI (az) is not on PATH")
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
            kwargs = self.transport_kwargs()
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
                    raise _no_credential(skipped, str(exc).replace("auth_source=cli: ", ""))
                raise
        raise AzureAuthError("auth_source must be one of %s, got %r" % (", ".join(AUTH_SOURCES), source))

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

    @staticmethod
    def _subscription(options, allow_cli=False):
        subscription = options.get("subscription_id") or os.environ.get("AZURE_SUBSCRIPTION_ID")
        if subscription:
            return subscription
        if allow_cli:
            return cli_default_subscription()
        raise AzureAuthError("subscription_id is required (option subscription_id or AZURE_SUBSCRIPTION_ID)")


# Sources whose credential keeps tokens in this process's memory (MSAL's cache), so that a token fetched ahead of
# time serves the SDK client's first request. The CLI runs `az` for every token: nothing to gain there.
CACHING_SOURCES = ("options", "env", "credential_file", "workload_identity", "msi")


def prefetch_token(credential, scope, source):
    """Ask for the ARM token in a background thread, so that its round trips overlap the SDK client's import
    (the larger part of a task's cost). Returns the thread to join before the first request, or None. A failure
    is left for the SDK client's own request to raise again, with its message."""
    if source not in CACHING_SOURCES:
        return None

    def fetch():
        try:
            credential.get_token(scope)
        except Exception:  # pylint: disable=broad-except  # the client's own get_token raises it again
            pass

    thread = threading.Thread(target=fetch, name="token-prefetch")
    thread.daemon = True
    thread.start()
    return thread
