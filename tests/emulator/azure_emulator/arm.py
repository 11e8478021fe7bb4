"""Pieces shared by the ARM resource modules: the request context, routing, LRO headers and lookups."""
import re
from urllib.parse import quote

from .errors import ArmError, not_found, rg_not_found


class Ctx:
    """One ARM request as the resource handlers see it (the state lock is held while they run)."""

    def __init__(self, state, now, method, path, query, body, base_url, sub):
        self.state, self.now, self.method, self.path = state, now, method, path
        self.query, self.body, self.base_url, self.sub = query, body, base_url, sub
        self.api_version = query.get("api-version", "")
        self.admitted = None  # called once ARM has accepted the request and hands it to the resource provider
        self.claims = {}  # the caller's token claims (server.py sets them)

    def expand_instance_view(self):
        return "instanceview" in self.query.get("$expand", "").lower()

    def resource_group(self, rg):
        group = self.sub.resource_groups.get(rg.lower())
        if group is None:
            raise rg_not_found(rg)
        return group

    def async_headers(self, op, with_location=False):
        """Azure-AsyncOperation (and for deletes also Location with monitor=true), as compute answers."""
        url = (f"{self.base_url}/subscriptions/{self.sub.id}/providers/Microsoft.Compute/locations/"
               f"{op.location}/operations/{op.id}")
        headers = {"Azure-AsyncOperation": f"{url}?p={self.sub.id}&api-version={self.api_version}",
                   "azure-asyncnotification": "Enabled"}
        if with_location:
            headers["Location"] = f"{url}?p={self.sub.id}&monitor=true&api-version={self.api_version}"
        return headers

    def page(self, items, build=None):
        """ARM paging: page_size items and a nextLink carrying $skiptoken. build(item), when given, makes the body
        of each item of the page only (a list of thousands of VMs would otherwise build every body for every page).

        As ARM's list operations do (the nextLink of tests/data/arm-examples/.../
        VirtualMachineScaleSetExtension_List_MaximumSet_Gen.json and VirtualMachineScaleSetVM_List_MaximumSet_Gen.json),
        the nextLink is an absolute URL that repeats the request's own query (api-version, statusOnly, $expand,
        $filter...): the SDKs GET it as it is, without adding anything.
        """
        size = max(1, int(self.state.settings["page_size"]))
        try:
            start = int(self.query.get("$skiptoken", "0"))
        except ValueError:
            raise ArmError(400, "InvalidSkipToken", "The $skiptoken is not valid.") from None
        if start < 0 or start > len(items):
            raise ArmError(400, "InvalidSkipToken", "The $skiptoken is not valid.")
        chosen = items[start:start + size]
        body = {"value": chosen if build is None else [build(item) for item in chosen]}
        if start + size < len(items):
            query = "&".join(f"{quote(k, safe='$-')}={quote(v, safe='')}"
                             for k, v in self.query.items() if k != "$skiptoken")
            body["nextLink"] = f"{self.base_url}{self.path}?{query}&$skiptoken={start + size}"
        return body


def conflict(kind, name, operation):
    return ArmError(409, "Conflict",
                    f"Operation '{operation}' is not allowed on {kind} '{name}' since another operation is in "
                    "progress. Retry after the operation completes.")


def busy(busy_until, now):
    return busy_until is None or now < busy_until


def lookup(collection, ctx, rg, name, kind):
    ctx.resource_group(rg)
    item = collection.get((rg.lower(), name.lower()))
    if item is None:
        raise not_found(kind, name, rg)
    return item


# --- api-versions ---------------------------------------------------------------------------------------------
# The versions each served resource type answers, newest first: every version the SDKs in requirements.txt send
# (azure-mgmt-compute 39.0.0: 2026-04-01; azure-mgmt-resource 26.0.0: 2025-04-01; azure-mgmt-resource-features
# 1.0.0: 2021-07-01), those of azure.azcollection 3.21.0's pins (azure-mgmt-compute 33.0.0: 2024-07-01;
# azure-mgmt-resource 23.2.0: 2022-09-01 and features 2021-07-01), every version folder of those multi-API packages
# that has the operation (so an older SDK or a client pinning api_version keeps working), the recordings'
# (2020-06-01, 2023-09-01) and the REST spec folders in tests/data/arm-examples (Compute 2025-04-01, Features
# 2025-03-01). Anything else is refused as ARM refuses it (see check_api_version).
COMPUTE_API_VERSIONS = (
    "2026-04-01", "2025-04-01", "2024-11-01", "2024-07-01", "2024-03-01", "2023-09-01", "2023-07-01", "2023-03-01",
    "2022-11-01", "2022-08-01", "2022-03-01", "2021-11-01", "2021-07-01", "2021-04-01", "2021-03-01", "2020-12-01",
    "2020-06-01", "2019-12-01", "2019-07-01", "2019-03-01", "2018-10-01", "2018-06-01", "2018-04-01", "2017-12-01",
    "2017-03-30", "2016-04-30-preview", "2016-03-30", "2015-06-15")
RESOURCES_API_VERSIONS = (
    # 2025-03-01, 2024-11-01, 2024-07-01: folders of azure-mgmt-resource 24.0.0, the Azure CLI 2.91's (issue 25:
    # `az provider register/show` send 2024-11-01).
    "2025-04-01", "2025-03-01", "2024-11-01", "2024-07-01", "2022-09-01", "2021-04-01", "2021-01-01", "2020-10-01",
    "2020-06-01", "2019-10-01", "2019-08-01", "2019-07-01", "2019-05-10", "2019-05-01", "2019-03-01", "2018-05-01",
    "2018-02-01", "2017-05-10", "2016-09-01", "2016-02-01", "2015-11-01",
    # azure.azcollection 3.21.0's azure_rm_resource reads the provider document with 2015-01-01 to find a type's
    # api-versions (the witness, benchmarks/witness.py); ARM serves it.
    "2015-01-01")
