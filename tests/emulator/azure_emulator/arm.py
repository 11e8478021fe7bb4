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

    def page(self, items):
        """ARM paging: page_size items and a nextLink carrying $skiptoken.

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
        body = {"value": items[start:start + size]}
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


class Router:
    """(method, path regex) -> handler(ctx, **groups); ARM paths are case-insensitive."""

    def __init__(self):
        self.routes = []

    def add(self, method, pattern, func):
        self.routes.append((method, re.compile("^" + pattern + "$", re.IGNORECASE), func))

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
