# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):

    # The auth options shared by every Azure module (plugins/module_utils/auth.py).
    DOCUMENTATION = r"""
options:
  auth_source:
    description:
      - Where the credentials come from.
      - V(auto) uses, in order, C(client_id) with C(secret) or C(x509_certificate_path) given as options;
        the C(AZURE_CLIENT_ID)/C(AZURE_SECRET)/C(AZURE_TENANT) environment variables (what AWX's Azure
        credential injects); the C(~/.azure/credentials) file; workload identity
        (C(AZURE_FEDERATED_TOKEN_FILE)); managed identity (C(IDENTITY_ENDPOINT) or C(MSI_ENDPOINT)); the Azure CLI login.
      - V(options) uses only the module options, V(env) only the environment variables,
        V(credential_file) the C([profile]) section of C(~/.azure/credentials) (or C(AZURE_CREDENTIAL_FILE)),
        V(msi) the managed identity, V(workload_identity) the federated token file, V(cli) the C(az login) session.
      - Can also be set with the E(ANSIBLE_AZURE_AUTH_SOURCE) environment variable.
    type: str
    default: auto
    choices: [auto, credential_file, env, options, msi, cli, workload_identity]
  profile:
    description:
      - Section of the credential file to use with O(auth_source=credential_file). Defaults to C(default).
      - Can also be set with E(AZURE_PROFILE).
    type: str
  subscription_id:
    description:
      - The subscription to work in. Can also be set with E(AZURE_SUBSCRIPTION_ID).
    type: str
  client_id:
    description:
      - The service principal's application (client) id, or the user-assigned managed identity's client id
        with O(auth_source=msi). E(AZURE_CLIENT_ID) is used with O(auth_source=env).
    type: str
  secret:
    description:
      - The service principal's client secret. E(AZURE_SECRET) is used with O(auth_source=env).
      - Never logged or returned.
    type: str
  tenant:
    description:
      - The Entra ID tenant id. E(AZURE_TENANT) is used with O(auth_source=env).
    type: str
  x509_certificate_path:
    description:
      - Path to a PEM (or PKCS12) certificate with its private key, for certificate-based service principals.
        E(AZURE_CERT_PATH) is used with O(auth_source=env).
    type: path
  cert_password:
    description:
      - Password of the certificate file, if it has one. Never logged.
    type: str
  cloud_environment:
    description:
      - V(AzureCloud), V(AzureChinaCloud), V(AzureUSGovernment), or the https URL of an ARM endpoint
        (Azure Stack Hub, or the test emulator). For a URL, the endpoints are read from C({url}/metadata/endpoints);
        its login endpoint is the authority, its first audience the token scope, and instance discovery is off.
      - Can also be set with E(AZURE_CLOUD_ENVIRONMENT).
    type: str
    default: AzureCloud
  ca_bundle:
    description:
      - A PEM file of certificate authorities to trust for Azure and Entra ID endpoints (a TLS-inspecting proxy,
        Azure Stack Hub). E(AZURE_CA_BUNDLE) and E(REQUESTS_CA_BUNDLE) are honoured.
    type: path
  disable_instance_discovery:
    description:
      - Skip Entra ID instance discovery (always off for a custom cloud URL).
    type: bool
    default: false
  polling_interval:
    description:
      - Seconds between polls of a long-running Azure operation, used by every wait of this module.
      - Can also be set with E(AZURE_POLLING_INTERVAL).
    type: float
    default: 15
requirements:
  - python >= 3.9
  - azure-identity
  - azure-mgmt-compute
notes:
  - Options and environment variables are those of azure.azcollection, so O(auth_source), C(AZURE_*) variables
    and AWX/AAP Azure credentials work unchanged.
  - Set the options once for every module of this collection with
    C(module_defaults) and the action group C(group/azure_vm.extensions.azure).
"""