# Subscriptions (Microsoft.Resources/subscriptions: GET /subscriptions, /subscriptions/{id}), the version folders of
# azure-mgmt-resource 24.0.0's subscriptions package; `az login` lists the principal's subscriptions with 2022-12-01.
SUBSCRIPTIONS_API_VERSIONS = ("2022-12-01", "2021-01-01", "2019-11-01", "2019-06-01", "2018-06-01", "2016-06-01")
# Tags at a scope (Microsoft.Resources/tags) exist from 2019-10-01 on.
TAGS_API_VERSIONS = tuple(v for v in RESOURCES_API_VERSIONS if v >= "2019-10-01")
FEATURES_API_VERSIONS = ("2025-03-01", "2021-07-01", "2015-12-01")
API_VERSIONS = {
    "Microsoft.Compute": COMPUTE_API_VERSIONS,
    "Microsoft.Resources": RESOURCES_API_VERSIONS,
    "Microsoft.Resources/tags": TAGS_API_VERSIONS,
    "Microsoft.Resources/subscriptions": SUBSCRIPTIONS_API_VERSIONS,
    "Microsoft.Features": FEATURES_API_VERSIONS,
}
# Resource types a provider document lists (GET /subscriptions/{s}/providers/{namespace}), with their versions.
PROVIDER_RESOURCE_TYPES = {
    "microsoft.compute": ["virtualMachines", "virtualMachines/extensions", "virtualMachineScaleSets",
                          "virtualMachineScaleSets/extensions", "virtualMachineScaleSets/virtualMachines",
                          "virtualMachineScaleSets/virtualMachines/extensions", "locations",
                          "locations/operations", "locations/publishers", "locations/virtualMachines"],
    "microsoft.features": ["features", "providers", "featureProviders"],
    "microsoft.resources": ["resourceGroups", "providers", "subscriptions", "tags"],
}
_API_VERSION_SHAPE = re.compile(r"^\d{4}-\d{2}-\d{2}(-(preview|beta|alpha|privatepreview))?$", re.IGNORECASE)


def api_versions(namespace, resource_type=""):
    """A type's own versions (e.g. Microsoft.Resources/tags) if it has an entry, else its namespace's."""
    for wanted in (f"{namespace}/{resource_type}".lower(), namespace.lower()):
        for key, versions in API_VERSIONS.items():
            if key.lower() == wanted:
                return versions
    return ()


def check_api_version(ctx, namespace, resource_type, location):
    """Refuse an api-version the resource type does not have, with ARM's errors:

    - a string that is no api-version at all, or any unknown version of ARM's own Microsoft.Resources types:
      400 InvalidApiVersionParameter "The api-version '...' is invalid. The supported versions are '...'.";
    - a well-formed version a resource provider's type does not have: 400 NoRegisteredProviderFound "No
      registered resource provider found for location '...' and API version '...' for type '...'. The supported
      api-versions are '...'. The supported locations are '...'."
    """
    version = ctx.api_version
    versions = api_versions(namespace, resource_type)
    if version in versions:
        return
    if not _API_VERSION_SHAPE.match(version) or namespace.lower() == "microsoft.resources":
        raise ArmError(400, "InvalidApiVersionParameter",
                       f"The api-version '{version}' is invalid. The supported versions are '{','.join(versions)}'.")
    locations = sorted({g["location"] for g in ctx.sub.resource_groups.values()} | {location})
    raise ArmError(400, "NoRegisteredProviderFound",
                   f"No registered resource provider found for location '{location}' and API version '{version}' "
                   f"for type '{resource_type}'. The supported api-versions are '{', '.join(versions)}'. "
                   f"The supported locations are '{', '.join(locations)}'.")


class Router:
    """(method, path regex) -> handler(ctx, **groups); ARM paths are case-insensitive.

    Each route names its resource type ("Microsoft.Compute/virtualMachines/extensions"); the request's
    api-version is checked against that type's versions before the handler runs.
    """

    def __init__(self):
        self.routes = []

    def add(self, method, pattern, func, rtype=None):
        if rtype is None:  # routes added without a type: the provider namespace named in the path, else ARM's own
            found = re.findall(r"providers/(Microsoft\\?\.[A-Za-z]+)", pattern)
            rtype = found[-1].replace("\\", "") if found else "Microsoft.Resources"
        namespace, dummy, resource_type = rtype.partition("/")

        def checked(ctx, **groups):
            location = groups.get("location")
            if location is None and groups.get("rg") and ctx.sub is not None:
                group = ctx.sub.resource_groups.get(groups["rg"].lower())
                location = group["location"] if group else None
            check_api_version(ctx, namespace, resource_type, (location or "westeurope").lower())
            if ctx.admitted is not None:  # ARM forwards it: the resource provider's throttling (server.py)
                ctx.admitted()
            return func(ctx, **groups)

        self.routes.append((method, re.compile("^" + pattern + "$", re.IGNORECASE), checked))

    def resolve(self, method, path):
        allowed = False
        for route_method, regex, func in self.routes:
            match = regex.match(path)
            if match:
                if route_method == method:
                    return func, match.groupdict()
                allowed = True
        if allowed:
            raise ArmError(405, "MethodNotAllowed", f"The requested method '{method}' is not allowed for '{path}'.")
        raise ArmError(404, "InvalidResourceType", f"The resource type could not be found for path '{path}'.")


SEG = r"[^/]+"
SUB = rf"/subscriptions/(?P<sub>{SEG})"
RG = rf"{SUB}/resourceGroups/(?P<rg>{SEG})"
COMPUTE = rf"{RG}/providers/Microsoft\.Compute"
